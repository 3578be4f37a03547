"""Data-quality findings (record `eda.quality`): re-reported from the cohort, plus those visible
only with the whole manifest or the pixels (patient consistency, label consistency, files).

A finding is `{id, description, n_rows, example_image_ids, decision, applied, origin}`;
`decision` is exclude, keep or correct, `applied` says where downstream it takes effect.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import FINDINGS, NO_FINDING, finding_matrix

EXAMPLES = 5
DEFAULT_MAX_AGE_SPAN_YEARS = 25


def finding(fid: str, description: str, mask, ids: pd.Series, decision: str, applied: str,
            origin: str = "eda.quality") -> dict:
    mask = np.asarray(mask, dtype=bool)
    return {"id": fid, "description": description, "n_rows": int(mask.sum()),
            "example_image_ids": [str(x) for x in ids.to_numpy()[mask][:EXAMPLES]],
            "decision": decision, "applied": applied, "origin": origin}


def patient_consistency(frame: pd.DataFrame, max_age_span_years: float = DEFAULT_MAX_AGE_SPAN_YEARS) -> list[dict]:
    """Sex that changes within a patient; age that falls as follow-up rises; implausible age spans."""
    ids = frame["image_id"]
    group = frame.groupby("patient_id", sort=False)
    known_sex = frame["sex"].where(frame["sex"].isin(["M", "F"]))
    sex_mixed = known_sex.groupby(frame["patient_id"], sort=False).transform("nunique") > 1

    ordered = frame.sort_values(["patient_id", "follow_up"], kind="stable")
    pid = ordered["patient_id"]
    prev_age = ordered["age_years"].fillna(-np.inf).groupby(pid, sort=False).cummax().groupby(
        pid, sort=False).shift()
    falls = (ordered["age_years"] < prev_age).reindex(frame.index, fill_value=False)

    age = frame["age_years"]
    span = group["age_years"].transform("max") - group["age_years"].transform("min")
    wide = span > max_age_span_years
    return [
        finding("sex_inconsistent_within_patient",
                "patient has images recorded with both sexes (all of that patient's images counted)",
                sex_mixed, ids, "keep",
                "kept; sex-stratified subgroup analyses count the image's own recorded sex"),
        finding("age_decreases_with_follow_up",
                "recorded age is lower than at an earlier follow-up of the same patient",
                falls.to_numpy() & age.notna().to_numpy(), ids, "keep",
                "kept; age-stratified analyses use the age recorded on the image"),
        finding("age_span_within_patient_implausible",
                f"ages of one patient span more than {max_age_span_years:g} years",
                wide.fillna(False), ids, "keep",
                "kept; flagged for review, ages used as recorded"),
    ]


def label_consistency(frame: pd.DataFrame, matrix: pd.DataFrame | None = None) -> list[dict]:
    """Label flag versus finding text, 'No Finding' mixed with findings, unknown names, duplicates.

    `matrix` is `dataset.finding_matrix(frame["finding_labels"])` when the caller has it already."""
    ids = frame["image_id"]
    if matrix is None:
        matrix = finding_matrix(frame["finding_labels"])
    flag = frame["pneumonia"].to_numpy() == 1
    text = matrix["Pneumonia"].to_numpy()
    n_findings = matrix[list(FINDINGS)].sum(axis=1).to_numpy()
    known = set(FINDINGS) | {NO_FINDING}
    odd = [u for u in frame["finding_labels"].unique() if isinstance(u, str) and u and set(u.split("|")) - known]
    return [
        finding("pneumonia_flag_disagrees_with_finding_labels",
                "pneumonia column disagrees with the presence of 'Pneumonia' in finding_labels",
                flag != text, ids, "correct", "eda.cohort must derive pneumonia from finding_labels; rerun it"),
        finding("no_finding_with_findings", "'No Finding' listed together with a finding",
                matrix[NO_FINDING].to_numpy() & (n_findings > 0), ids, "keep",
                "kept; the pneumonia label uses only the 'Pneumonia' finding"),
        finding("unknown_finding_names",
                "finding_labels holds a name that is not one of the 14 NIH findings or 'No Finding' "
                "(empty: none recorded, as for a folder source, which records pneumonia only)",
                frame["finding_labels"].isin(odd), ids, "keep",
                "kept; counted under no known finding in eda.dataset"),
        finding("duplicate_image_id", "image_id appears more than once",
                frame["image_id"].duplicated(keep=False), ids, "exclude",
                "eda.cohort must keep one row per image; rerun it"),
    ]


def missing_fields(frame: pd.DataFrame) -> list[dict]:
    ids = frame["image_id"]
    return [
        finding("age_unknown", "age missing, unparseable or excluded as impossible by the cohort stage",
                frame["age_years"].isna(), ids, "keep",
                "kept for label statistics; excluded from age summaries and age subgroups"),
        finding("sex_unknown", "sex not M or F", ~frame["sex"].isin(["M", "F"]), ids, "keep",
                "kept; excluded from sex summaries and sex subgroups"),
        finding("view_unknown", "view position not AP or PA", ~frame["view"].isin(["AP", "PA"]), ids, "keep",
                "kept; excluded from view summaries and view subgroups"),
        finding("image_not_present", "image listed in the label file but no file in the data folder",
                frame["path"] == "", ids, "keep",
                "kept for label statistics; stages that read pixels use only rows with a path"),
    ]


def from_pixels(frame: pd.DataFrame, pixel: dict) -> list[dict]:
    """Findings from `eda.pixels` (its quality input): files listed but missing or unreadable;
    colour storage converted to grey (equal channels, true colour by luma, transparency)."""
    ids = frame["image_id"]
    problems, n_checked = pixel["problems"], pixel["n_checked"]
    missing = ids.isin([p["image_id"] for p in problems if p["problem"] == "missing"])
    unreadable = ids.isin([p["image_id"] for p in problems if p["problem"] == "unreadable"])
    same_as_model = "(eda.pixels; the model preprocessing must do the same)"
    return [
        finding("image_file_missing", "manifest path given but the file does not exist", missing, ids, "exclude",
                "excluded from pixel statistics; eda.split leaves these rows out of splits.csv", "eda.pixels"),
        finding("image_file_unreadable",
                f"file exists but cannot be decoded as an image (checked on the {n_checked} sampled images)",
                unreadable, ids, "exclude",
                "excluded from pixel statistics; stages that read pixels must skip these rows", "eda.pixels"),
        finding("colour_storage_converted_to_grayscale",
                "stored as opaque RGB/RGBA with equal colour channels (sampled images); the grey level is kept",
                ids.isin(pixel["converted_to_l"]), ids, "correct",
                f"converted to single-channel L when read {same_as_model}", "eda.pixels"),
        finding("true_colour_converted_by_luma",
                "stored as opaque RGB/RGBA with unequal colour channels (sampled images); the colour is lost",
                ids.isin(pixel["converted_by_luma"]), ids, "correct",
                f"converted to single-channel L by ITU-R 601 luma when read {same_as_model}; "
                "review that these files are radiographs", "eda.pixels"),
        finding("transparency_ignored",
                "stored as RGBA with alpha not fully opaque (sampled images); the alpha channel is ignored",
                ids.isin(pixel["transparent"]), ids, "correct",
                f"alpha dropped and the colour channels converted to single-channel L when read {same_as_model}",
                "eda.pixels"),
    ]


def from_cohort(cohort_findings: list[dict]) -> list[dict]:
    """The cohort stage's findings, re-reported unchanged with their origin."""
    return [{**f, "origin": "cohort.manifest"} for f in cohort_findings or []]


