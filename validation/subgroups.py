"""Subgroup performance at the locked threshold: sex, age band, view, co-occurring findings.

Each group reports n, `n_positive`, `n_negative`, prevalence, its confusion counts, and
sensitivity and specificity with Wilson intervals. Sensitivity is estimated only in a group with
at least `min_positives` positives, specificity only with at least `min_negatives` negatives;
otherwise the metric is not estimable with the reason ("3 positives, fewer than the
pre-specified 10"): an interval on one or two cases says nothing about the device.

Age bands are half-open, [low, high) years, and lie inside the intended use (adults aged
`AGE_BAND_EDGES[0]` to `AGE_BAND_EDGES[-1]` years, as params `workflow.min_age_years` and
`max_age_years`; the last band is closed at the maximum). Images under the minimum age, over the
maximum or of unknown age are reported separately (`age_out_of_scope`), not as bands of the
device's population.

`heterogeneity` tests, per variable, whether sensitivity (and specificity) differ across its
estimable strata (`stats.homogeneity_test`: Fisher's exact test for two strata, the Pearson
chi-square test of homogeneity for three or more); "unknown" and out-of-scope strata are left
out. The tests are descriptive: one per variable and metric, without adjustment for multiplicity.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats

#: Edges of the age bands in years; the first and last are the intended use's age limits
#: (params `workflow.min_age_years`, `max_age_years`; a test ties them).
AGE_BAND_EDGES = (18, 40, 60, 80, 100)


def _age_bands() -> tuple[tuple[str, str, float, float], ...]:
    """(key, label, low, high): [low, high) years, the last band closed at the maximum age."""
    e = AGE_BAND_EDGES
    out = []
    for i, (lo, hi) in enumerate(zip(e[:-1], e[1:])):
        last = i == len(e) - 2
        out.append((f"{lo}_{hi}", f"{lo} to {hi} years" if last else f"{lo} to under {hi} years", lo, hi))
    return tuple(out)


AGE_BANDS = _age_bands()  # key, label, low (inclusive), high (exclusive; the last inclusive)
#: Age strata outside the intended use, reported apart from the bands.
AGE_OUT_OF_SCOPE = (
    ("under_min", "younger than the intended use"),
    ("over_max", "older than the intended use"),
    ("unknown", "age unknown"),
)
EXCLUDED_FINDINGS = {"Pneumonia", "No Finding", ""}
#: Variables whose strata are tested for heterogeneity (their "unknown" stratum left out).
TESTED_VARIABLES = ("sex", "age_band", "view")
#: Strata by a header value, when the frame has the column (the held-out set's DICOM headers):
#: (variable, the column of that name; label). One stratum per distinct value, and one for a missing value.
CATEGORICAL = (("site", "site"), ("manufacturer", "scanner manufacturer"))
HETEROGENEITY_STATEMENT = ("descriptive: one test per variable and metric across its estimable strata, "
                           "without adjustment for multiplicity; no claim rests on them")


def _metric(k: int, total: int, minimum: int, kind: str, level: float) -> dict:
    if total < minimum:
        word = kind if total != 1 else kind[:-1]
        return stats.not_estimable(f"{total} {word}, fewer than the pre-specified {minimum}")
    return stats.proportion_ci(k, total, method="wilson", level=level)


def group_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, *, label: str,
                  min_positives: int, min_negatives: int, level: float) -> dict:
    """One subgroup's counts and Wilson sensitivity and specificity (score >= threshold is positive)."""
    conf = stats.confusion(labels, scores, threshold)
    n = int(len(labels))
    pos = conf["tp"] + conf["fn"]
    row = {"label": label, "n": n, "n_positive": pos, "n_negative": n - pos,
           "prevalence": float(pos / n) if n else stats.not_estimable("empty subgroup"),
           "confusion": conf,
           "sensitivity": _metric(conf["tp"], pos, min_positives, "positives", level),
           "specificity": _metric(conf["tn"], n - pos, min_negatives, "negatives", level)}
    missing = [f"{m}: {row[m]['reason']}" for m in ("sensitivity", "specificity") if not stats.is_estimable(row[m])]
    row["estimable"] = not missing
    if missing:
        row["reason"] = "; ".join(missing)
    return row


