"""model.dicom: header checks on the real NIH sample files, and the pixel pipeline checked against
hand-computed values, pydicom's own LUT functions and uncompressed twins of compressed files."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_voi_lut
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLossless, JPEGLosslessSV1, RLELossless

from model import dicom


def _dx(pixels, **kw):
    kw.setdefault("age", "045Y")
    return dicom.build_dataset(pixels, **kw)


def _roundtrip(ds, tmp_path, name="x.dcm"):
    return pydicom.dcmread(dicom.save(ds, tmp_path / name))


@pytest.mark.parametrize("n,status,reason", [
    (1, "accepted", None), (2, "accepted", None), (3, "accepted", None),
    (4, "rejected", "BodyPartExamined RIBCAGE"), (5, "rejected", "Modality CT"),
    (6, "rejected", "view XX (from PatientPosition)"),
])
def test_real_nih_dicoms(nih_dir, n, status, reason):
    item = dicom.intake(nih_dir / "dicom" / f"test{n}.dcm")
    assert item.status == status
    if reason:
        assert len(item.check.reasons) == 1 and reason in item.check.reasons[0]
        assert item.pixels is None
    else:
        assert item.check.reasons == []
        assert item.check.view in ("AP", "PA") and item.check.view_source == "PatientPosition"
        stored = pydicom.dcmread(nih_dir / "dicom" / f"test{n}.dcm").pixel_array
        np.testing.assert_array_equal(item.pixels, stored)  # 8-bit MONOCHROME2: the stored values
        assert item.pixels.dtype == np.uint8


@pytest.mark.parametrize("text,years", [("045Y", 45), ("018M", 1.5), ("81", 81), ("010W", 70 / 365.25),
                                        ("003D", 3 / 365.25), (" 60Y ", 60), ("", None), (None, None)])
@pytest.mark.verifies("SRS-003")
def test_parse_age(text, years):
    got = dicom.parse_age(text)
    assert (got is None) if years is None else got == pytest.approx(years, abs=1e-3)


@pytest.mark.verifies("SRS-003")
@pytest.mark.parametrize("text", ["abc", "45X", "-5Y", "1000Y", "4.5Y"])
def test_parse_age_rejects_garbage(text):
    with pytest.raises(ValueError, match="PatientAge"):
        dicom.parse_age(text)


@pytest.mark.verifies("SRS-003")
def test_age_rules_and_missing_age_policy():
    px = np.zeros((64, 64), np.uint8)
    assert dicom.check_header(_dx(px, age="017Y")).status == "rejected"
    assert dicom.check_header(_dx(px, age="018Y")).status == "accepted"
    assert dicom.check_header(_dx(px, age="101Y")).status == "rejected"
    assert "outside the intended use" in dicom.check_header(_dx(px, age="018M")).reasons[0]
    missing = dicom.build_dataset(px)  # no PatientAge
    assert dicom.check_header(missing).status == "rejected"
    warned = dicom.check_header(missing, {"missing_age": "accept_with_warning"})
    assert warned.status == "accepted" and "PatientAge missing" in warned.warnings[0]


@pytest.mark.verifies("SRS-002")
def test_view_position_wins_over_patient_position():
    ds = _dx(np.zeros((64, 64), np.uint8), view="LL")
    ds.PatientPosition = "PA"
    check = dicom.check_header(ds)
    assert check.status == "rejected" and check.view == "LL" and check.view_source == "ViewPosition"


@pytest.mark.verifies("SRS-012")
def test_monochrome1_is_inverted(tmp_path):
    px = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    ds = _dx(px)
    ds.PhotometricInterpretation = "MONOCHROME1"
    out = dicom.read_pixels(_roundtrip(ds, tmp_path))
    np.testing.assert_array_equal(out, 255.0 - px.astype(np.float32))


@pytest.mark.verifies("SRS-012")
def test_12bit_window_matches_pydicom_windowing(tmp_path):
    rng = np.random.default_rng(0)
    px = rng.integers(0, 4096, (64, 64)).astype(np.uint16)
    ds = _dx(px)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.WindowCenter, ds.WindowWidth = 1500, 1000
    ds = _roundtrip(ds, tmp_path)
    ours = dicom.read_pixels(ds)
    # pydicom's LINEAR windowing maps onto the 12-bit output range 0..4095
    reference = apply_voi_lut(ds.pixel_array.astype(np.float64), ds) / 4095.0 * 255.0
    np.testing.assert_allclose(ours, reference, atol=1e-3)
    assert ours.min() == 0.0 and ours.max() == 255.0


@pytest.mark.verifies("SRS-012")
def test_rescale_then_window_hand_computed(tmp_path):
    px = np.array([[0, 1064, 1024 + 240, 2000]] * 32, dtype=np.uint16).repeat(8, axis=1)
    ds = _dx(px)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    out = dicom.read_pixels(_roundtrip(ds, tmp_path))
    # HU -1024 -> below the window; HU 40 -> ((40-39.5)/399+0.5)*255; HU 240 -> above
    assert out[0, 0] == 0.0
    assert out[0, 8] == pytest.approx(((40 - 39.5) / 399 + 0.5) * 255, abs=1e-3)
    assert out[0, 16] == 255.0 and out[0, 24] == 255.0


def test_16bit_without_window_scales_the_encodable_range_not_the_values_present(tmp_path):
    px = np.array([[100, 300, 65535]] * 33, dtype=np.uint16).repeat(11, axis=1)
    out = dicom.read_pixels(_roundtrip(_dx(px), tmp_path))
    # 0..2^16-1 -> 0..255, hand-computed; min-max of the values present would give 0, 0.78, 255
    np.testing.assert_allclose(sorted(np.unique(out).tolist()), [100 * 255 / 65535, 300 * 255 / 65535, 255.0],
                               rtol=1e-6)


MR = "MR_small.dcm"


@pytest.mark.verifies("SRS-009")
@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_compressed_files_decode_like_their_uncompressed_twin(name):
    plain = dicom.read_pixels(pydicom.dcmread(get_testdata_file(MR)))
    packed = pydicom.dcmread(get_testdata_file(name))
    assert packed.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(dicom.read_pixels(packed), plain)


@pytest.mark.verifies("SRS-009")
@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compress_with_pydicom_then_intake(tmp_path, syntax):
    rng = np.random.default_rng(1)
    px = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    ds = _dx(px)
    ds.compress(syntax)
    path = dicom.save(ds, tmp_path / "c.dcm")
    item = dicom.intake(path)
    assert item.status == "accepted", item.check.reasons
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(item.pixels, px.astype(np.float32))


@pytest.mark.verifies("SRS-009")
def test_jpeg_baseline_encapsulated_from_pillow(tmp_path):
    from PIL import Image

    px = np.tile(np.linspace(0, 255, 64, dtype=np.float32), (64, 1)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="JPEG", quality=95)
    ds = _dx(px)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    item = dicom.intake(dicom.save(ds, tmp_path / "j.dcm"))
    assert item.status == "accepted", item.check.reasons
    assert np.abs(item.pixels.astype(int) - px).max() <= 4  # lossy, but the same image


@pytest.mark.verifies("SRS-009", "SRS-010")
def test_unsupported_transfer_syntax_is_named(tmp_path):
    ds = _dx(np.zeros((64, 64), np.uint8))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no pixel handler
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    check = dicom.check_header(_roundtrip(ds, tmp_path))
    assert check.status == "rejected"
    assert any("MPEG2" in r and "1.2.840.10008.1.2.4.100" in r for r in check.reasons)


def test_resolved_rules_are_not_resolved_again_per_file(tmp_path, monkeypatch):
    rules = dicom.rules_from({"missing_age": "accept_with_warning"})
    path = dicom.save(dicom.build_dataset(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)), tmp_path / "a.dcm")

    def resolve(params):
        raise AssertionError("rules resolved again")

    monkeypatch.setattr(dicom, "rules_from", resolve)
    item = dicom.intake(path, rules)
    assert item.status == "accepted" and "PatientAge missing" in item.check.warnings[0]


@pytest.mark.parametrize("bits,predictor,syntax", [(8, 1, JPEGLosslessSV1), (12, 1, JPEGLosslessSV1),
                                                    (8, 7, JPEGLossless), (16, 4, JPEGLossless)])
@pytest.mark.verifies("SRS-009")
def test_jpeg_lossless_decodes_to_the_encoded_pixels(tmp_path, bits, predictor, syntax):
    """JPEG lossless (process 14), written by the test's own T.81 encoder, decodes through intake
    to exactly the pixels of its uncompressed twin."""
    from jpeg_lossless import encode

    rng = np.random.default_rng(bits + predictor)
    dtype = np.uint8 if bits == 8 else np.uint16
    px = np.add.outer(np.arange(48), np.arange(40)) * ((1 << bits) - 1) // 86
    px = (px + rng.integers(0, 5, px.shape)).clip(0, (1 << bits) - 1).astype(dtype)
    px[5:9, 5:30] = (1 << bits) - 1  # large differences: the top categories
    px[20:24, :] = 0
    twin = _dx(px)
    twin.BitsStored, twin.HighBit = bits, bits - 1
    ds = _dx(px)
    ds.BitsStored, ds.HighBit = bits, bits - 1
    ds.PixelData = encapsulate([encode(px, bits, predictor)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    item = dicom.intake(dicom.save(ds, tmp_path / "ll.dcm"))
    assert item.status == "accepted", item.check.reasons
    np.testing.assert_array_equal(pydicom.dcmread(tmp_path / "ll.dcm").pixel_array, px)
    np.testing.assert_array_equal(item.pixels, dicom.read_pixels(_roundtrip(twin, tmp_path)))
