"""model.infer: the CLI over real and broken files with a tiny locked device in a tmp run folder.

`make_device` is also used by the workflow and held-out tests.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from evidence import write_record  # noqa: E402
from model import infer  # noqa: E402


def make_device(out: Path, *, threshold: float = 0.5, synthetic: bool = False, seed: int = 0,
                data_dir: Path | None = None) -> Path:
    """A tiny untrained CNN with its spec, a training.run record listing it and a locked threshold."""
    import keras
    from model.preprocess import PreprocessingSpec

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((64, 64, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Conv2D(4, 3, activation="relu", name="last_conv"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    model.save(models / "model.keras")
    (models / "preprocessing.json").write_text(PreprocessingSpec.create(64, 1).to_json())
    write_record(out, "cohort.manifest", synthetic=synthetic,
                 data={"source": {"kind": "demo" if synthetic else "nih", "data_dir": str(data_dir or out / "no_data")}})
    write_record(out, "training.run", data={"architecture": "tiny"},
                 outs=[models / "model.keras", models / "preprocessing.json"], dep_records=["cohort.manifest"])
    write_record(out, "validation.threshold", data={"threshold": threshold},
                 dep_records=["training.run"])
    return out


@pytest.fixture(scope="module")
def device_out(tmp_path_factory):
    return make_device(tmp_path_factory.mktemp("run"))


def _lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_infer_real_files_and_broken_ones(device_out, nih_dir, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("not a dicom")
    (tmp_path / "empty.dcm").write_bytes(b"")
    rc = infer.main(["--out", str(device_out), "--secondary-capture",
                     *(str(nih_dir / "dicom" / f"test{i}.dcm") for i in range(1, 7)), str(tmp_path)])
    assert rc == 0
    rows = _lines(capsys)
    *files, summary = rows
    assert [r["status"] for r in files] == ["accepted"] * 3 + ["rejected"] * 3 + ["error"] * 2
    assert summary == {"summary": True, "files": 8, "accepted": 3, "rejected": 3, "error": 2,
                       "flagged": sum(bool(r["prediction"]) for r in files), "duplicates": 0}
    model_sha = infer.sha256_file(device_out / "models" / "model.keras")
    for r in files[:3]:
        assert r["reasons"] == [] and 0.0 <= r["probability"] <= 1.0
        assert r["prediction"] == (r["probability"] >= 0.5) and r["threshold"] == 0.5
        assert r["model_sha256"] == model_sha and r["saliency_method"] == "grad-cam"
        assert r["saliency_layer"] == "last_conv"
        assert Path(r["clinician_image"]).is_file() and Path(r["clinician_image"]).stat().st_size > 10_000
        sc = pydicom.dcmread(r["secondary_capture"])
        assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.PhotometricInterpretation == "RGB"
        assert sc.PatientID == pydicom.dcmread(r["file"], stop_before_pixels=True).PatientID
        assert r["patient_id"] == str(sc.PatientID)
    for r in files[3:]:
        assert r["reasons"] and r["probability"] is None and r["prediction"] is None and r["clinician_image"] is None
    assert "empty file" in files[6]["reasons"][0] and "not a DICOM" in files[7]["reasons"][0]
    assert (device_out / "infer" / "index.html").is_file()


@pytest.mark.verifies("SRS-016")
def test_probability_matches_direct_prediction(device_out, nih_dir, capsys):
    """The CLI's probability equals keras predicting on preprocess(read_pixels(file)) directly."""
    import keras
    from model.preprocess import load_spec, preprocess

    path = nih_dir / "dicom" / "test2.dcm"
    assert infer.main(["--out", str(device_out), "--no-images", str(path)]) == 0
    row = _lines(capsys)[0]
    model = keras.models.load_model(device_out / "models" / "model.keras")
    spec = load_spec(device_out / "models" / "preprocessing.json")
    x = preprocess(pydicom.dcmread(path).pixel_array.astype(np.float32), spec)
    assert row["probability"] == pytest.approx(float(model.predict(x[None], verbose=0)[0, 0]), abs=1e-6)
    assert row["clinician_image"] is None


