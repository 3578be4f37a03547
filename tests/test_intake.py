"""DICOM intake against real-world and hostile files (issue 17, items 1 and 2): bit depths 1-16,
the pixel and byte budget checked before decoding, blank images and strips, non-Part-10 files,
reason codes, read-ahead bounded in bytes, and one intensity rule for every encoding."""
from __future__ import annotations

import io
import threading
import time
import tracemalloc

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

from model import dicom


def _dx(pixels, **kw):
    kw.setdefault("age", "045Y")
    return dicom.build_dataset(pixels, **kw)


def _chest(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A smooth chest-like 0..1 field (two dark lungs in a bright body) with noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols] / np.array([rows, cols])[:, None, None]
    lungs = np.exp(-(((x - 0.3) / 0.13) ** 2 + ((y - 0.5) / 0.3) ** 2)) + \
        np.exp(-(((x - 0.7) / 0.13) ** 2 + ((y - 0.5) / 0.3) ** 2))
    return np.clip(0.85 - 0.6 * lungs + rng.normal(0, 0.02, (rows, cols)), 0, 1)


def _encode(unit: np.ndarray, bits: int) -> np.ndarray:
    """0..1 -> stored values 0..2^bits-1 (uint16 when bits > 8)."""
    top = (1 << bits) - 1
    return np.rint(unit * top).astype(np.uint8 if bits <= 8 else np.uint16)


def _cr(stored: np.ndarray, bits: int, **kw) -> pydicom.Dataset:
    ds = _dx(stored if stored.dtype == np.uint8 else stored.astype(np.uint16), **kw)
    ds.Modality = "CR"
    ds.BitsStored, ds.HighBit = bits, bits - 1
    return ds


# ----------------------------------------------------------------------------- bit depths

@pytest.mark.verifies("SRS-008")
@pytest.mark.parametrize("bits", [15, 13])
def test_cr_chest_of_15_and_13_bits_is_accepted_and_scaled_by_its_bit_range(tmp_path, bits):
    """Like pydicom-data's RG1 (CR, CHEST, PA, 1955 x 1841, BitsStored 15): legal, accepted, and its
    display values are stored * 255 / (2^bits - 1) (hand-computed), not a min-max stretch."""
    stored = _encode(_chest(1955, 1841) * 0.6 + 0.1, bits)       # uses 10%..70% of the range
    path = dicom.save(_cr(stored, bits, view="PA"), tmp_path / f"rg1_{bits}.dcm")
    item = dicom.intake(path)
    assert item.status == "accepted", item.check.reasons
    assert item.check.modality == "CR" and item.pixels.shape == (1955, 1841)
    np.testing.assert_allclose(item.pixels, stored * (255.0 / ((1 << bits) - 1)), atol=1e-3)
    assert item.pixels.max() < 0.75 * 255          # a min-max stretch would reach 255


@pytest.mark.parametrize("allocated,stored,high,code", [
    (16, 12, 15, "high_bit"), (16, 15, 11, "high_bit"), (8, 12, 11, "bits_stored"), (16, 17, 16, "bits_stored"),
    (12, 12, 11, "bits_allocated")])
@pytest.mark.verifies("SRS-008", "SRS-010")
def test_inconsistent_bit_depths_are_rejected_with_their_code(allocated, stored, high, code):
    ds = _dx(np.tile(np.arange(64, dtype=np.uint16), (64, 1)))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, high
    check = dicom.check_header(ds)
    assert check.status == "rejected" and code in check.codes, check.reasons
    assert len(check.codes) == len(check.reasons)


@pytest.mark.verifies("SRS-008")
@pytest.mark.parametrize("bits", list(range(1, 17)))
def test_every_bits_stored_from_1_to_16_passes_the_header_check(bits):
    ds = _dx(np.zeros((64, 64), np.uint8 if bits <= 8 else np.uint16))
    ds.BitsStored, ds.HighBit = bits, bits - 1
    check = dicom.check_header(ds)
    assert check.status == "accepted", check.reasons


# ----------------------------------------------------------------------------- budget before decoding

