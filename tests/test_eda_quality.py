"""eda.quality: findings counted on frames built here and on the real Kaggle 2017 label file."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench.eda import manifest_from_label_file
from eda import dataset, quality


def frame(rows):
    cols = ["image_id", "patient_id", "follow_up", "age_years", "sex", "pneumonia", "finding_labels"]
    f = pd.DataFrame(rows, columns=cols)
    f["path"], f["view"], f["split"] = "", "PA", ""
    return f


def by_id(findings):
    return {f["id"]: f for f in findings}


def test_patient_consistency_hand_built():
    f = frame([
        ("a0", "1", 0, 40.0, "M", 0, "No Finding"), ("a1", "1", 1, 38.0, "F", 0, "No Finding"),
        ("a2", "1", 2, 41.0, "M", 0, "No Finding"), ("b0", "2", 0, 20.0, "F", 0, "No Finding"),
        ("b1", "2", 1, 60.0, "F", 0, "No Finding"), ("c0", "3", 0, np.nan, "", 0, "No Finding"),
    ])
    got = by_id(quality.patient_consistency(f, max_age_span_years=25))
    assert got["sex_inconsistent_within_patient"]["n_rows"] == 3
    assert got["age_decreases_with_follow_up"]["example_image_ids"] == ["a1"]
    assert got["age_span_within_patient_implausible"]["n_rows"] == 2
    assert {g["decision"] for g in got.values()} <= {"keep", "exclude", "correct"}


def test_age_fall_after_a_missing_age_is_flagged():
    f = frame([
        ("a0", "1", 0, 50.0, "M", 0, "No Finding"), ("a1", "1", 1, np.nan, "M", 0, "No Finding"),
        ("a2", "1", 2, 40.0, "M", 0, "No Finding"), ("b0", "2", 0, np.nan, "F", 0, "No Finding"),
        ("b1", "2", 1, 30.0, "F", 0, "No Finding"),
    ])
    got = by_id(quality.patient_consistency(f))["age_decreases_with_follow_up"]
    assert got["example_image_ids"] == ["a2"] and got["n_rows"] == 1


def test_label_consistency_hand_built():
    f = frame([
        ("a", "1", 0, 40.0, "M", 1, "Effusion"), ("b", "2", 0, 40.0, "M", 0, "No Finding|Mass"),
        ("c", "3", 0, 40.0, "M", 0, "Pneumonitis"), ("c", "3", 0, 40.0, "M", 1, "Pneumonia"),
    ])
    got = by_id(quality.label_consistency(f))
    assert got["pneumonia_flag_disagrees_with_finding_labels"]["example_image_ids"] == ["a"]
    assert got["no_finding_with_findings"]["n_rows"] == 1
    assert got["unknown_finding_names"]["example_image_ids"] == ["c"]
    assert got["duplicate_image_id"]["n_rows"] == 2


def test_assess_merges_cohort_and_pixel_findings():
    f = frame([("a", "1", 0, 40.0, "M", 0, "No Finding"), ("b", "2", 0, np.nan, "F", 0, "No Finding")])
    f.loc[0, "path"] = "/x/a.png"
    cohort = [{"id": "age_impossible", "description": "age > 100", "n_rows": 1, "example_image_ids": ["b"],
               "decision": "exclude", "applied": "age set empty", }]
    pixel = {"problems": [{"image_id": "a", "path": "/x/a.png", "problem": "missing", "reason": "gone"}],
             "converted_to_l": [], "converted_by_luma": [], "transparent": [], "n_checked": 0}
    data = quality.assess(f, cohort, pixel)
    got = by_id(data["findings"])
    assert got["age_impossible"]["origin"] == "cohort.manifest"
    assert got["image_file_missing"]["n_rows"] == 1 and got["image_file_missing"]["decision"] == "exclude"
    assert got["age_unknown"]["n_rows"] == 1 and got["image_not_present"]["n_rows"] == 1
    assert "duplicate_image_id" in data["checks_without_findings"]
    assert data["rows_excluded_downstream"] == 1


def test_kaggle_2017_ages_fall_with_follow_up(nih_metadata):
    """The Kaggle 2017 file records ages that fall with follow-up; the 2020 release has none."""
    m = manifest_from_label_file(nih_metadata / "Data_Entry_2017_kaggle.csv.gz").head(6000)
    got = by_id(quality.patient_consistency(m))["age_decreases_with_follow_up"]["n_rows"]
    expected = 0
    for _, g in m.sort_values(["patient_id", "follow_up"], kind="stable").groupby("patient_id"):
        top = -np.inf
        for age in g["age_years"]:
            expected += age < top
            top = max(top, age)
    assert got == expected > 0
    m2020 = manifest_from_label_file(nih_metadata / "Data_Entry_2017_v2020.csv.gz")
    assert by_id(quality.patient_consistency(m2020))["age_decreases_with_follow_up"]["n_rows"] == 0


def test_each_problem_reported_once():
    f = frame([("a", "1", 0, 40.0, "M", 0, "No Finding"), ("b", "1", 1, 41.0, "F", 0, "No Finding"),
               ("c", "2", 0, 40.0, "", 0, "No Finding")])
    f.loc[0, "view"] = ""

    def cohort_finding(fid, ids):
        return {"id": fid, "description": fid, "n_rows": len(ids), "example_image_ids": ids,
                "decision": "keep", "applied": "kept"}

    cohort = [cohort_finding("inconsistent_sex", ["a", "b"]), cohort_finding("duplicate_image_id", ["d"]),
              cohort_finding("sex_unrecognised", ["c"]), cohort_finding("view_unrecognised", ["a"]),
              cohort_finding("listed_image_missing", ["a", "b", "c"])]
    data = quality.assess(f, cohort, None)
    reported = [c["id"] for c in data["findings"]] + data["checks_without_findings"]
    assert len(reported) == len(set(reported))
    for own, theirs in quality.REPORTED_BY_COHORT.items():
        assert theirs in reported and own not in reported or own == theirs
    assert by_id(data["findings"])["inconsistent_sex"]["origin"] == "cohort.manifest"
    # without the cohort's findings the stage's own checks report them
    alone = quality.assess(f, [], None)
    assert by_id(alone["findings"])["sex_inconsistent_within_patient"]["n_rows"] == 2
    assert "duplicate_image_id" in alone["checks_without_findings"]


def test_matrix_passed_in_gives_the_same_findings():
    f = frame([("a", "1", 0, 40.0, "M", 1, "Effusion"), ("b", "2", 0, 40.0, "M", 0, "No Finding|Mass")])
    matrix = dataset.finding_matrix(f["finding_labels"])
    assert quality.label_consistency(f, matrix) == quality.label_consistency(f)


def test_fixture_is_the_adapter_manifest(nih_metadata):
    """The EDA tests run on the manifest the NIH adapter makes: padded patient ids, impossible ages removed."""
    m = manifest_from_label_file(nih_metadata / "Data_Entry_2017_kaggle.csv.gz")
    raw = pd.read_csv(nih_metadata / "Data_Entry_2017_kaggle.csv.gz", usecols=["Patient ID", "Patient Age"])
    assert (m["patient_id"].str.len() == 8).all() and m["patient_id"].iloc[0] == f"{raw['Patient ID'].iloc[0]:08d}"
    assert (raw["Patient Age"] > 100).any() and not (m["age_years"] > 100).any()
