"""Architectures: shapes, grayscale to 3-channel bases, weights files, clear errors, fine-tuning."""
from __future__ import annotations

import numpy as np
import pytest

from model import architectures as arch
from model.preprocess import PreprocessingSpec
from model.train import make_spec, resolve_params


def test_small_cnn_outputs_a_probability_per_image():
    model, base = arch.build("small_cnn", "none", PreprocessingSpec.create(28, 1))
    assert base is None and model.output_shape == (None, 1)
    out = model.predict(np.random.default_rng(0).random((3, 28, 28, 1), np.float32), verbose=0)
    assert out.shape == (3, 1) and ((out > 0) & (out < 1)).all()


def test_grayscale_input_is_replicated_for_a_3_channel_base():
    model, base = arch.build("vgg16", "none", PreprocessingSpec.create(32, 1))
    assert model.input_shape == (None, 32, 32, 1) and base.input_shape == (None, 32, 32, 3)
    assert model.get_layer("gray_to_rgb") is not None


def test_weights_file_path_is_loaded(tmp_path):
    import keras

    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    path = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(path)
    _, base = arch.build("vgg16", str(path), PreprocessingSpec.create(32, 3, "caffe"))
    for a, b in zip(source.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_imagenet_without_network_says_how_to_supply_the_file(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(arch.ArchitectureError) as e:
        arch.build("vgg16", "imagenet", PreprocessingSpec.create(32, 3, "caffe"))
    msg = str(e.value)
    assert msg.startswith("train.weights") and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert "set train.weights to the path" in msg


@pytest.mark.parametrize("architecture, weights, match", [
    ("resnet50", "imagnet", "train.weights: 'imagnet' is neither"),
    ("small_cnn", "imagenet", "train.weights: small_cnn has no pretrained weights"),
])
def test_bad_architecture_or_weights_name_the_parameter(architecture, weights, match):
    with pytest.raises(arch.ArchitectureError, match=match):
        arch.check(architecture, weights)


def test_pretrained_bases_get_their_imagenet_normalisation():
    spec = make_spec(resolve_params({"architecture": "densenet121", "weights": "imagenet", "image_size": 64}))
    assert spec.channels == 3 and spec.normalisation == "torch" and spec.mean == [0.485, 0.456, 0.406]
    spec = make_spec(resolve_params({"architecture": "resnet50", "weights": "none", "image_size": 64}))
    assert spec.normalisation == "unit" and spec.channels == 1


def test_fine_tune_schedule_freezes_then_unfreezes_from_a_layer():
    _, base = arch.build("vgg16", "none", PreprocessingSpec.create(32, 1))
    frozen = arch.freeze(base)
    assert len(frozen) == len(base.layers) and not base.trainable_weights
    frozen = arch.set_trainable(base, "block5_conv1")
    names = [layer.name for layer in base.layers]
    assert frozen == names[:names.index("block5_conv1")]
    assert {w.path.split("/")[0] for w in base.trainable_weights} == {"block5_conv1", "block5_conv2", "block5_conv3"}
    with pytest.raises(arch.ArchitectureError, match="train.fine_tune.unfreeze_from: no layer 'block9'"):
        arch.set_trainable(base, "block9")
