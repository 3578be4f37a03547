"""Subgroup performance at the locked threshold: sex, age band, view, co-occurring findings.

Each group reports n, positives, prevalence, and sensitivity and specificity with Wilson
intervals. A group smaller than `min_subgroup_n`, or without one of the classes, gets
`estimable: false` with the reason, and its undefined metrics are not-estimable objects.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats

AGE_BANDS = (  # key, label, low (inclusive), high (exclusive)
    ("lt18", "<18", -np.inf, 18), ("18_40", "18-40", 18, 40), ("40_60", "40-60", 40, 60),
    ("60_80", "60-80", 60, 80), ("ge80", ">=80", 80, np.inf),
)
EXCLUDED_FINDINGS = {"Pneumonia", "No Finding", ""}


def group_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, *, label: str, min_n: int,
                  level: float) -> dict:
    """One subgroup's counts and Wilson sensitivity and specificity (score >= threshold is positive)."""
    conf = stats.confusion(labels, scores, threshold)
    tp, tn = conf["tp"], conf["tn"]
    n = int(len(labels))
    pos = tp + conf["fn"]
    row = {"label": label, "n": n, "positives": pos, "negatives": n - pos,
           "prevalence": float(pos / n) if n else stats.not_estimable("empty subgroup")}
    reason = None
    if n < min_n:
        reason = f"n = {n} is below min_subgroup_n = {min_n}"
    elif pos == 0 or pos == n:
        reason = f"one class only ({pos} positives of {n})"
    if reason:
        row.update(estimable=False, reason=reason)
    else:
        row["estimable"] = True
    row["sensitivity"] = (stats.proportion_ci(tp, pos, method="wilson", level=level)
                          if n >= min_n and pos else stats.not_estimable(reason or "no positives"))
    row["specificity"] = (stats.proportion_ci(tn, n - pos, method="wilson", level=level)
                          if n >= min_n and n - pos else stats.not_estimable(reason or "no negatives"))
    return row


def _findings(column: pd.Series) -> list[str]:
    found = set()
    for v in column.astype(str):
        found.update(f.strip() for f in v.split("|"))
    return sorted(found - EXCLUDED_FINDINGS)


def subgroups(df: pd.DataFrame, threshold: float, *, min_n: int, level: float) -> dict:
    """df: label, score, sex, age_years, view, finding_labels (one row per test image). Without a
    `finding_labels` column (e.g. DICOM headers) there is no `finding` group."""
    y = df["label"].to_numpy(dtype=int)
    s = df["score"].to_numpy(dtype=float)

    def g(mask, label):
        mask = np.asarray(mask, dtype=bool)
        return group_metrics(y[mask], s[mask], threshold, label=label, min_n=min_n, level=level)

    sex = df["sex"].fillna("").astype(str).str.upper()
    view = df["view"].fillna("").astype(str).str.upper()
    age = pd.to_numeric(df["age_years"], errors="coerce").to_numpy(dtype=float)
    out = {
        "sex": {"M": g(sex == "M", "male"), "F": g(sex == "F", "female"),
                "unknown": g(~sex.isin(["M", "F"]), "sex unknown")},
        "age_band": {k: g((age >= lo) & (age < hi), lab) for k, lab, lo, hi in AGE_BANDS},
        "view": {"AP": g(view == "AP", "AP"), "PA": g(view == "PA", "PA"),
                 "unknown": g(~view.isin(["AP", "PA"]), "view unknown")},
    }
    out["age_band"]["unknown"] = g(np.isnan(age), "age unknown")
    if "finding_labels" not in df.columns:
        return out
    fl = df["finding_labels"].fillna("").astype(str)
    sets = fl.str.split("|").apply(lambda xs: {x.strip() for x in xs})
    out["finding"] = {}
    for f in _findings(fl):
        has = sets.apply(lambda s, f=f: f in s).to_numpy(dtype=bool)
        out["finding"][f] = {"with": g(has, f"with {f}"), "without": g(~has, f"without {f}")}
    return out
