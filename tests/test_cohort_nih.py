"""NIH source: releases, ages, image mapping and data-quality findings, checked against pandas."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eda import cohort
from evidence import read_record

HEADER_2020 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
               "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


def _params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("cohort:\n  nih:\n    max_age_years: 100\n    label_file_preference: "
                 "[Data_Entry_2017_v2020.csv.gz, Data_Entry_2017_v2020.csv, Data_Entry_2017_kaggle.csv.gz, "
                 "sample_labels.csv]\n")
    return p


def _cohort(data, out, params):
    rc = cohort.main(["--data", str(data), "--out", str(out), "--params", str(params)])
    assert rc == 0
    m = pd.read_csv(out / "cohort" / "manifest.csv", dtype={"patient_id": str, "image_id": str},
                    keep_default_na=False)
    return m, read_record(out, "cohort.manifest")


def _finding(record, fid):
    found = [f for f in record["data"]["quality_findings"] if f["id"] == fid]
    return found[0] if found else None


@pytest.fixture(scope="module")
def v2020(nih_metadata):
    """Independent read of the 2020 label file with plain pandas."""
    return pd.read_csv(nih_metadata / "Data_Entry_2017_v2020.csv.gz")


@pytest.fixture(scope="module")
def full(nih_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nih")
    return _cohort(nih_dir, tmp / "out", _params(tmp))


def test_full_nih_counts_match_independent_pandas(full, v2020):
    m, rec = full
    positive = v2020["Finding Labels"].str.split("|").map(lambda f: "Pneumonia" in f)
    assert len(m) == len(v2020) == 112_120
    assert m["patient_id"].nunique() == v2020["Patient ID"].nunique() == 30_805
    assert int(m["pneumonia"].sum()) == int(positive.sum()) == 1_431
    c = rec["data"]["counts"]
    assert (c["images"], c["patients"], c["pneumonia_images"]) == (112_120, 30_805, 1_431)
    assert c["pneumonia_patients"] == v2020.loc[positive, "Patient ID"].nunique() == 1_008
    joined = m.set_index("image_id").join(v2020.set_index("Image Index"))
    assert (joined["age_years"].astype(float) == joined["Patient Age"].astype(float)).all()
    assert (joined["orig_width"].astype(int) == joined["OriginalImage[Width"]).all()
    assert np.allclose(joined["pixel_spacing"].astype(float), joined["OriginalImagePixelSpacing[x"])
    assert (joined["view"] == joined["View Position"]).all()


def test_full_nih_source_facts_and_release_differences(full, nih_metadata):
    _, rec = full
    src = rec["data"]["source"]
    assert src["release"] == "nih-2020" and src["kind"] == "nih" and rec["synthetic"] is False
    assert src["label_file"].endswith("Data_Entry_2017_v2020.csv.gz") and len(src["label_files_found"]) == 3
    import hashlib
    assert src["label_file_sha256"] == hashlib.sha256((nih_metadata / "Data_Entry_2017_v2020.csv.gz").read_bytes()).hexdigest()
    diffs = {d["release"]: d for d in rec["data"]["release_differences"]}
    assert diffs["nih-kaggle-2017"]["rows_common"] == 112_120
    assert diffs["nih-kaggle-2017"]["rows_differing"]["finding_labels"] == 0
    assert diffs["nih-kaggle-2017"]["rows_differing"]["age_years"] >= 16
    assert diffs["nih-sample"]["rows_common"] == 5_606
    assert diffs["nih-sample"]["rows_differing"]["finding_labels"] == 10
    assert len(rec["deps"]["files"]) == 3
    kaggle = pd.read_csv(nih_metadata / "Data_Entry_2017_kaggle.csv.gz")
    both = pd.read_csv(nih_metadata / "Data_Entry_2017_v2020.csv.gz").merge(kaggle, on="Image Index")
    differ = ((both["Patient Age_x"] != both["Patient Age_y"])
              | (both["Finding Labels_x"] != both["Finding Labels_y"])).sum()
    assert diffs["nih-kaggle-2017"]["rows_label_or_age_differ"] == differ
    assert _finding(rec, "label_release_disagreement_nih_kaggle_2017")["n_rows"] == differ


def test_full_nih_images_get_paths(full, nih_dir):
    m, rec = full
    ids = set(os.listdir(nih_dir / "images_64px"))
    assert len(ids) == 1000
    with_path = m[m["path"] != ""]
    assert set(with_path["image_id"]) == ids and rec["data"]["counts"]["images_with_pixels"] == 1000
    assert all(os.path.isfile(p) for p in with_path["path"])
    big = with_path.set_index("image_id").loc["00000013_003.png", "path"]
    assert "images_1024" in big                                   # the largest copy is preferred
    assert _finding(rec, "listed_image_missing")["n_rows"] == 112_120 - 1000
    assert _finding(rec, "image_in_several_folders")["n_rows"] == 3


def test_kaggle_file_alone(nih_metadata, tmp_path, v2020):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(nih_metadata / "Data_Entry_2017_kaggle.csv.gz", data / "Data_Entry_2017_kaggle.csv.gz")
    m, rec = _cohort(data, tmp_path / "out", _params(tmp_path))
    assert rec["data"]["source"]["release"] == "nih-kaggle-2017"
    f = _finding(rec, "impossible_age")
    assert f["n_rows"] == 16 and f["decision"] == "keep"
    raw = pd.read_csv(nih_metadata / "Data_Entry_2017_kaggle.csv.gz")
    assert (raw["Patient Age"] > 100).sum() == 16
    assert set(f["example_image_ids"]) <= set(raw.loc[raw["Patient Age"] > 100, "Image Index"])
    assert m["age_years"].replace("", np.nan).astype(float).max() <= 100
    assert (m["age_years"] == "").sum() == 16
    joined = m.set_index("image_id").join(v2020.set_index("Image Index"))
    assert (joined["finding_labels"] == joined["Finding Labels"]).all()
    assert (joined["orig_height"].astype(int) == joined["Height]"]).all()


def test_sample_labels_age_units(nih_metadata, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(nih_metadata / "sample_labels.csv", data / "sample_labels.csv")
    m, rec = _cohort(data, tmp_path / "out", _params(tmp_path))
    raw = pd.read_csv(nih_metadata / "sample_labels.csv", dtype=str)
    age = m.set_index("image_id")["age_years"]
    months = raw.loc[raw["Patient Age"] == "013M", "Image Index"].iloc[0]
    days = raw.loc[raw["Patient Age"] == "001D", "Image Index"].iloc[0]
    impossible = raw.loc[raw["Patient Age"] == "411Y", "Image Index"].iloc[0]
    assert float(age[months]) == pytest.approx(13 / 12) and float(age[days]) == pytest.approx(1 / 365.25)
    assert age[impossible] == ""
    assert _finding(rec, "age_units")["n_rows"] == 2 and _finding(rec, "age_units")["decision"] == "correct"
    assert _finding(rec, "impossible_age")["example_image_ids"] == [impossible]
    assert rec["data"]["source"]["release"] == "nih-sample" and len(m) == 5_606
    assert int(m["pneumonia"].sum()) == 62


def _png(path, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), 100, np.uint8)).save(path)


def test_small_nih_folder_quality_findings(tmp_path):
    data = tmp_path / "data"
    rows = ["00000001_000.png,Pneumonia,0,1,45,M,PA,2500,2048,0.143,0.143",
            "00000001_001.png,No Finding,1,1,46,F,AP,2500,2048,0.143,0.143",      # sex differs
            "00000001_001.png,No Finding,1,1,46,F,AP,2500,2048,0.143,0.143",      # duplicate
            "00000002_000.png,Effusion,0,2,45X,M,PA,2500,2048,0.143,0.143",       # unknown age unit
            "00000003_000.png,No Finding,0,3,30,F,PA,2500,2048,0.143,0.143"]      # image missing
    (data / "meta").mkdir(parents=True)
    (data / "meta" / "Data_Entry_2017_v2020.csv").write_text(HEADER_2020 + "\n".join(rows) + "\n")
    for name, size in (("00000001_000.png", 8), ("00000001_001.png", 8), ("00000002_000.png", 8), ("99999999_000.png", 8)):
        _png(data / "images_001" / "images" / name, size)
    _png(data / "big" / "00000001_000.png", 16)
    m, rec = _cohort(data, tmp_path / "out", _params(tmp_path))
    assert len(m) == 4 and list(m["image_id"]).count("00000001_001.png") == 1
    assert _finding(rec, "duplicate_image_id")["n_rows"] == 1
    assert _finding(rec, "inconsistent_sex")["n_rows"] == 2
    assert _finding(rec, "age_unknown_unit")["example_image_ids"] == ["00000002_000.png"]
    assert _finding(rec, "listed_image_missing")["example_image_ids"] == ["00000003_000.png"]
    assert _finding(rec, "unlisted_image")["example_image_ids"] == ["99999999_000.png"]
    assert m.set_index("image_id").loc["00000001_000.png", "path"].endswith("big/00000001_000.png")
    assert rec["data"]["counts"]["images_with_pixels"] == 3
    assert rec["data"]["source"]["official_split_lists"] is False


def test_unknown_label_columns_error(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "Data_Entry_2017.csv").write_text("Image,Label\na.png,Pneumonia\n")
    rc = cohort.main(["--data", str(data), "--out", str(tmp_path / "out"), "--params", str(_params(tmp_path))])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err
    assert "expected" in err and "['Image', 'Label']" in err
    assert not (tmp_path / "out" / "cohort" / "manifest.csv").exists()
    assert not (tmp_path / "out" / "evidence").exists()


@pytest.mark.parametrize("data", ["not-a-source", "missing-folder/", "empty"])
def test_unknown_sources_error(tmp_path, capsys, data):
    (tmp_path / "empty").mkdir()
    arg = str(tmp_path / data) if data != "not-a-source" else data
    rc = cohort.main(["--data", arg, "--out", str(tmp_path / "out"), "--params", str(_params(tmp_path))])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "Data_Entry_2017" in err and "\n" not in err


@pytest.mark.parametrize("setting, key", [("max_age_years: old", "max_age_years"),
                                          ("label_file_preference: sample_labels.csv", "label_file_preference")])
def test_bad_nih_params(tmp_path, capsys, setting, key):
    data = tmp_path / "data"
    data.mkdir()
    (data / "sample_labels.csv").write_text("x\n")
    params = tmp_path / "params.yaml"
    params.write_text(f"cohort:\n  nih:\n    {setting}\n")
    rc = cohort.main(["--data", str(data), "--out", str(tmp_path / "out"), "--params", str(params)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and f"cohort.nih.{key}" in err


def test_corrupt_gzip_label_file(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "Data_Entry_2017_v2020.csv.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    rc = cohort.main(["--data", str(data), "--out", str(tmp_path / "out"), "--params", str(_params(tmp_path))])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "Data_Entry_2017_v2020.csv.gz" in err and "\n" not in err


def test_listing_survives_folder_symlink_loop(tmp_path):
    from eda.images import list_images
    _png(tmp_path / "a" / "x.png")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    assert list(list_images(tmp_path)) == ["x.png"] and len(list_images(tmp_path)["x.png"]) == 1
