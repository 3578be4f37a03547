"""Robustness corpus: broken and hostile files each get a clear status and reason, nothing crashes,
and header text is escaped where it goes into HTML. A property test over header values."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from model import dicom


def _good(**kw) -> Dataset:
    kw.setdefault("age", "045Y")
    return dicom.build_dataset(np.tile(np.arange(64, dtype=np.uint8) * 3, (64, 1)), **kw)  # not blank


def _corpus(tmp_path):
    """{name: (path, expected status, text the first reason must contain)}."""
    files = {}

    def add(name, ds_or_bytes, status, reason):
        path = tmp_path / f"{name}.dcm"
        if isinstance(ds_or_bytes, bytes):
            path.write_bytes(ds_or_bytes)
        else:
            dicom.save(ds_or_bytes, path)
        files[name] = (path, status, reason)

    good = dicom.save(_good(), tmp_path / "good.dcm").read_bytes()
    add("truncated", good[: len(good) - 1000], "error", "pixel data could not be decoded")
    add("truncated_header", good[:200], "error", "")
    add("empty", b"", "error", "empty file")
    add("not_dicom", b"\x89PNG\r\n\x1a\n" + b"\x00" * 300, "error", "not a DICOM file")
    no_pixels = _good()
    del no_pixels.PixelData
    add("no_pixels", no_pixels, "rejected", "no Pixel Data")
    absurd = _good()
    absurd.Rows, absurd.Columns = 60000, 60000
    add("absurd_size", absurd, "rejected", "Rows 60000 is outside")
    rgb = _good()
    rgb.SamplesPerPixel, rgb.PhotometricInterpretation, rgb.PlanarConfiguration = 3, "RGB", 0
    rgb.PixelData = np.zeros((64, 64, 3), np.uint8).tobytes()
    add("rgb", rgb, "rejected", "PhotometricInterpretation RGB")
    multi = _good()
    multi.NumberOfFrames = 2
    multi.PixelData = np.zeros((2, 64, 64), np.uint8).tobytes()
    add("multiframe", multi, "rejected", "NumberOfFrames 2")
    bare = _good()
    for keyword in ("Modality", "BodyPartExamined", "ViewPosition", "PatientAge"):
        delattr(bare, keyword)
    add("missing_tags", bare, "rejected", "Modality missing")
    hostile = _good(patient_name="Müller^Jörg <img src=x onerror=alert(1)>",
                    study_description="<script>alert('x')</script> Thorax ünd Lunge $x^2$")
    hostile.SpecificCharacterSet = "ISO_IR 192"
    add("hostile_text", hostile, "accepted", "")
    script_part = _good(body_part="<b>X</b>")
    add("script_body_part", script_part, "rejected", "BodyPartExamined <B>X</B>")
    return files


def test_corpus_statuses_and_reasons(tmp_path):
    for name, (path, status, reason) in _corpus(tmp_path).items():
        item = dicom.intake(path)
        assert item.status == status, (name, item.check.reasons)
        if status == "accepted":
            assert item.check.reasons == [] and item.pixels is not None
        else:
            assert item.check.reasons and reason in item.check.reasons[0], (name, item.check.reasons)
            assert item.pixels is None
        json.dumps(item.check.as_dict(), allow_nan=False)


def test_missing_tags_lists_every_reason(tmp_path):
    item = dicom.intake(_corpus(tmp_path)["missing_tags"][0])
    text = " | ".join(item.check.reasons)
    for expected in ("Modality missing", "BodyPartExamined missing", "view missing", "PatientAge missing"):
        assert expected in text


def test_corpus_through_infer_cli(tmp_path, capsys):
    """Every corpus file through `python -m model.infer`: one JSON line each, no traceback."""
    from model import infer
    from test_infer import make_device

    out = make_device(tmp_path / "run")
    (tmp_path / "files").mkdir()
    corpus = _corpus(tmp_path / "files")
    assert infer.main(["--out", str(out), "--secondary-capture", str(tmp_path / "files")]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = [json.loads(x) for x in captured.out.splitlines()]
    by_name = {line["file"].rsplit("/", 1)[-1][:-4]: line for line in lines[:-1]}
    for name, (_, status, _) in corpus.items():
        assert by_name[name]["status"] == status, name
    hostile = by_name["hostile_text"]
    assert hostile["study_description"].startswith("<script>")  # kept as data in JSON
    sc = pydicom.dcmread(hostile["secondary_capture"])
    assert str(sc.PatientName).startswith("Müller^Jörg") and sc.BurnedInAnnotation == "YES"
    page = (out / "infer" / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "ünd" in page
    assert by_name["good"]["status"] == "accepted"
    assert lines[-1]["files"] == len(corpus) + 1  # and good.dcm


def test_read_pixels_rejects_colour():
    ds = _good()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = np.zeros((64, 64, 3), np.uint8).tobytes()
    with pytest.raises(ValueError):
        dicom.read_pixels(ds)


_text = st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["DX", "CR", "CT", "CHEST", "AP", "PA", "LL"]))
_int = st.one_of(st.none(), st.integers(min_value=-5, max_value=70000))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modality=_text, body=_text, view=_text, position=_text,
       age=st.one_of(st.none(), st.text(max_size=6), st.from_regex(r"\d{1,3}[DWMY]?", fullmatch=True)),
       rows=_int, cols=_int, bits=_int, alloc=_int, frames=_int, photometric=_text, samples=_int,
       syntax=st.sampled_from(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5",
                               "1.2.840.10008.1.2.4.100", "1.2.3", "", "not a uid"]))
def test_check_header_never_raises(modality, body, view, position, age, rows, cols, bits, alloc, frames,
                                   photometric, samples, syntax):
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    for keyword, value in (("Modality", modality), ("BodyPartExamined", body), ("ViewPosition", view),
                           ("PatientPosition", position), ("PatientAge", age), ("Rows", rows),
                           ("Columns", cols), ("BitsStored", bits), ("BitsAllocated", alloc),
                           ("NumberOfFrames", frames), ("PhotometricInterpretation", photometric),
                           ("SamplesPerPixel", samples)):
        if value is not None:
            try:
                setattr(ds, keyword, value)
            except Exception:
                pass
    if syntax:
        ds.file_meta.TransferSyntaxUID = syntax
    check = dicom.check_header(ds)
    assert check.status in ("accepted", "rejected")
    assert (check.status == "accepted") == (check.reasons == [])
    assert all(isinstance(r, str) and r for r in check.reasons)
    json.dumps(check.as_dict(), allow_nan=False)
