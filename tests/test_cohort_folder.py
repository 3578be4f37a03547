"""Folder source: labels.csv beside images; each bad input is a one-line error and writes nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eda import cohort, dataset, quality
from evidence import read_record
from evidence.manifest import read_manifest


def _params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("cohort:\n  nih: {max_age_years: 100}\n")
    return p


def _folder(tmp_path, csv_text, images=("a/1.png", "a/2.png", "b/3.jpg")):
    data = tmp_path / "data"
    for i, rel in enumerate(images):          # distinct pixels: one image each (rows are deduplicated by content)
        path = data / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 90 + i, np.uint8)).save(path)
    (data / "labels.csv").write_text(csv_text)
    return data


def _run(tmp_path, data):
    return cohort.main(["--data", str(data), "--out", str(tmp_path / "out"), "--params", str(_params(tmp_path))])


def test_folder_with_patient_ids(tmp_path):
    data = _folder(tmp_path, "path,label,patient_id,split,age,sex,view\n"
                             "a/1.png,1,p1,train,64,M,AP\na/2.png,0,p1,train,140,female,pa\nb/3.jpg,0,p2,test,,,\n")
    assert _run(tmp_path, data) == 0
    rec = read_record(tmp_path / "out", "cohort.manifest")
    m = pd.read_csv(tmp_path / "out" / "cohort" / "manifest.csv", keep_default_na=False)
    assert list(m["image_id"]) == ["a/1.png", "a/2.png", "b/3.jpg"]
    assert list(m["path"]) == [str((data / r).resolve()) for r in m["image_id"]]
    assert list(m["patient_id"]) == ["p1", "p1", "p2"] and list(m["split"]) == ["train", "train", "test"]
    assert list(m["sex"]) == ["M", "F", ""] and list(m["view"]) == ["AP", "PA", ""]
    assert m["age_years"].tolist()[1:] == ["", ""] and float(m["age_years"][0]) == 64
    src = rec["data"]["source"]
    assert src["kind"] == "folder" and src["patient_ids_given"] is True and rec["synthetic"] is False
    assert rec["data"]["counts"] == {"images": 3, "patients": 2, "pneumonia_images": 1,
                                     "pneumonia_patients": 1, "images_with_pixels": 3}
    assert [f["id"] for f in rec["data"]["quality_findings"]] == ["impossible_age"]


def test_folder_without_patient_ids(tmp_path):
    data = _folder(tmp_path, "path,label\na/1.png,1\na/2.png,0\nb/3.jpg,0\n")
    assert _run(tmp_path, data) == 0
    rec = read_record(tmp_path / "out", "cohort.manifest")
    m = pd.read_csv(tmp_path / "out" / "cohort" / "manifest.csv", keep_default_na=False)
    assert list(m["patient_id"]) == list(m["image_id"])
    assert rec["data"]["source"]["patient_ids_given"] is False
    assert rec["data"]["counts"]["patients"] == 3
    assert any(f["id"] == "no_patient_ids" and f["n_rows"] == 3 for f in rec["data"]["quality_findings"])


def test_folder_negatives_have_no_recorded_findings(tmp_path):
    """A folder's labels.csv records pneumonia only: negatives carry no finding (not 'No Finding')
    and are not reported as unknown finding names."""
    data = _folder(tmp_path, "path,label\na/1.png,1\na/2.png,0\nb/3.jpg,0\n")
    assert _run(tmp_path, data) == 0
    m = read_manifest(tmp_path / "out" / "cohort" / "manifest.csv")
    assert list(m["finding_labels"].fillna("")) == ["Pneumonia", "", ""]
    assessed = quality.assess(m, [], None)
    assert "unknown_finding_names" in assessed["checks_without_findings"]
    findings = {r["finding"]: r["images"] for r in dataset.describe(m)[0]["findings"]}
    assert findings["No Finding"] == 0 and findings["Pneumonia"] == 1


def test_folder_reads_image_headers_including_dicom(tmp_path, nih_dir):
    data = _folder(tmp_path, "path,label\na/1.png,1\nb/3.jpg,0\nd/test1.dcm,0\n")
    (data / "d").mkdir()
    (data / "d" / "test1.dcm").symlink_to(nih_dir / "dicom" / "test1.dcm")
    assert _run(tmp_path, data) == 0
    m = pd.read_csv(tmp_path / "out" / "cohort" / "manifest.csv", keep_default_na=False)
    assert list(m["orig_width"]) == [8, 8, 1024] and list(m["orig_height"]) == [8, 8, 1024]


@pytest.mark.parametrize("csv_text, expected", [
    (None, "no labels.csv"),
    ("file,label\na/1.png,1\n", "missing column(s) path"),
    ("path,diagnosis\na/1.png,1\n", "missing column(s) label"),
    ("path,label\na/1.png,1\na/2.png,yes\n", "row 3: label 'yes' is not 0 or 1"),
    ("path,label\na/1.png,1\nc/9.png,0\n", "row 3: image 'c/9.png' not found"),
    ("path,label,split\na/1.png,1,train\na/2.png,0,holdout\n", "row 3: split 'holdout'"),
    ("path,label\na/1.png,1\na/1.png,0\n", "row 2 (a/1.png, label 1) and row 3 (a/1.png, label 0) are one image (same file"),
    ("path,label\na/1.png,1\n./a//1.png,0\n", "row 2 (a/1.png, label 1) and row 3 (./a//1.png, label 0) are one image"),
    ("path,label\na/1.png,1\n../elsewhere.png,0\n", "row 3: '../elsewhere.png' resolves to"),
    ("path,label,patient_id\na/1.png,1,\n", "row 2: empty patient_id"),
    ("path,label,age\na/1.png,1,old\n", "row 2: age 'old'"),
    ("path,label\na/1.png,1\nbad.png,0\n", "row 3: image 'bad.png': not a readable PNG"),
    ("path,label\na/1.png,1\nbad.dcm,0\n", "row 3: image 'bad.dcm': not a readable DICOM"),
    ("path,label\na/1.png,1\nnotes.txt,0\n", "row 3: image 'notes.txt' is not PNG, JPEG or DICOM"),
])
def test_bad_folder_inputs(tmp_path, capsys, csv_text, expected):
    data = _folder(tmp_path, csv_text or "")
    for name in ("bad.png", "bad.dcm", "notes.txt"):
        (data / name).write_bytes(b"not an image")
    if csv_text is None:
        (data / "labels.csv").unlink()
        (data / "labels.txt").write_text("x")
    rc = _run(tmp_path, data)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err
    assert expected in err
    if csv_text is not None:
        assert "labels.csv" in err
    assert not (tmp_path / "out" / "cohort" / "manifest.csv").exists()
    assert not (tmp_path / "out" / "evidence").exists()


def test_folder_keeps_one_row_per_image_and_reports_the_others(tmp_path):
    data = _folder(tmp_path, "path,label\na/1.png,1\n./a/1.png,1\nlink.png,1\nb/3.jpg,0\ncopy.jpg,0\na/2.png,0\n")
    (data / "link.png").symlink_to(data / "a" / "1.png")
    (data / "copy.jpg").write_bytes((data / "b" / "3.jpg").read_bytes())
    assert _run(tmp_path, data) == 0
    rec = read_record(tmp_path / "out", "cohort.manifest")
    m = pd.read_csv(tmp_path / "out" / "cohort" / "manifest.csv", keep_default_na=False)
    assert list(m["image_id"]) == ["a/1.png", "b/3.jpg", "a/2.png"]
    dup = [f for f in rec["data"]["quality_findings"] if f["id"] == "duplicate_images"]
    assert len(dup) == 1 and dup[0]["n_rows"] == 3
    assert dup[0]["example_image_ids"] == ["./a/1.png", "link.png", "copy.jpg"]
    assert "row 6 (copy.jpg): same content as row 5 (b/3.jpg)" in dup[0]["applied"]


def test_folder_paths_outside_the_data_folder_need_the_params_key(tmp_path, capsys):
    data = _folder(tmp_path, "")
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.full((8, 8), 30, np.uint8)).save(outside)
    (data / "labels.csv").write_text(f"path,label\na/1.png,1\n{outside},0\n")
    assert _run(tmp_path, data) == 2
    err = capsys.readouterr().err
    assert "outside the data folder" in err and "cohort.nih.allow_paths_outside_folder" in err
    params = _params(tmp_path)
    params.write_text("cohort:\n  nih: {max_age_years: 100, allow_paths_outside_folder: true}\n")
    assert cohort.main(["--data", str(data), "--out", str(tmp_path / "out"), "--params", str(params)]) == 0
    m = pd.read_csv(tmp_path / "out" / "cohort" / "manifest.csv", keep_default_na=False)
    assert list(m["path"]) == [str((data / "a" / "1.png").resolve()), str(outside.resolve())]
