"""Saliency maps for the clinician image: Grad-CAM on the last convolution, else input gradients.

Grad-CAM (Selvaraju et al., ICCV 2017): the last 4-D (convolutional) feature map, looked for among
the top-level layers and inside a nested base (keras.applications), weighted by the spatial mean of
the gradient of the pneumonia probability, ReLU, upsampled to the input size. Only feature maps at
or after the first layer with weights count (never the input or its channel copies). A model
without such a layer, or whose layers cannot be split to reproduce its output, gets |d probability
/ d input| (Simonyan et al., 2014), maximum over channels. Both are scaled to 0..1, and the method
actually used is returned with the feature map's layer.
"""
from __future__ import annotations

import numpy as np

GRAD_CAM = "grad-cam"
GRADIENT = "input-gradient"
CHUNK = 16  # inputs per forward and backward pass: bounds the activations kept for the gradient


def probability_of(output):
    """The pneumonia probability from a model output: (n, 1) sigmoid or (n, 2) softmax."""
    from .tf import tf

    output = tf.convert_to_tensor(output)
    if output.shape.rank == 2 and output.shape[-1] == 2:
        return output[:, 1]
    return tf.reshape(output, [-1])


def _is_model(layer) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "inputs")


def _spatial(layer) -> bool:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return False
    return len(shape) == 4 and shape[1] is not None and shape[1] > 1


def _feature_path(layers, learned: bool) -> tuple[list, bool]:
    """(path to the last 4-D map at or after a layer with weights, learned-so-far) within `layers`."""
    best: list = []
    for layer in layers:
        if _is_model(layer):
            inner, learned = _feature_path(layer.layers, learned)
            if inner:
                best = [layer, *inner]
            continue
        learned = learned or bool(layer.weights)
        if learned and _spatial(layer):
            best = [layer]
    return best, learned


def last_conv_layer(model) -> list:
    """The layers leading to the last learned 4-D feature map (N, H>1, W, C): [layer] for a top-level
    layer, [base, layer] inside a nested base; [] when there is none."""
    from .tf import keras

    top = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    return _feature_path(top, False)[0]


def saliency_map(model, x: np.ndarray, probability: float | None = None) -> tuple[np.ndarray, str, str | None]:
    """(map (H, W) float32 in 0..1 at the model input size, method, feature layer or None) for one input
    x (H, W, C). `probability` is the model's output for x when already computed (saves a pass)."""
    maps, method, layer = saliency_maps(model, x[None], None if probability is None else [probability])
    return maps[0], method, layer


def saliency_maps(model, batch: np.ndarray, probabilities=None, *,
                  chunk: int = CHUNK) -> tuple[list[np.ndarray], str, str | None]:
    """`saliency_map` for a batch (N, H, W, C) at once: one method and layer for the whole batch,
    one map per input. Each input's gradient is its own (inference mode: no input affects another's
    output), so a chunk of inputs shares one forward and one backward pass."""
    from .tf import tf

    batch = np.asarray(batch, dtype=np.float32)
    path = last_conv_layer(model)
    if path:
        if probabilities is None:
            probabilities = np.concatenate([probability_of(model(batch[i:i + chunk], training=False)).numpy()
                                            for i in range(0, len(batch), chunk)])
        try:
            maps = [m for i in range(0, len(batch), chunk)
                    for m in _grad_cam(model, path, tf.convert_to_tensor(batch[i:i + chunk]),
                                       np.asarray(probabilities[i:i + chunk], dtype=np.float64))]
            return maps, GRAD_CAM, "/".join(l.name for l in path)
        except Exception:  # a graph this cannot split: fall back to gradients
            pass
    maps = [m for i in range(0, len(batch), chunk)
            for m in _input_gradient(model, tf.convert_to_tensor(batch[i:i + chunk]))]
    return maps, GRADIENT, None


def _grad_cam(model, path, batch, probabilities: np.ndarray) -> list[np.ndarray]:
    """Grad-CAM for a model whose top-level layers form a chain: the layers up to the feature map
    (a sub-model; for a nested base, the base returning its inner map too), then the remaining
    top-level layers in order. The split must reproduce `probabilities`."""
    from .tf import keras, tf

    if len(path) > 2:
        raise ValueError("feature map nested more than one model deep")
    top = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    outer = path[0]
    head = top[top.index(outer) + 1:]
    with tf.GradientTape() as tape:
        if len(path) == 1:
            features = keras.Model(model.inputs, outer.output)(batch, training=False)
            tape.watch(features)
            y = features
        else:
            i = top.index(outer)
            y = keras.Model(model.inputs, top[i - 1].output)(batch, training=False) if i else batch
            features, y = keras.Model(outer.inputs, [path[1].output, outer.output])(y, training=False)
        for later in head:
            y = later(y, training=False)
        target = probability_of(y)
        total = tf.reduce_sum(target)
    grads = tape.gradient(total, features)
    if grads is None:
        raise ValueError("no gradient reaches the convolution")
    if np.max(np.abs(probabilities - target.numpy())) > 1e-4:
        raise ValueError("the top-level layers are not a chain (the split does not reproduce the output)")
    weights = tf.reduce_mean(grads, axis=(1, 2))  # (n, C)
    cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[..., None]
    cam = tf.image.resize(cam, batch.shape[1:3], method="bilinear")[..., 0].numpy()
    return [_unit(c) for c in cam]


def _input_gradient(model, batch) -> list[np.ndarray]:
    from .tf import tf

    with tf.GradientTape() as tape:
        tape.watch(batch)
        total = tf.reduce_sum(probability_of(model(batch, training=False)))
    grads = tape.gradient(total, batch)
    if grads is None:
        return [np.zeros(batch.shape[1:3], dtype=np.float32) for _ in range(batch.shape[0])]
    return [_unit(g) for g in tf.reduce_max(tf.abs(grads), axis=-1).numpy()]


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.nan_to_num(np.asarray(a, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    hi = float(a.max()) if a.size else 0.0
    return (a / hi).astype(np.float32) if hi > 0 else np.zeros_like(a, dtype=np.float32)