def _findings(column: pd.Series) -> list[str]:
    found = set()
    for v in column.astype(str):
        found.update(f.strip() for f in v.split("|"))
    return sorted(found - EXCLUDED_FINDINGS)


def subgroups(df: pd.DataFrame, threshold: float, *, min_positives: int, min_negatives: int,
              level: float) -> dict:
    """df: label, score, sex, age_years, view, finding_labels (one row per test image). Without a
    `finding_labels` column (e.g. DICOM headers) there is no `finding` group."""
    y = df["label"].to_numpy(dtype=int)
    s = df["score"].to_numpy(dtype=float)

    def g(mask, label):
        mask = np.asarray(mask, dtype=bool)
        return group_metrics(y[mask], s[mask], threshold, label=label, min_positives=min_positives,
                             min_negatives=min_negatives, level=level)

    sex = df["sex"].fillna("").astype(str).str.upper()
    view = df["view"].fillna("").astype(str).str.upper()
    age = pd.to_numeric(df["age_years"], errors="coerce").to_numpy(dtype=float)
    lo_all, hi_all = AGE_BAND_EDGES[0], AGE_BAND_EDGES[-1]
    bands = {}
    for key, lab, lo, hi in AGE_BANDS:
        upper = (age <= hi) if hi == hi_all else (age < hi)
        bands[key] = g((age >= lo) & upper, lab)
    masks = {"under_min": age < lo_all, "over_max": age > hi_all, "unknown": np.isnan(age)}
    out = {
        "sex": {"M": g(sex == "M", "male"), "F": g(sex == "F", "female"),
                "unknown": g(~sex.isin(["M", "F"]), "sex unknown")},
        "age_band": bands,
        "age_out_of_scope": {key: g(masks[key], lab) for key, lab in AGE_OUT_OF_SCOPE},
        "view": {"AP": g(view == "AP", "AP"), "PA": g(view == "PA", "PA"),
                 "unknown": g(~view.isin(["AP", "PA"]), "view unknown")},
    }
    for var, name in CATEGORICAL:
        if var in df.columns:
            values = df[var].map(lambda v: str(v).strip() if isinstance(v, str) and v.strip() else "")
            out[var] = {v: g(values == v, f"{name}: {v}") for v in sorted(set(values) - {""})}
            out[var]["unknown"] = g(values == "", f"{name} unknown")
    if "finding_labels" not in df.columns:
        return out
    fl = df["finding_labels"].fillna("").astype(str)
    sets = fl.str.split("|").apply(lambda xs: {x.strip() for x in xs})
    out["finding"] = {}
    for f in _findings(fl):
        has = sets.apply(lambda s, f=f: f in s).to_numpy(dtype=bool)
        out["finding"][f] = {"with": g(has, f"with {f}"), "without": g(~has, f"without {f}")}
    return out


def _test(strata: dict, metric: str) -> dict:
    """The homogeneity test of `metric` over the strata where it is estimable."""
    num, den = {"sensitivity": ("tp", "n_positive"), "specificity": ("tn", "n_negative")}[metric]
    used = {k: g for k, g in strata.items() if stats.is_estimable(g[metric])}
    result = stats.homogeneity_test([g["confusion"][num] for g in used.values()],
                                    [g[den] for g in used.values()])
    if stats.is_estimable(result):
        result["strata"] = list(used)
    return result


def heterogeneity(groups: dict) -> dict:
    """Per variable (sex, age band, view; each co-occurring finding, with against without):
    {sensitivity: test, specificity: test, strata_excluded: [...]} (`stats.homogeneity_test`)."""
    out = {}
    for var in (*TESTED_VARIABLES, *(v for v, _ in CATEGORICAL if v in groups)):
        strata = {k: g for k, g in groups[var].items() if k != "unknown"}
        out[var] = {m: _test(strata, m) for m in ("sensitivity", "specificity")}
    if "finding" in groups:
        out["finding"] = {f: {m: _test(pair, m) for m in ("sensitivity", "specificity")}
                          for f, pair in groups["finding"].items()}
    return out
