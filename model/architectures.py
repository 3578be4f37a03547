"""CNN architectures: a small CPU-friendly CNN and keras.applications bases with a binary head.

`build(architecture, weights, spec)` returns `(model, base)`; `base` is the keras.applications
backbone (None for small_cnn) so that the fine-tuning schedule can freeze and unfreeze it.
A grayscale (1-channel) input to a 3-channel base is replicated to 3 channels inside the model.
"""
from __future__ import annotations

from pathlib import Path

from evidence.errors import ToolkitError

WEIGHTS = ("none", "imagenet", "<path to a weights file>")
# The ImageNet normalisation each base was trained with (see model.preprocess.NORMALISATIONS).
NORMALISATION = {"small_cnn": "unit", "vgg16": "caffe", "resnet50": "caffe", "densenet121": "torch"}
ARCHITECTURES = tuple(NORMALISATION)
_APPLICATION = {"vgg16": "VGG16", "resnet50": "ResNet50", "densenet121": "DenseNet121"}
_WEIGHT_FILES = {
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "densenet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
_WEIGHT_URLS = {
    "vgg16": "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/",
    "resnet50": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/",
    "densenet121": "https://storage.googleapis.com/tensorflow/keras-applications/densenet/",
}


class ArchitectureError(ToolkitError, ValueError):
    """An unknown architecture or unusable weights; the message names the train parameter."""


def check(architecture: str, weights) -> str:
    """Check the weights for the architecture (a name evidence.params allows); return the weights
    value normalised to 'none', 'imagenet' or the path of an existing file."""
    w = "none" if weights in (None, "none", "None", False) else str(weights)
    if w == "none":
        return w
    if architecture == "small_cnn":
        raise ArchitectureError(f"train.weights: small_cnn has no pretrained weights; got {w!r} "
                                "(allowed for small_cnn: none)")
    if w == "imagenet":
        return w
    if not Path(w).is_file():
        raise ArchitectureError(f"train.weights: {w!r} is neither 'none', 'imagenet' nor an existing weights "
                                f"file (allowed: {', '.join(WEIGHTS)})")
    return w


def normalisation_for(architecture: str, weights: str) -> str:
    """'unit' for a model trained from scratch; the base's ImageNet normalisation otherwise."""
    return "unit" if weights == "none" else NORMALISATION[architecture]


def small_cnn(input_shape, seed: int = 0):
    """Four conv blocks (32-64-128-128, BN, ReLU, max-pool while the map is >= 4 px), GAP, dropout."""
    from .tf import keras
    layers = keras.layers

    inputs = keras.Input(shape=input_shape, name="image")
    x, size = inputs, input_shape[0]
    for i, filters in enumerate((32, 64, 128, 128)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.Activation("relu", name=f"relu{i + 1}")(x)
        if size >= 8:
            x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
            size //= 2
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3, seed=seed, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="pneumonia")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def _base(architecture: str, weights: str, input_shape):
    from .tf import keras

    app = getattr(keras.applications, _APPLICATION[architecture])
    kw = dict(include_top=False, input_shape=input_shape, pooling=None)  # 4-D output: Grad-CAM reaches it
    if weights == "none":
        return app(weights=None, **kw)
    try:
        return app(weights=weights, **kw)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if weights == "imagenet":
            url = _WEIGHT_URLS[architecture] + _WEIGHT_FILES[architecture]
            raise ArchitectureError(
                f"train.weights: imagenet weights for {architecture} could not be obtained ({reason}); "
                f"without network access download {url} on another machine and set "
                f"train.weights to the path of that file") from None
        raise ArchitectureError(f"train.weights: cannot load {weights!r} into {architecture} ({reason}); "
                                f"it must be the no-top Keras weights file {_WEIGHT_FILES[architecture]}") from None


def build(architecture: str, weights, spec, seed: int = 0):
    """(model, base) for input (spec.image_size, spec.image_size, spec.channels)."""
    from .tf import keras
    layers = keras.layers

    weights = check(architecture, weights)
    input_shape = (spec.image_size, spec.image_size, spec.channels)
    if architecture == "small_cnn":
        return small_cnn(input_shape, seed=seed), None
    if spec.image_size < 32:
        raise ArchitectureError(f"train.image_size: {architecture} needs at least 32 px, got {spec.image_size}")
    base = _base(architecture, weights, input_shape[:2] + (3,))
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if spec.channels == 1:
        x = layers.Concatenate(name="gray_to_rgb")([inputs, inputs, inputs])
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3, seed=seed, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="pneumonia")(x)
    return keras.Model(inputs, outputs, name=architecture), base


def set_trainable(base, unfreeze_from) -> list[str]:
    """Unfreeze `base` from layer `unfreeze_from` (name or index; None = all); return frozen layer names."""
    if base is None:
        return []
    base.trainable = True
    names = [layer.name for layer in base.layers]
    if unfreeze_from is None:
        start = 0
    elif isinstance(unfreeze_from, int):
        if not -len(names) <= unfreeze_from < len(names):
            raise ArchitectureError(f"train.fine_tune.unfreeze_from: index {unfreeze_from} outside the "
                                    f"{len(names)} layers of {base.name}")
        start = unfreeze_from % len(names)
    elif unfreeze_from in names:
        start = names.index(unfreeze_from)
    else:
        raise ArchitectureError(f"train.fine_tune.unfreeze_from: no layer {unfreeze_from!r} in {base.name} "
                                f"(use a layer name such as {names[len(names) // 2]!r}, an index, or null)")
    frozen = []
    for layer in base.layers[:start]:
        layer.trainable = False
        frozen.append(layer.name)
    for layer in base.layers[start:]:  # BatchNorm statistics stay frozen while fine-tuning
        if layer.__class__.__name__ == "BatchNormalization":
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def freeze(base) -> list[str]:
    if base is None:
        return []
    base.trainable = False
    return [layer.name for layer in base.layers]
