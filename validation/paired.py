"""The difference of two correlated proportions: two models' correct calls on the same images.

A modification is judged on the images the cleared model was judged on, so the two models' results
are paired (the same image scored twice) and clustered (several images of one patient). The
interval of the difference (candidate minus cleared) comes from a patient-cluster bootstrap: each
resample draws patients with replacement and keeps every image of a drawn patient with both models'
calls, so the pairing and the within-patient correlation are kept; the percentile interval at
`level`. The difference itself is the ratio estimate sum(candidate - cleared) / images.

`tests/test_pccp_stats.py` checks it against an independent reference: statsmodels' cluster-robust
(patient-clustered) interval of the mean difference, which the bootstrap approaches on a large set.
"""
from __future__ import annotations

import numpy as np

from .stats import StatsError, not_estimable

METHOD = "paired-cluster-bootstrap-percentile"


def _per_patient(values: np.ndarray, patient_ids) -> tuple[np.ndarray, np.ndarray]:
    """(per-patient sums of `values`, per-patient image counts), patients in sorted order."""
    _, index = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    sums = np.bincount(index, weights=values.astype(float))
    counts = np.bincount(index).astype(float)
    return sums, counts


def paired_difference(candidate, cleared, patient_ids, *, level: float = 0.95, n_resamples: int = 2000,
                      seed: int = 0) -> dict:
    """Interval of mean(candidate) - mean(cleared) over the same images (`candidate`, `cleared`:
    0/1 correct calls, one per image; `patient_ids`: the image's patient).

    Returns the interval estimate (`estimate`, `ci_low`, `ci_high`, `ci_level`, `method`, `n`) with
    the two proportions, the discordant pairs (`candidate_only`: correct by the candidate only,
    `cleared_only`) and the number of patients; not estimable without images."""
    a = np.asarray(candidate, dtype=int)
    b = np.asarray(cleared, dtype=int)
    if a.shape != b.shape or a.shape != np.asarray(patient_ids).shape:
        raise StatsError("candidate, cleared and patient ids must have one entry per image")
    if not set(np.unique(np.concatenate([a, b]))) <= {0, 1}:
        raise StatsError("correct calls must be 0 or 1")
    if not 0 < level < 1:
        raise StatsError(f"ci_level {level}: must lie strictly between 0 and 1")
    n = int(a.size)
    if n == 0:
        return not_estimable("no images of this class")
    diff_sums, counts = _per_patient(a - b, patient_ids)
    patients = counts.size
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // patients)
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        draws = rng.multinomial(patients, np.full(patients, 1.0 / patients), size=k)
        values[start:start + k] = (draws @ diff_sums) / (draws @ counts)
    alpha = 1 - level
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return {"estimate": float((a - b).sum() / n), "ci_low": float(low), "ci_high": float(high),
            "ci_level": level, "method": METHOD, "n": n, "n_patients": int(patients),
            "n_resamples": int(n_resamples), "seed": int(seed),
            "candidate": float(a.mean()), "cleared": float(b.mean()),
            "candidate_only": int(np.sum((a == 1) & (b == 0))), "cleared_only": int(np.sum((a == 0) & (b == 1)))}


def non_inferior(interval: dict, margin: float) -> bool:
    """The lower bound of the difference lies above minus the margin (a one-sided test at
    (1 - ci_level) / 2); a difference that is not estimable does not pass."""
    return "ci_low" in interval and interval["ci_low"] > -margin
