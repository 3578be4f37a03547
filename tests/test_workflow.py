"""model.workflow: the workflow.dicom record over demo DICOMs made from real NIH images, the real
NIH sample DICOMs (via the cohort data folder) and an extra folder with a broken file."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from evidence import read_record
from model import workflow
from test_infer import make_device, nih_64px_table


@pytest.fixture()
def run_dir(tmp_path, nih_dir):
    out = make_device(tmp_path / "run", data_dir=nih_dir)
    table = nih_64px_table(nih_dir)
    picked = pd.concat([table[table["pneumonia"] == 1].head(2), table[table["pneumonia"] == 0].head(6)])
    (out / "cohort").mkdir()
    picked.to_csv(out / "cohort" / "manifest.csv", index=False)
    picked.assign(split=["train"] * 3 + ["test"] * 5)[["image_id", "patient_id", "split"]].to_csv(
        out / "cohort" / "splits.csv", index=False)
    return out, picked


@pytest.mark.verifies("SRS-001", "SRS-002", "SRS-003")
def test_workflow_record(run_dir, tmp_path, nih_dir):
    out, picked = run_dir
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "broken.dcm").write_bytes(b"DICM" * 10)
    params = {"allowed_modalities": ["DX", "CR"], "allowed_body_parts": ["CHEST"], "allowed_views": ["AP", "PA"],
              "min_age_years": 18, "max_age_years": 100, "demo_dicom_count": 3, "dicom_dirs": [str(extra)]}
    record = workflow.run(out, params)
    data = read_record(out, "workflow.dicom")["data"]
    assert record["data"] == data
    origins = [f["origin"] for f in data["files"]]
    assert origins == ["demo"] * 3 + ["control"] * 4 + ["data_dir"] * 6 + ["dicom_dirs"]
    demo_ids = set(picked.tail(5)["image_id"].str.replace(".png", ""))  # the test split preferred, before any score
    assert {f["file"].split("/")[-1][:-4] for f in data["files"][:3]} <= demo_ids
    assert data["controls"]["n"] == 4 and data["controls"]["all_rejected_as_expected"] is True
    import pydicom
    source = pydicom.dcmread(out / data["files"][0]["file"])
    controls = [pydicom.dcmread(out / f["file"]) for f in data["files"][3:7]]
    assert len({c.SOPInstanceUID for c in controls} | {source.SOPInstanceUID}) == 5
    assert [(c.Modality, c.BodyPartExamined, c.ViewPosition) for c in controls] == [
        ("CT", "CHEST", source.ViewPosition), ("DX", "SKULL", source.ViewPosition),
        ("DX", "CHEST", "LL"), ("DX", "CHEST", source.ViewPosition)]
    real = data["files"][7:13]
    assert [f["status"] for f in real] == ["accepted"] * 3 + ["rejected"] * 3
    assert data["files"][-1]["status"] == "error"
    assert data["counts"]["accepted"] + data["counts"]["rejected"] + data["counts"]["error"] == 14
    for f in data["files"]:
        if f["status"] == "accepted":
            assert 0 <= f["probability"] <= 1 and f["prediction"] == (f["probability"] >= 0.5)
            assert (out / f["clinician_image"]).is_file()
        else:
            assert f["probability"]["estimable"] is False and f["reasons"]
    assert data["checks"]["allowed_modalities"] == ["DX", "CR"] and data["checks"]["missing_age"] == "reject"
    rec = read_record(out, "workflow.dicom")
    assert {d["id"] for d in rec["deps"]["records"]} == {"training.run", "validation.threshold", "cohort.manifest"}
    assert len(rec["deps"]["files"]) == 14 and len(rec["outs"]) == data["counts"]["accepted"]
    assert rec["synthetic"] is False
    json.dumps(rec, allow_nan=False)


def test_workflow_cli_errors_are_one_line(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("workflow: {missing_age: maybe}\n")
    assert workflow.main(["--out", str(tmp_path), "--params", str(params)]) == 2
    assert "workflow.missing_age 'maybe' is not one of reject, accept_with_warning" in capsys.readouterr().err
    params.write_text("workflow: {}\n")
    assert workflow.main(["--out", str(tmp_path), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no model in") and "\n" not in err
    assert not (tmp_path / "evidence" / "workflow.dicom.json").exists()
