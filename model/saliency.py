"""Saliency maps for the clinician image: Grad-CAM on the last convolution, else input gradients.

Grad-CAM (Selvaraju et al., ICCV 2017): the last top-level 4-D (convolutional) feature map,
weighted by the spatial mean of the gradient of the pneumonia probability, ReLU, upsampled to the
input size. A model without a reachable 4-D layer gets |d probability / d input| (Simonyan et
al., 2014), maximum over channels. Both are scaled to 0..1.
"""
from __future__ import annotations

import numpy as np

GRAD_CAM = "grad-cam"
GRADIENT = "input-gradient"


def probability_of(output):
    """The pneumonia probability from a model output: (n, 1) sigmoid or (n, 2) softmax."""
    import tensorflow as tf

    output = tf.convert_to_tensor(output)
    if output.shape.rank == 2 and output.shape[-1] == 2:
        return output[:, 1]
    return tf.reshape(output, [-1])


def last_conv_layer(model):
    """The last top-level layer with a 4-D output (N, H, W, C), or None."""
    for layer in reversed(model.layers):
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4 and shape[1] is not None and shape[1] > 1:
            return layer
    return None


def saliency_map(model, x: np.ndarray) -> tuple[np.ndarray, str]:
    """(map (H, W) float32 in 0..1 at the model input size, method) for one input x (H, W, C)."""
    import tensorflow as tf

    batch = tf.convert_to_tensor(x[None].astype(np.float32))
    layer = last_conv_layer(model)
    if layer is not None:
        try:
            return _grad_cam(model, layer, batch), GRAD_CAM
        except Exception:  # a graph this cannot split (nested bases): fall back to gradients
            pass
    return _input_gradient(model, batch), GRADIENT


def _grad_cam(model, layer, batch) -> np.ndarray:
    """Grad-CAM for a model whose top-level layers form a chain: features = layers up to `layer`
    (a sub-model), then the remaining layers applied in order on the watched features."""
    import keras
    import tensorflow as tf

    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    head = layers[layers.index(layer) + 1:]
    features = keras.Model(model.inputs, layer.output)(batch, training=False)
    with tf.GradientTape() as tape:
        tape.watch(features)
        y = features
        for later in head:
            y = later(y, training=False)
        target = probability_of(y)[0]
    grads = tape.gradient(target, features)
    if grads is None:
        raise ValueError("no gradient reaches the convolution")
    direct = float(probability_of(model(batch, training=False))[0])
    if abs(direct - float(target)) > 1e-4:
        raise ValueError("the top-level layers are not a chain (the split does not reproduce the output)")
    weights = tf.reduce_mean(grads, axis=(1, 2))  # (1, C)
    cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[..., None]
    cam = tf.image.resize(cam, batch.shape[1:3], method="bilinear")[0, ..., 0].numpy()
    return _unit(cam)


def _input_gradient(model, batch) -> np.ndarray:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(batch)
        target = probability_of(model(batch, training=False))[0]
    grads = tape.gradient(target, batch)
    if grads is None:
        return np.zeros(batch.shape[1:3], dtype=np.float32)
    return _unit(tf.reduce_max(tf.abs(grads), axis=-1)[0].numpy())


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.nan_to_num(np.asarray(a, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    hi = float(a.max()) if a.size else 0.0
    return (a / hi).astype(np.float32) if hi > 0 else np.zeros_like(a, dtype=np.float32)
