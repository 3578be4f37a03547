"""Patient-level split: no patient in two splits, method precedence, official NIH lists, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eda import cohort, split
from evidence import read_record

pytestmark = pytest.mark.verifies("SRS-015")

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


def _params(tmp_path, seed=17, fractions="{train: 0.7, val: 0.15, test: 0.15}", official="true",
            adequacy="  allow_inadequate_val: true\n", name="params.yaml"):
    """Small cohorts: their val split is below the default minimum, so by default they are allowed."""
    p = tmp_path / name
    p.write_text("cohort:\n  demo: {seed: 11, n_patients: 60, image_size: 64, pneumonia_prevalence: 0.3}\n"
                 "  nih: {max_age_years: 100}\n"
                 f"split:\n  seed: {seed}\n  fractions: {fractions}\n  use_official_lists: {official}\n" + adequacy)
    return p


def _cohort(tmp_path, data, params):
    assert cohort.main(["--data", str(data), "--out", str(tmp_path / "out"), "--params", str(params)]) == 0


def _splits(tmp_path):
    return pd.read_csv(tmp_path / "out" / "cohort" / "splits.csv", dtype=str)


def _manifest(tmp_path):
    return pd.read_csv(tmp_path / "out" / "cohort" / "manifest.csv", dtype={"patient_id": str, "image_id": str},
                       keep_default_na=False)


def test_demo_split_is_patient_level_stratified_and_seeded(tmp_path):
    params = _params(tmp_path)
    _cohort(tmp_path, "demo", params)
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(params)]) == 0
    s, m = _splits(tmp_path), _manifest(tmp_path)
    assert list(s.columns) == ["image_id", "patient_id", "split"]
    assert sorted(s["image_id"]) == sorted(m["image_id"])
    assert s.groupby("patient_id")["split"].nunique().max() == 1          # computed here, independently
    rec = read_record(tmp_path / "out", "split.patients")
    assert rec["synthetic"] is True and rec["data"]["method"] == "patient_stratified_random"
    assert rec["data"]["leakage"] == {"patients_in_more_than_one_split": 0, "passed": True}
    joined = s.merge(m[["image_id", "pneumonia"]], on="image_id")
    for name, got in rec["data"]["splits"].items():
        part = joined[joined["split"] == name]
        assert got["images"] == len(part) and got["pneumonia_images"] == int(part["pneumonia"].sum()) > 0
        assert got["prevalence"] == pytest.approx(part["pneumonia"].mean())
    patients = s.drop_duplicates("patient_id")["split"].value_counts(normalize=True)
    assert patients["train"] == pytest.approx(0.7, abs=0.08)
    first = (tmp_path / "out" / "cohort" / "splits.csv").read_bytes()
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(params)]) == 0
    assert (tmp_path / "out" / "cohort" / "splits.csv").read_bytes() == first
    other = _params(tmp_path, seed=18)
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(other)]) == 0
    assert (tmp_path / "out" / "cohort" / "splits.csv").read_bytes() != first


def test_assign_patients_spreads_positive_patients():
    patients = pd.DataFrame({"patient_id": [f"p{i}" for i in range(100)], "positive": [i < 20 for i in range(100)]})
    got = split.assign_patients(patients, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    pos = pd.Series(got)[patients.loc[patients["positive"], "patient_id"]].value_counts()
    assert dict(pos) == {"train": 14, "val": 3, "test": 3}
    assert len(got) == 100


def _nih_folder(tmp_path, n_patients=40):
    """A small NIH-like folder: label file, PNGs (one row without image), official lists."""
    data = tmp_path / "data"
    (data / "images_001" / "images").mkdir(parents=True)
    rows, train_val, test = [], [], []
    for pid in range(1, n_patients + 1):
        for fu in range(3):
            iid = f"{pid:08d}_{fu:03d}.png"
            label = "Pneumonia" if (pid % 4 == 0 and fu == 1) else "No Finding"
            rows.append(f"{iid},{label},{fu},{pid},{40 + fu},M,PA,2500,2048,0.143,0.143")
            (test if pid % 5 == 0 else train_val).append(iid)
            if not (pid == 1 and fu == 2):
                Image.fromarray(np.full((8, 8), pid, np.uint8)).save(data / "images_001" / "images" / iid)
    (data / "Data_Entry_2017_v2020.csv").write_text(HEADER + "\n".join(rows) + "\n")
    (data / "train_val_list.txt").write_text("\n".join(train_val[:-1]) + "\n")        # one image in no list
    (data / "test_list.txt").write_text("\n".join(test) + "\n")
    return data, set(train_val), set(test)


def test_rows_whose_image_file_is_gone_are_left_out(tmp_path):
    params = _params(tmp_path)
    _cohort(tmp_path, "demo", params)
    m = _manifest(tmp_path)
    gone = m["image_id"].iloc[3]
    Path(m["path"].iloc[3]).unlink()
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(params)]) == 0
    s = _splits(tmp_path)
    assert gone not in set(s["image_id"]) and len(s) == len(m) - 1
    rec = read_record(tmp_path / "out", "split.patients")
    assert rec["data"]["rows_left_out"] == [{"reason": "image file missing (path given, no file)", "n": 1}]


def test_official_lists(tmp_path):
    data, train_val, test = _nih_folder(tmp_path)
    params = _params(tmp_path)
    _cohort(tmp_path, data, params)
    assert read_record(tmp_path / "out", "cohort.manifest")["data"]["source"]["official_split_lists"] is True
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(params)]) == 0
    s = _splits(tmp_path)
    rec = read_record(tmp_path / "out", "split.patients")
    assert rec["data"]["method"] == "official_lists"
    assert set(s.loc[s["split"] == "test", "image_id"]) == test
    assert set(s.loc[s["split"] != "test", "image_id"]) == train_val - {"00000001_002.png", sorted(train_val)[-1]}
    assert s.groupby("patient_id")["split"].nunique().max() == 1
    assert {"no image file (empty path)": 1, "not in either official list": 1} == {
        r["reason"]: r["n"] for r in rec["data"]["rows_left_out"]}
    assert any(d["path"].endswith("test_list.txt") for d in rec["deps"]["files"])
    leaky = sorted(train_val)[0]                                   # patient 1 now in both lists
    (data / "test_list.txt").write_text("\n".join(sorted(test) + [leaky]) + "\n")
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(params)]) == 2
    no_lists = _params(tmp_path, official="false")
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(no_lists)]) == 0
    assert read_record(tmp_path / "out", "split.patients")["data"]["method"] == "patient_stratified_random"


def _folder(tmp_path, rows):
    data = tmp_path / "data"
    data.mkdir()
    lines = ["path,label,patient_id,split"]
    for i, (label, pid, name) in enumerate(rows):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(data / f"{i}.png")
        lines.append(f"{i}.png,{label},{pid},{name}")
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    return data


def test_source_split_column_is_used(tmp_path):
    rows = [(1, "a", "train"), (0, "b", "train"), (1, "c", "val"), (0, "d", "val"), (1, "e", "test"), (0, "f", "test")]
    params = _params(tmp_path)
    _cohort(tmp_path, _folder(tmp_path, rows), params)
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(params)]) == 0
    assert read_record(tmp_path / "out", "split.patients")["data"]["method"] == "source_split_column"
    assert list(_splits(tmp_path)["split"]) == [r[2] for r in rows]


@pytest.mark.parametrize("rows, expected", [
    ([(1, "a", "train"), (0, "b", "train"), (1, "c", "val"), (0, "d", "val"), (0, "e", "test"), (0, "f", "test")],
     "split 'test' has no positive image"),
    ([(1, "a", "train"), (0, "a", "test"), (1, "c", "val"), (0, "d", "val"), (1, "e", "test"), (0, "f", "train")],
     "patient 'a' in more than one split"),
])
def test_split_errors(tmp_path, capsys, rows, expected):
    params = _params(tmp_path)
    _cohort(tmp_path, _folder(tmp_path, rows), params)
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err
    assert not (tmp_path / "out" / "cohort" / "splits.csv").exists()
    assert not (tmp_path / "out" / "evidence" / "split.patients.json").exists()


@pytest.mark.parametrize("fractions", ["{train: 0.7, val: 0.2, test: 0.2}", "{train: 0.8, test: 0.2}",
                                       "{train: 1.0, val: 0, test: 0}"])
def test_bad_fractions(tmp_path, capsys, fractions):
    params = _params(tmp_path, fractions=fractions)
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "split.fractions" in err


def test_unreadable_manifest_is_one_error_line(tmp_path, capsys):
    """The manifest is read through eda.dataset.read_manifest: a bad label is named, no traceback."""
    rows = [(1, "a", "train"), (0, "b", "train"), (1, "c", "val"), (0, "d", "val"), (1, "e", "test"), (0, "f", "test")]
    params = _params(tmp_path)
    _cohort(tmp_path, _folder(tmp_path, rows), params)
    path = tmp_path / "out" / "cohort" / "manifest.csv"
    m = _manifest(tmp_path)
    m["pneumonia"] = m["pneumonia"].astype(str)
    m.loc[2, "pneumonia"] = "yes"
    m.to_csv(path, index=False)
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "row 4: column pneumonia" in err and "\n" not in err
    assert not (tmp_path / "out" / "cohort" / "splits.csv").exists()


def _val_counts(tmp_path) -> dict:
    """Val-split counts computed here from splits.csv and the manifest, independently of eda.split."""
    s, m = _splits(tmp_path), _manifest(tmp_path)
    val = s[s["split"] == "val"].merge(m[["image_id", "pneumonia"]], on="image_id")
    pos, neg = val[val["pneumonia"].astype(int) == 1], val[val["pneumonia"].astype(int) == 0]
    return {"positives": len(pos), "negatives": len(neg), "positive_patients": pos["patient_id"].nunique(),
            "negative_patients": neg["patient_id"].nunique()}


def test_validation_adequacy_is_recorded_when_met(tmp_path):
    params = _params(tmp_path, adequacy="  min_val_positives: 2\n  min_val_negatives: 5\n")
    _cohort(tmp_path, "demo", params)
    assert split.main(["--out", str(tmp_path / "out"), "--params", str(params)]) == 0
    got = read_record(tmp_path / "out", "split.patients")["data"]["validation_adequacy"]
    counts = _val_counts(tmp_path)
    assert counts["positives"] >= 2 and counts["negatives"] >= 5
    assert got == {"unit": "images", **counts, "min_positives": 2, "min_negatives": 5,
                   "allow_inadequate": False, "adequate": True}


def test_validation_below_minimum_stops_and_proceeds_only_when_allowed(tmp_path, capsys):
    """60 demo patients: the val split holds a handful of positives, below the default minimum of 20."""
    strict = _params(tmp_path, adequacy="", name="strict.yaml")
    _cohort(tmp_path, "demo", strict)
    out = tmp_path / "out"
    assert split.main(["--out", str(out), "--params", str(strict)]) == 2
    err = capsys.readouterr().err.strip()
    assert not (out / "cohort" / "splits.csv").exists() and not (out / "evidence" / "split.patients.json").exists()
    allowed = _params(tmp_path, adequacy="  allow_inadequate_val: true\n", name="allowed.yaml")
    assert split.main(["--out", str(out), "--params", str(allowed)]) == 0
    counts = _val_counts(tmp_path)
    assert counts["positives"] < 20
    assert err.startswith("error: ") and "\n" not in err
    assert f"holds {counts['positives']} pneumonia images (minimum split.min_val_positives 20)" in err
    assert "larger cohort" in err and "split.fractions" in err and "split.allow_inadequate_val: true" in err
    got = read_record(out, "split.patients")["data"]["validation_adequacy"]
    assert got["adequate"] is False and got["allow_inadequate"] is True
    assert (got["positives"], got["negatives"], got["min_positives"], got["min_negatives"]) == (
        counts["positives"], counts["negatives"], 20, 20)
    assert "not estimable from the data" in got["reason"]


def test_nih_sample_validation_split_is_too_small_for_its_decisions(tmp_path, nih_dir, capsys):
    """The 1,000-image NIH sample: its val split holds a couple of pneumonia images. The split stage
    stops with the counts and the fixes, and proceeds with the explicit parameter."""
    strict = _params(tmp_path, adequacy="", name="strict.yaml")
    params = tmp_path / "nih.yaml"
    params.write_text(strict.read_text().replace("  nih: {max_age_years: 100}\n", "  nih:\n    max_age_years: 100\n"
                      "    label_file_preference: [Data_Entry_2017_v2020.csv.gz]\n"))
    _cohort(tmp_path, nih_dir, params)
    out = tmp_path / "out"
    assert split.main(["--out", str(out), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert not (out / "evidence" / "split.patients.json").exists()
    allowed = tmp_path / "nih_allowed.yaml"
    allowed.write_text(params.read_text() + "  allow_inadequate_val: true\n")
    assert split.main(["--out", str(out), "--params", str(allowed)]) == 0
    counts = _val_counts(tmp_path)
    assert 1 <= counts["positives"] <= 5 and counts["negatives"] >= 20
    assert f"holds {counts['positives']} pneumonia images (minimum split.min_val_positives 20)" in err
    assert "non-pneumonia images (minimum" not in err                    # the negatives are enough
    rec = read_record(out, "split.patients")
    assert rec["data"]["rows_split"] == 1000 and rec["synthetic"] is False
    v = rec["data"]["validation_adequacy"]
    assert (v["positives"], v["positive_patients"], v["adequate"]) == (
        counts["positives"], counts["positive_patients"], False)