def _rle_bomb(rows: int = 8192, cols: int = 8192) -> pydicom.Dataset:
    """A 16-bit RLE file declaring rows x cols whose pixel data is about rows*cols/64 bytes: each
    segment is runs of 128 equal bytes, two bytes per run (PS3.5 G.3.1)."""
    n = rows * cols
    segment = bytes([0x81, 0x00]) * (n // 128) + (bytes([(n % 128) - 1, 0]) if n % 128 else b"")
    header = np.zeros(16, "<u4")
    header[0], header[1], header[2] = 2, 64, 64 + len(segment)
    frame = header.tobytes() + segment + segment
    ds = _dx(np.zeros((2, 2), np.uint16))
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    return ds


@pytest.mark.verifies("SRS-004")
def test_rle_bomb_is_rejected_from_its_header_before_any_decoding(tmp_path, monkeypatch):
    path = dicom.save(_rle_bomb(), tmp_path / "bomb.dcm")
    assert path.stat().st_size < 3 * 2**20                      # 2 MB declaring 128 MiB decoded

    def no_decode(*a, **k):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(dicom, "read_pixels", no_decode)
    tracemalloc.start()
    try:
        item = dicom.intake(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert item.status == "rejected" and item.pixels is None
    assert {"pixel_budget", "byte_budget"} <= set(item.check.codes), item.check.reasons
    assert "67.1 megapixels is above max_megapixels 40" in " ".join(item.check.reasons)
    assert peak < 32 * 2**20, peak                               # the 2 MB file, a few copies


@pytest.mark.verifies("SRS-004")
def test_small_rle_file_within_budget_decodes(tmp_path):
    """The same construction within the budget decodes (the bomb is refused for its size alone)."""
    item = dicom.intake(dicom.save(_rle_bomb(64, 64), tmp_path / "small.dcm"),
                        {"min_display_std": 0})
    assert item.status == "accepted", item.check.reasons
    assert item.pixels.shape == (64, 64) and float(item.pixels.max()) == 0.0


@pytest.mark.verifies("SRS-005")
def test_file_larger_than_max_file_mb_is_not_read(tmp_path, monkeypatch):
    path = dicom.save(_dx(np.tile(np.arange(256, dtype=np.uint16), (256, 1))), tmp_path / "big.dcm")
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read")))
    item = dicom.intake(path, {"max_file_mb": 0.05})
    assert item.status == "error" and item.check.codes == ["file_too_large"]
    assert "larger than max_file_mb 0.05 MB" in item.check.reasons[0]


@pytest.mark.verifies("SRS-004")
def test_byte_budget_alone(tmp_path):
    check = dicom.check_header(_dx(np.zeros((1000, 1000), np.uint16)), {"max_decoded_mb": 1.0})
    assert check.codes == ["byte_budget"] and "1.9 MB" in check.reasons[0]


# ----------------------------------------------------------------------------- blank images, strips

@pytest.mark.verifies("SRS-006")
def test_all_zero_image_is_rejected_as_blank(tmp_path):
    item = dicom.intake(dicom.save(_dx(np.zeros((256, 256), np.uint8)), tmp_path / "zero.dcm"))
    assert item.status == "rejected" and item.check.codes == ["blank_image"] and item.pixels is None
    assert "standard deviation 0.00 grey levels" in item.check.reasons[0]


@pytest.mark.verifies("SRS-006")
def test_near_constant_image_is_rejected_and_a_plain_one_is_not(tmp_path):
    px = np.full((256, 256), 120, np.uint8)
    px[100, 100] = 255
    assert dicom.intake(dicom.save(_dx(px), tmp_path / "dot.dcm")).check.codes == ["blank_image"]
    ok = dicom.intake(dicom.save(_dx(_encode(_chest(256, 256), 8)), tmp_path / "ok.dcm"))
    assert ok.status == "accepted", ok.check.reasons


@pytest.mark.verifies("SRS-007")
def test_a_strip_is_rejected_for_its_aspect_ratio():
    check = dicom.check_header(_dx(np.zeros((32, 8192), np.uint8)))
    assert check.status == "rejected" and check.codes == ["aspect_ratio"]
    assert check.reasons == ["aspect ratio 256.00 (32 x 8192) is above max_aspect_ratio 3: "
                             "not a radiograph of the chest"]
    assert dicom.check_header(_dx(np.zeros((2048, 2500), np.uint8))).status == "accepted"


# ----------------------------------------------------------------------------- non-Part-10 files

@pytest.mark.verifies("SRS-011")
@pytest.mark.parametrize("implicit", [True, False])
def test_non_part10_file_is_read_as_a_bare_data_set(tmp_path, implicit):
    px = _encode(_chest(64, 64), 8)
    ds = _dx(px)
    del ds.file_meta
    ds.preamble = None
    path = tmp_path / "bare.dcm"
    ds.save_as(path, implicit_vr=implicit, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    item = dicom.intake(path)
    assert item.status == "accepted", item.check.reasons
    np.testing.assert_array_equal(item.pixels, px)
    assert "not a DICOM Part 10 file" in item.check.warnings[0]
    assert ("Implicit" if implicit else "Explicit") in item.check.warnings[0]


@pytest.mark.verifies("SRS-011")
def test_non_part10_without_pixels_says_so_and_non_dicom_is_not_a_dicom_file(tmp_path):
    ds = _dx(np.zeros((64, 64), np.uint8))
    del ds.PixelData, ds.file_meta
    ds.preamble = None
    ds.save_as(tmp_path / "nopix.dcm", implicit_vr=True, little_endian=True)
    item = dicom.intake(tmp_path / "nopix.dcm")
    assert item.status == "rejected" and "no_pixel_data" in item.check.codes
    for name, data in (("text.dcm", b"hello, this is text\n" * 40), ("png.dcm", b"\x89PNG\r\n\x1a\n" + bytes(300)),
                       ("random.dcm", np.random.default_rng(3).bytes(5000))):
        (tmp_path / name).write_bytes(data)
        item = dicom.intake(tmp_path / name)
        assert item.status == "error" and item.check.codes == ["not_dicom"], (name, item.check.reasons)
        assert item.check.reasons[0].startswith("not a DICOM file")


# ----------------------------------------------------------------------------- wording

@pytest.mark.verifies("SRS-002")
def test_ct_patient_position_is_not_reported_as_a_view():
    ds = _dx(np.zeros((64, 64), np.uint8), modality="CT", view=None)
    ds.PatientPosition = "HFS"
    check = dicom.check_header(ds)
    assert check.codes == ["modality_not_allowed"], check.reasons
    assert not any("HFS" in r for r in check.reasons) and check.view is None
    dx = _dx(np.zeros((64, 64), np.uint8), view=None)
    dx.PatientPosition = "FFP"
    check = dicom.check_header(dx)
    assert check.codes == ["view_missing"]
    assert "PatientPosition FFP is a patient position, not a view" in check.reasons[0]


@pytest.mark.verifies("SRS-010")
def test_every_reason_has_a_declared_code(tmp_path):
    ds = _dx(np.zeros((32, 8192), np.uint8), modality=None, body_part="SKULL", view="LL", age="010Y")
    ds.BitsStored = 9
    check = dicom.check_header(ds)
    assert len(check.codes) == len(check.reasons) >= 5
    assert all(c in dicom.REASONS for c in check.codes)
    assert check.as_dict()["codes"] == check.codes


# ----------------------------------------------------------------------------- read-ahead in bytes

def test_read_ahead_is_bounded_in_bytes(tmp_path, monkeypatch):
    from model import infer

    paths = [dicom.save(_dx(_encode(_chest(256, 256, i), 8)), tmp_path / f"f{i}.dcm") for i in range(12)]
    real, lock, state = dicom.intake, threading.Lock(), {"started": 0, "most": 0, "consumed": 0}

    def counting(path, rules=None):
        with lock:
            state["started"] += 1
            state["most"] = max(state["most"], state["started"] - state["consumed"])
        return real(path, rules)

    rules = dicom.rules_from({"max_megapixels": 0.1})          # a file in flight reserves 0.4 MB
    decoded = real(paths[0], rules).pixels.nbytes              # a finished file holds its pixels
    budget = 400_000 + 3 * decoded                             # one reservation and three finished files
    monkeypatch.setattr(dicom, "intake", counting)
    got = []
    for item in infer.intakes(paths, rules, ahead=64, workers=2, ahead_bytes=budget):
        got.append(item.file)
        time.sleep(0.1)                                            # a slow consumer: readers run ahead
        with lock:
            state["consumed"] += 1
    assert got == [str(p) for p in paths]
    assert state["most"] <= 4, state                              # within the bytes, not 64 files
    state.update(started=0, most=0, consumed=0)
    for _ in infer.intakes(paths, rules, ahead=64, workers=2, ahead_bytes=10**9):
        time.sleep(0.1)
        with lock:
            state["consumed"] += 1
    assert state["most"] >= 6, state                              # a large budget reads further ahead


# ----------------------------------------------------------------------------- one intensity rule

def _variants(unit: np.ndarray) -> dict[str, pydicom.Dataset]:
    """The same image in every encoding: 8/12/15/16-bit MONOCHROME2, 12-bit MONOCHROME1, RLE 12-bit."""
    out = {}
    for bits in (8, 12, 15, 16):
        out[f"{bits}-bit"] = _cr(_encode(unit, bits), bits)
    mono1 = _cr(((1 << 12) - 1 - _encode(unit, 12).astype(np.int32)).astype(np.uint16), 12)
    mono1.PhotometricInterpretation = "MONOCHROME1"
    out["MONOCHROME1 12-bit"] = mono1
    rle = _cr(_encode(unit, 12), 12)
    rle.compress(RLELossless)
    out["RLE 12-bit"] = rle
    return out


@pytest.fixture(scope="module")
def tiny_model():
    """A small CNN whose output moves with the input intensities (weights drawn large, so that a
    difference of 0.002 in probability is a difference the model can see)."""
    import keras

    keras.utils.set_random_seed(7)
    return keras.Sequential([
        keras.Input((64, 64, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=keras.initializers.RandomNormal(0, 1, seed=1)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.RandomNormal(0, 4, seed=2),
                           bias_initializer=keras.initializers.Constant(2.0))])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(48, 96), cols=st.integers(48, 96),
       contrast=st.floats(0.2, 1.0), offset=st.floats(0.0, 0.5))
@pytest.mark.verifies("SRS-009", "SRS-012")
def test_same_image_in_every_encoding_gives_the_same_model_input(tiny_model, tmp_path, seed, rows, cols,
                                                                  contrast, offset):
    from model.preprocess import PreprocessingSpec, preprocess_batch

    unit = np.clip(offset + contrast * _chest(rows, cols, seed), 0, 1)
    unit = _encode(unit, 8) / 255.0                     # the 8-bit image is the reference
    spec = PreprocessingSpec.create(64, 1)
    display, names = [], []
    for name, ds in _variants(unit).items():
        path = dicom.save(ds, tmp_path / f"{name.replace(' ', '_')}.dcm")
        item = dicom.intake(path, {"min_display_std": 0})
        assert item.status == "accepted", (name, item.check.reasons)
        display.append(np.asarray(item.pixels, np.float32))
        names.append(name)
    reference = unit * 255.0
    for name, pixels in zip(names, display):             # display units within one grey level
        assert np.abs(pixels - reference).max() <= 0.5 + 1e-3, name
    stretched = (reference - reference.min()) * (255.0 / (reference.max() - reference.min()))
    inputs = preprocess_batch(display + [stretched.astype(np.float32)], spec)
    assert np.abs(inputs[:-1] - inputs[0]).max() * 255 <= 1.0
    probs = np.asarray(tiny_model(inputs, training=False)).ravel()
    assert np.abs(probs[:-1] - probs[0]).max() < 0.002, dict(zip(names, probs))
    if np.abs(stretched - reference).mean() > 20:       # the old rule (min-max) would be caught
        assert np.abs(inputs[-1] - inputs[0]).max() * 255 > 1.0


@pytest.mark.verifies("SRS-012")
def test_png_and_dicom_of_the_same_16bit_image_give_the_same_pixels(tmp_path):
    """Training reads PNGs, inference reads DICOM: both follow value * 255 / (2^16 - 1)."""
    from PIL import Image

    from model.images import load_pixels

    stored = _encode(_chest(80, 72), 16)
    Image.fromarray(stored).save(tmp_path / "x.png")
    dicom.save(_cr(stored, 16), tmp_path / "x.dcm")
    png, dcm = load_pixels(tmp_path / "x.png"), load_pixels(tmp_path / "x.dcm")
    np.testing.assert_allclose(png, stored / 65535.0 * 255.0, atol=1e-3)
    np.testing.assert_allclose(dcm, png, atol=1e-3)


def test_the_rule_is_recorded_in_the_preprocessing_spec():
    from model.preprocess import INTENSITY_RULE, UNRECORDED_RULE, PreprocessingSpec

    spec = PreprocessingSpec.create(64, 1)
    assert spec.to_dict()["intensity_rule"] == INTENSITY_RULE and INTENSITY_RULE.startswith("intensity/1")
    old = spec.to_dict()
    del old["intensity_rule"]
    assert PreprocessingSpec.from_dict(old).intensity_rule == UNRECORDED_RULE
    assert dicom.INTENSITY_RULE is INTENSITY_RULE