# Checks of this module -> the cohort stage's id for the same data problem; when the cohort
# reported it, only the cohort's finding is kept (each problem is reported once).
REPORTED_BY_COHORT = {
    "image_not_present": "listed_image_missing",
    "sex_inconsistent_within_patient": "inconsistent_sex",
    "duplicate_image_id": "duplicate_image_id",
    "sex_unknown": "sex_unrecognised",
    "view_unknown": "view_unrecognised",
}


def assess(frame: pd.DataFrame, cohort_findings: list[dict], pixel: dict | None,
           max_age_span_years: float = DEFAULT_MAX_AGE_SPAN_YEARS, matrix: pd.DataFrame | None = None) -> dict:
    """`eda.quality` data: findings with rows affected, and the checks that found nothing."""
    cohort_ids = {f.get("id") for f in cohort_findings or []}
    own = (patient_consistency(frame, max_age_span_years) + label_consistency(frame, matrix)
           + missing_fields(frame))
    if pixel is not None:
        own += from_pixels(frame, pixel)
    own = [c for c in own if c["id"] not in REPORTED_BY_COHORT or REPORTED_BY_COHORT[c["id"]] not in cohort_ids]
    checks = from_cohort(cohort_findings) + own
    found = [c for c in checks if c["n_rows"] > 0]
    return {
        "n_images": len(frame),
        "findings": found,
        "checks_without_findings": [c["id"] for c in checks if c["n_rows"] == 0],
        "rows_excluded_downstream": int(sum(c["n_rows"] for c in found
                                            if c["decision"] == "exclude" and c["origin"] != "cohort.manifest")),
    }
