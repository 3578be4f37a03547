"""Saliency: Grad-CAM on the last convolutional feature map, nested bases included; input gradients otherwise."""
from __future__ import annotations

import pytest

import numpy as np

from model import architectures as arch
from model.preprocess import PreprocessingSpec
from model.saliency import GRAD_CAM, GRADIENT, probability_of, saliency_map

pytestmark = pytest.mark.verifies("SRS-032")


def _x(size, channels, seed=0):
    return np.random.default_rng(seed).random((size, size, channels)).astype(np.float32)


def _probability(model, x):
    return float(probability_of(model(x[None], training=False))[0])


def test_grad_cam_looks_inside_a_pretrained_base():
    model, base = arch.build("vgg16", "none", PreprocessingSpec.create(32, 1))
    assert model.get_layer("gap") is not None and len(base.output.shape) == 4
    x = _x(32, 1)
    heat, method, layer = saliency_map(model, x, probability=_probability(model, x))
    base_conv = {l.name for l in base.layers if l.__class__.__name__ == "Conv2D"}
    assert method == GRAD_CAM and layer.startswith(base.name + "/") and layer.split("/")[1] in base_conv
    assert heat.shape == (32, 32) and 0.0 <= heat.min() and heat.max() <= 1.0


def test_grad_cam_on_a_top_level_convolution_of_small_cnn():
    model, _ = arch.build("small_cnn", "none", PreprocessingSpec.create(32, 1))
    x = _x(32, 1)
    heat, method, layer = saliency_map(model, x)
    assert method == GRAD_CAM and layer == "relu4" and heat.shape == (32, 32)


def test_the_probability_passed_in_is_the_chaining_reference():
    model, _ = arch.build("small_cnn", "none", PreprocessingSpec.create(32, 1))
    x = _x(32, 1)
    p = _probability(model, x)
    assert saliency_map(model, x, probability=p)[1] == GRAD_CAM
    _, method, layer = saliency_map(model, x, probability=(p + 0.5) % 1.0)  # split does not reproduce it
    assert method == GRADIENT and layer is None


def test_a_model_without_a_learned_feature_map_gets_input_gradients():
    import keras

    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(1, activation="sigmoid")])
    heat, method, layer = saliency_map(model, _x(16, 1))
    assert method == GRADIENT and layer is None and heat.shape == (16, 16)


def test_a_batch_gives_each_input_its_own_map():
    """saliency_maps over a batch (chunks of 3) equals saliency_map one input at a time, for Grad-CAM
    and for input gradients."""
    import keras
    from model.saliency import saliency_maps

    keras.utils.set_random_seed(0)   # an untrained net: seeded (some inits give every input the same map)
    cnn, _ = arch.build("small_cnn", "none", PreprocessingSpec.create(32, 1))
    dense = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(1, activation="sigmoid")])
    for model, size, expected in ((cnn, 32, GRAD_CAM), (dense, 16, GRADIENT)):
        batch = np.stack([_x(size, 1, seed) for seed in range(7)])
        maps, method, _ = saliency_maps(model, batch, chunk=3)
        assert method == expected and len(maps) == 7
        for x, got in zip(batch, maps):
            np.testing.assert_allclose(got, saliency_map(model, x)[0], atol=1e-5)
        if method == GRAD_CAM:  # (a linear model's scaled input gradient is the same for every input)
            assert any(not np.allclose(maps[0], m) for m in maps[1:]), "every input got the same map"