@pytest.mark.verifies("SRS-042")
def test_no_model_is_one_line_error(tmp_path, capsys):
    assert infer.main(["--out", str(tmp_path), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no model in") and "\n" not in err


@pytest.mark.verifies("SRS-017")
def test_tampered_model_is_refused(device_out, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(device_out, out)
    with open(out / "models" / "model.keras", "ab") as f:
        f.write(b"x")
    assert infer.main(["--out", str(out), str(tmp_path)]) == 2
    assert "does not match the sha256 recorded by training.run" in capsys.readouterr().err


@pytest.mark.verifies("SRS-017")
def test_tampered_spec_is_refused(device_out, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(device_out, out)
    spec = out / "models" / "preprocessing.json"
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "window_high": 200.0}))  # still a valid spec
    with pytest.raises(infer.DeviceError, match="preprocessing.json does not match the sha256 recorded by training.run"):
        infer.load_device(out)
    assert infer.main(["--out", str(out), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "preprocessing.json" in err and "make train" in err and "\n" not in err


@pytest.mark.verifies("SRS-001", "SRS-002")
def test_infer_applies_the_header_checks_of_the_workflow_record(device_out, nih_dir, tmp_path, capsys):
    """A run whose workflow.dicom record allows only PA rejects an AP file, whatever --params says;
    without the record, --params sets the checks, and without both the defaults apply."""
    import shutil
    from model import dicom

    out = tmp_path / "run"
    shutil.copytree(device_out, out)
    pa, ap = (str(nih_dir / "dicom" / f"test{i}.dcm") for i in (1, 2))
    params = tmp_path / "params.yaml"
    params.write_text("workflow: {allowed_views: [PA]}\n")
    assert infer.header_rules(out) == ({**dicom.DEFAULT_RULES}, "defaults")
    rules, source = infer.header_rules(out, params)
    assert rules["allowed_views"] == ["PA"] and source == "params workflow"
    assert infer.main(["--out", str(out), "--no-images", "--params", str(params), pa, ap]) == 0
    assert [r["status"] for r in _lines(capsys)[:2]] == ["accepted", "rejected"]

    write_record(out, "workflow.dicom", data={"checks": rules})
    params.write_text("workflow: {allowed_views: [AP, PA]}\n")
    assert infer.header_rules(out, params) == (rules, "record workflow.dicom")
    for argv in ([], ["--params", str(params)]):
        assert infer.main(["--out", str(out), "--no-images", *argv, pa, ap]) == 0
        rows = _lines(capsys)
        assert [r["status"] for r in rows[:2]] == ["accepted", "rejected"]
        assert "view AP" in rows[1]["reasons"][0]
    assert infer.load_device(out, params).rules_source == "record workflow.dicom"


@pytest.mark.verifies("SRS-029")
def test_html_index_escapes_header_text():
    from model.clinician import html_index

    page = html_index([{"file": "<b>x.dcm", "status": "accepted", "reasons": [],
                        "study_description": "<script>alert(1)</script> Ünïcødé", "probability": 0.25,
                        "prediction": False, "clinician_image": None}], "<i>use</i>")
    assert "<script>" not in page and "&lt;i&gt;use&lt;/i&gt;" in page and "&lt;script&gt;alert(1)&lt;/script&gt; Ünïcødé" in page
    assert "&lt;b&gt;x.dcm" in page


def nih_64px_table(nih_dir: Path):
    """The 1,000 real 64px NIH images joined with the 2020 label file (manifest-like columns)."""
    import pandas as pd

    labels = pd.read_csv(nih_dir / "metadata" / "Data_Entry_2017_v2020.csv.gz",
                         usecols=["Image Index", "Finding Labels", "Patient ID", "Patient Age",
                                  "Patient Gender", "View Position"], dtype={"Patient ID": str})
    images = sorted((nih_dir / "images_64px").glob("*.png"))
    table = pd.DataFrame({"image_id": [p.name for p in images], "path": [str(p) for p in images]})
    table = table.merge(labels, left_on="image_id", right_on="Image Index", how="inner")
    return pd.DataFrame({
        "image_id": table["image_id"], "path": table["path"], "patient_id": table["Patient ID"],
        "pneumonia": table["Finding Labels"].str.contains("Pneumonia").astype(int),
        "finding_labels": table["Finding Labels"], "age_years": table["Patient Age"].astype(float),
        "sex": table["Patient Gender"], "view": table["View Position"], "source": "nih",
    })


@pytest.mark.verifies("SRS-016")
def test_classify_pipeline_keeps_order_and_equals_one_file_at_a_time(device_out, nih_dir, tmp_path):
    """Intake threads running ahead (several workers, small look-ahead, batches that split mixed
    accepted/rejected/broken files) give the same rows, in input order, as one file per batch."""
    (tmp_path / "broken.dcm").write_bytes(b"DICM" * 10)
    files = [nih_dir / "dicom" / f"test{n}.dcm" for n in (1, 4, 2, 5, 3, 6)] + [tmp_path / "broken.dcm"]
    files = files * 3
    device = infer.load_device(device_out)
    piped = list(infer.classify(files, device, batch_size=2, workers=3))
    single = list(infer.classify(files, device, batch_size=1, workers=1))
    assert [r["file"] for r in piped] == [str(f) for f in files]
    assert [r["status"] for r in piped] == [r["status"] for r in single]
    assert [r["status"] for r in piped[:7]] == ["accepted", "rejected", "accepted", "rejected", "accepted",
                                                "rejected", "error"]
    for a, b in zip(piped, single):
        assert a["reasons"] == b["reasons"]
        assert (a["probability"] is None) == (b["probability"] is None)
        if a["probability"] is not None:
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)


def test_classify_stops_cleanly_when_the_consumer_stops(device_out, nih_dir):
    import threading

    device = infer.load_device(device_out)
    rows = infer.classify([nih_dir / "dicom" / "test1.dcm"] * 50, device, batch_size=4, workers=2)
    first = next(rows)
    rows.close()  # the intake threads are cancelled and joined
    assert first["status"] == "accepted"
    assert not [t for t in threading.enumerate() if t.name.startswith("intake")]


@pytest.mark.verifies("SRS-001", "SRS-002", "SRS-003")
def test_intended_use_line_follows_the_header_rules():
    from model.clinician import intended_use
    from model.dicom import rules_from

    assert intended_use(rules_from(None)).endswith("Patients aged 18 to 100 years, AP/PA chest radiographs (DX/CR) only.")
    narrow = intended_use(rules_from({"allowed_views": ["PA"], "min_age_years": 21.5, "allowed_modalities": ["CR"]}))
    assert "aged 21.5 to 100 years, PA chest radiographs (CR) only." in narrow


def test_one_image_reached_several_ways_is_classified_once(device_out, nih_dir, tmp_path, capsys, monkeypatch):
    """A symlink, `./x`, `a//x`, a symlink loop and a byte copy of one file: one classification, the
    others reported as duplicates of it; `--run` names the run folder (`--out` is its old name)."""
    import shutil

    (tmp_path / "a").mkdir()
    shutil.copy(nih_dir / "dicom" / "test1.dcm", tmp_path / "a" / "x.dcm")
    shutil.copy(nih_dir / "dicom" / "test2.dcm", tmp_path / "a" / "y.dcm")
    shutil.copy(tmp_path / "a" / "x.dcm", tmp_path / "copy.dcm")
    (tmp_path / "link.dcm").symlink_to(tmp_path / "a" / "x.dcm")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["--no-images", "a/x.dcm", "./a/x.dcm", "a//x.dcm", "a/loop/a/x.dcm", "link.dcm", "copy.dcm", "a"]
    assert infer.main(["--run", str(device_out), *argv]) == 0
    *rows, summary = _lines(capsys)
    duplicates = [r for r in rows if r["status"] == "duplicate"]
    classified = [r for r in rows if r["status"] != "duplicate"]
    assert [r["file"] for r in classified] == ["a/x.dcm", "a/y.dcm"]
    assert [(r["file"], r["duplicate_of"]) for r in duplicates] == [
        ("./a/x.dcm", "a/x.dcm"), ("a//x.dcm", "a/x.dcm"), ("a/loop/a/x.dcm", "a/x.dcm"), ("link.dcm", "a/x.dcm"),
        ("copy.dcm", "a/x.dcm"), ("a/x.dcm", "a/x.dcm")]                 # the last one: found again in folder a
    assert duplicates[0]["reasons"][0] == "same file as a/x.dcm; classified once, under that name"
    assert duplicates[4]["reasons"][0].startswith("same content as a/x.dcm (sha256 ")
    assert summary["files"] == 2 and summary["duplicates"] == 6
    assert infer.main(["--out", str(device_out), "--no-images", "a/y.dcm"]) == 0    # the old name still works
    assert _lines(capsys)[0]["status"] == "accepted"
