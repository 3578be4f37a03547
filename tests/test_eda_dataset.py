"""eda.dataset against independent pandas computations on the real NIH label file."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from bench.eda import manifest_from_label_file
from eda import dataset
from evidence.manifest import ManifestError, check_manifest, read_manifest


@pytest.fixture(scope="module")
def label_file(nih_metadata):
    return nih_metadata / "Data_Entry_2017_v2020.csv.gz"


@pytest.fixture(scope="module")
def raw(label_file):
    return pd.read_csv(label_file)


@pytest.fixture(scope="module")
def described(label_file):
    manifest = check_manifest(manifest_from_label_file(label_file))
    return dataset.describe(manifest, None)[0]


def test_counts_match_published_facts(described):
    assert described["counts"] == {"images": 112120, "patients": 30805, "images_with_pixels": 0}
    assert described["prevalence"]["pneumonia_images"] == 1431
    assert described["prevalence"]["pneumonia_patients"] == 1008


def test_images_per_patient_and_follow_up(described, raw):
    per_patient = raw.groupby("Patient ID").size()
    ipp = described["images_per_patient"]
    assert ipp["mean"] == pytest.approx(per_patient.mean())
    assert ipp["median"] == per_patient.median()
    assert ipp["max"] == per_patient.max()
    assert sum(d["patients"] for d in ipp["distribution"]) == 30805
    assert ipp["distribution"][0] == {"images": "1", "patients": int((per_patient == 1).sum())}
    assert described["follow_up"]["images_follow_up_gt_0"] == int((raw["Follow-up #"] > 0).sum())
    assert described["follow_up"]["patients_with_more_than_one_image"] == int((per_patient > 1).sum())


def test_prevalence_interval_is_statsmodels_wilson(described):
    low, high = proportion_confint(1431, 112120, alpha=0.05, method="wilson")
    got = described["prevalence"]["per_image"]
    assert got["estimate"] == pytest.approx(1431 / 112120)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))
    assert got["method"] == "wilson" and got["n"] == 112120
    low, high = proportion_confint(1008, 30805, alpha=0.05, method="wilson")
    assert (described["prevalence"]["per_patient"]["ci_low"],
            described["prevalence"]["per_patient"]["ci_high"]) == pytest.approx((low, high))


def test_findings_and_cooccurrence(described, raw):
    exploded = raw.assign(f=raw["Finding Labels"].str.split("|")).explode("f")
    counts = exploded["f"].value_counts()
    pneu_ids = raw.loc[raw["Finding Labels"].str.contains("Pneumonia"), "Image Index"]
    with_pneu = exploded[exploded["Image Index"].isin(pneu_ids)]["f"].value_counts()
    table = {r["finding"]: r for r in described["findings"]}
    assert len(table) == 15
    for name, row in table.items():
        assert row["images"] == counts.get(name, 0), name
        assert row["with_pneumonia"] == with_pneu.get(name, 0), name
    assert table["Pneumonia"]["with_pneumonia"] == 1431
    alone = (raw["Finding Labels"] == "Pneumonia").sum()
    assert described["pneumonia_as_only_finding"] == alone


def test_age_sex_and_view(described, raw):
    age = raw["Patient Age"]
    overall = described["age_years"]["overall"]
    assert overall["n"] == 112120
    assert overall["mean"] == pytest.approx(age.mean())
    assert overall["sd"] == pytest.approx(age.std())
    assert (overall["q1"], overall["median"], overall["q3"]) == tuple(age.quantile([0.25, 0.5, 0.75]))
    assert overall["max"] == 95
    female = described["age_years"]["by_sex"]["F"]
    assert female["mean"] == pytest.approx(age[raw["Patient Gender"] == "F"].mean())
    pneu = raw["Finding Labels"].str.contains("Pneumonia")
    assert described["age_years"]["by_label"]["pneumonia"]["median"] == age[pneu].median()
    tab = pd.crosstab(pneu, raw["View Position"])
    by_label = described["view"]["by_label"]
    assert by_label["pneumonia"]["AP"]["images"] == tab.loc[True, "AP"]
    assert by_label["no_pneumonia"]["PA"]["images"] == tab.loc[False, "PA"]
    assert described["sex"]["images"]["F"]["images"] == (raw["Patient Gender"] == "F").sum()
    patients_f = raw.drop_duplicates("Patient ID")["Patient Gender"].eq("F").sum()
    assert described["sex"]["patients"]["F"]["patients"] == patients_f


def test_geometry(described, raw):
    geo = described["geometry"]
    assert geo["original_size_px"]["width"]["median"] == raw.iloc[:, 7].median()
    assert geo["pixel_spacing_mm"]["max"] == pytest.approx(raw.iloc[:, 9].max())


def _tiny() -> pd.DataFrame:
    rows = [  # image, patient, pneumonia, age, sex, view, split
        ("a.png", "1", 1, 30.0, "F", "AP", "train"), ("b.png", "1", 0, 31.0, "F", "PA", "train"),
        ("c.png", "2", 0, 50.0, "M", "PA", "train"), ("d.png", "3", 1, 70.0, "M", "AP", "test"),
        ("e.png", "4", 0, np.nan, "F", "PA", "test"), ("f.png", "5", 0, 20.0, "M", "PA", "val"),
    ]
    frame = pd.DataFrame(rows, columns=["image_id", "patient_id", "pneumonia", "age_years", "sex", "view", "split"])
    frame["finding_labels"] = np.where(frame["pneumonia"] == 1, "Pneumonia", "No Finding")
    for c in ("path", "sha256", "source"):
        frame[c] = ""
    for c in ("follow_up", "orig_width", "orig_height", "pixel_spacing"):
        frame[c] = np.nan
    return frame


def test_split_table_hand_computed():
    frame = _tiny()
    splits = frame[["image_id", "patient_id", "split"]]
    data, _ = dataset.describe(check_manifest(frame.assign(split="")), splits)
    train, test, val = (data["splits"][k] for k in ("train", "test", "val"))
    assert (train["images"], train["patients"], train["pneumonia_images"]) == (3, 2, 1)
    assert train["median_age_years"] == 31.0
    assert train["percent_female"] == pytest.approx(200 / 3)
    assert train["percent_ap"] == pytest.approx(100 / 3)
    assert test["median_age_years"] == 70.0 and test["pneumonia_patients"] == 1
    assert val["prevalence"]["estimate"] == 0.0
    assert data["splits"]["unassigned_images"] == 0
    assert data["geometry"]["original_size_px"]["estimable"] is False
    assert data["age_years"]["unknown"] == 1


def test_ci_level_is_used_for_every_interval():
    frame = check_manifest(_tiny())
    data, _ = dataset.describe(frame, level=0.9)
    got = data["prevalence"]["per_image"]
    low, high = proportion_confint(2, 6, alpha=0.1, method="wilson")
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high)) and got["ci_level"] == 0.9
    assert data["prevalence"]["per_patient"]["ci_level"] == 0.9
    assert data["splits"]["train"]["prevalence"]["ci_level"] == 0.9


def test_bad_manifest_messages(tmp_path):
    frame = _tiny().drop(columns=["view"])
    with pytest.raises(ManifestError, match="missing column.*view"):
        check_manifest(frame)
    bad = _tiny().astype({"age_years": object})
    bad.loc[2, "age_years"] = "060Y"
    with pytest.raises(ManifestError, match="row 4: column age_years"):
        check_manifest(bad)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "none.csv")


def test_summary_single_value_has_no_sd():
    s = dataset.summary(pd.Series([5.0, np.nan]))
    assert s["n"] == 1 and s["sd"]["estimable"] is False
    assert dataset.summary(pd.Series([], dtype=float))["estimable"] is False
