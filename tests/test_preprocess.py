"""One preprocessing for every input format: PNG, JPEG and DICOM give the same model input."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from model.images import ImageError, load_pixels
from model.preprocess import PreprocessingSpec, SpecError, load_spec, preprocess

pytestmark = pytest.mark.verifies("SRS-012")

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (48, 40), dtype=np.uint8)


def write_dicom(path, stored: np.ndarray, photometric="MONOCHROME2", **extra):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    bits = stored.dtype.itemsize * 8
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


@pytest.mark.parametrize("spec", [PreprocessingSpec.create(32, 1), PreprocessingSpec.create(24, 3, "torch"),
                                  PreprocessingSpec.create(32, 3, "caffe")])
def test_png_and_dicom_with_same_pixels_give_same_tensor(tmp_path, spec):
    png = tmp_path / "a.png"
    Image.fromarray(PIXELS).save(png)
    dcm = write_dicom(tmp_path / "a.dcm", PIXELS)
    a, b = preprocess(load_pixels(png), spec), preprocess(load_pixels(dcm), spec)
    assert a.shape == (spec.image_size, spec.image_size, spec.channels) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_monochrome1_dicom_equals_inverted_png(tmp_path):
    spec = PreprocessingSpec.create(32, 1)
    png = tmp_path / "a.png"
    Image.fromarray(255 - PIXELS).save(png)
    dcm = write_dicom(tmp_path / "a.dcm", PIXELS, photometric="MONOCHROME1")
    np.testing.assert_allclose(preprocess(load_pixels(png), spec), preprocess(load_pixels(dcm), spec), atol=1e-6)


def test_rgb_rgba_and_16bit_png_decode_to_the_gray_values(tmp_path):
    Image.fromarray(np.stack([PIXELS] * 3, -1)).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([PIXELS] * 3 + [np.full_like(PIXELS, 255)])).save(tmp_path / "rgba.png")
    wide = PIXELS.astype(np.uint16) * 257  # 16-bit with the same display values
    Image.fromarray(wide).save(tmp_path / "wide.png")
    for name in ("rgb.png", "rgba.png", "wide.png"):
        np.testing.assert_allclose(load_pixels(tmp_path / name), PIXELS.astype(np.float32), atol=1e-4, err_msg=name)
    odd = np.array([[0, 65535, 1000]], np.uint16)
    Image.fromarray(odd).save(tmp_path / "odd.png")
    np.testing.assert_allclose(load_pixels(tmp_path / "odd.png"), odd * 255.0 / 65535.0, rtol=1e-5)


def test_true_colour_image_uses_bt601_luma(tmp_path):
    rgb = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    expected = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(load_pixels(tmp_path / "c.png"), expected, atol=1e-3)


def test_jpeg_decodes_close_to_pillow(tmp_path):
    Image.fromarray(PIXELS).save(tmp_path / "a.jpg", quality=95)
    ours = load_pixels(tmp_path / "a.jpg")
    pil = np.asarray(Image.open(tmp_path / "a.jpg"), np.float32)
    assert ours.shape == PIXELS.shape and np.abs(ours - pil).max() <= 1


def test_preprocess_matches_an_independent_computation():
    square = PIXELS[:40, :40]  # already at the target size: the resize is the identity
    spec = PreprocessingSpec.create(40, 3, "torch")
    out = preprocess(square, spec)
    expected = (square[..., None] / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("size,shape", [(64, (1024, 1024)), (32, (100, 80)), (50, (40, 40)), (224, (120, 300))])
def test_window_after_resize_equals_the_definition(size, shape):
    """With the full display window, `to_unit` resizes first; the result equals the definition
    (window, clip, resize, clip) computed here with TensorFlow ops directly, for uint8 and float."""
    import tensorflow as tf
    from model.preprocess import to_unit

    spec = PreprocessingSpec.create(size, 1)
    rng = np.random.default_rng(size)
    stored = rng.integers(0, 256, shape, dtype=np.uint8)
    stored[: shape[0] // 3] = 255  # saturated regions, where a misplaced clip would show
    stored[-shape[0] // 4:] = 0
    for pixels in (stored, stored.astype(np.float32), rng.uniform(0, 255, shape).astype(np.float32)):
        x = tf.clip_by_value(tf.convert_to_tensor(pixels, tf.float32)[..., None] / 255.0, 0.0, 1.0)
        x = tf.image.resize(x, [size, size], method="bilinear", antialias=True)
        expected = tf.clip_by_value(x, 0.0, 1.0).numpy()
        np.testing.assert_allclose(to_unit(pixels, spec).numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(preprocess(pixels, spec), expected, atol=1e-6)


def test_preprocess_batch_keeps_order_across_shapes_dtypes_and_chunks():
    """Mixed shapes and dtypes, more images than one chunk: each output equals the definition
    (resize of value/255, clip, ImageNet 'torch' normalisation) computed here per image."""
    import tensorflow as tf
    from model.preprocess import preprocess_batch

    rng = np.random.default_rng(7)
    shapes = [(64, 64), (100, 80), (64, 64), (30, 50)] * 6
    images = [rng.integers(0, 256, shape, dtype=np.uint8) if i % 3 else rng.uniform(0, 255, shape)
              for i, shape in enumerate(shapes)]
    spec = PreprocessingSpec.create(32, 3, "torch")
    batch = preprocess_batch(images, spec, chunk=5)
    assert batch.shape == (len(images), 32, 32, 3) and batch.dtype == np.float32
    for img, got in zip(images, batch):
        unit = tf.image.resize(np.asarray(img, np.float32)[..., None] / 255.0, [32, 32], antialias=True)
        unit = np.clip(unit.numpy(), 0.0, 1.0)
        expected = (unit - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_window_clips_and_rescales():
    spec = PreprocessingSpec(image_size=8, window_low=50.0, window_high=150.0)
    out = preprocess(np.array([[0, 50, 100, 150, 250, 100, 100, 100]] * 8, np.float32), spec)
    np.testing.assert_allclose(out[0, :5, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_spec_round_trip_and_load(tmp_path):
    spec = PreprocessingSpec.create(224, 3, "caffe")
    assert PreprocessingSpec.from_dict(json.loads(spec.to_json())) == spec
    (tmp_path / "p.json").write_text(spec.to_json())
    assert load_spec(tmp_path / "p.json") == spec
    with pytest.raises(SpecError, match="unknown field"):
        PreprocessingSpec.from_dict({**spec.to_dict(), "colour": 1})
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.json")
    with pytest.raises(SpecError, match="channels"):
        PreprocessingSpec.create(32, 2)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ImageError, match="image file not found: .*nope.png"):
        load_pixels(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match="cannot read image file .*bad.png"):
        load_pixels(tmp_path / "bad.png")
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 300)
    with pytest.raises(ImageError, match="bad.dcm"):
        load_pixels(tmp_path / "bad.dcm")


def test_real_nih_png_and_dicom_load(nih_dir):
    png = load_pixels(nih_dir / "images_64px" / "00000001_000.png")  # stored as RGB with equal channels
    assert png.shape == (64, 64) and 0 <= png.min() and png.max() <= 255
    dcm = load_pixels(nih_dir / "dicom" / "test1.dcm")
    assert dcm.shape == (1024, 1024)
    stored = pydicom.dcmread(nih_dir / "dicom" / "test1.dcm").pixel_array
    np.testing.assert_array_equal(dcm, stored.astype(np.float32))  # 8-bit MONOCHROME2: stored values
