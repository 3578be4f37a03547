"""The difference of two correlated proportions: two models' correct calls on the same images.

A modification is judged on the images the cleared model was judged on, so the two models' results
are paired (the same image scored twice) and clustered (several images of one patient). Two
intervals of the difference (candidate minus cleared) are computed:

- `newcombe`: Newcombe's hybrid score interval for paired proportions (Newcombe 1998, Statistics in
  Medicine 17:2635-2650, method 10): the Wilson score intervals of the two proportions combined with
  the phi correlation of the paired 2x2 table (with Newcombe's correction of phi). Per image: it
  treats the images as independent pairs. It behaves at zero discordance (the two models agree on
  every image: the interval is not [0, 0] but as wide as the Wilson intervals allow) and at small n.
- `cluster_bootstrap`: a patient-cluster bootstrap: each resample draws patients with replacement
  and keeps every image of a drawn patient with both models' calls, so the pairing and the
  within-patient correlation are kept; the percentile interval. It collapses to [0, 0] when the
  models agree on every image, so it never decides alone.

`compare` computes both and the lower bound the decision reads, by params `pccp.decision_interval`
(`DECISION_INTERVALS`): `both` (the lower of the two lower bounds: Newcombe's at zero discordance
and small n, the bootstrap's where patients' images move together), `newcombe` or
`cluster_bootstrap`. `required_pairs` is the planning sample size of a paired non-inferiority test.

`tests/test_pccp_stats.py` checks Newcombe's interval against a published worked example and an
independent computation (statsmodels' Wilson intervals, numpy's correlation), and the bootstrap
against statsmodels' cluster-robust interval of the mean difference.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from .stats import StatsError, not_estimable

NEWCOMBE = "newcombe-hybrid-score-paired"
BOOTSTRAP = "paired-cluster-bootstrap-percentile"
#: params pccp.decision_interval: which lower bound the non-inferiority decision reads.
DECISION_INTERVALS = ("both", "newcombe", "cluster_bootstrap")
#: The `method` of the interval the decision reads, by decision interval.
DECIDED = {"both": f"lower-of-{NEWCOMBE}-and-{BOOTSTRAP}", "newcombe": NEWCOMBE, "cluster_bootstrap": BOOTSTRAP}


def _check(candidate, cleared, patient_ids=None) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(candidate, dtype=int)
    b = np.asarray(cleared, dtype=int)
    if a.shape != b.shape or (patient_ids is not None and a.shape != np.asarray(patient_ids).shape):
        raise StatsError("candidate, cleared and patient ids must have one entry per image")
    if not set(np.unique(np.concatenate([a, b]))) <= {0, 1}:
        raise StatsError("correct calls must be 0 or 1")
    return a, b


def _level(level: float) -> float:
    if not 0 < level < 1:
        raise StatsError(f"ci_level {level}: must lie strictly between 0 and 1")
    return float(level)


def table(candidate, cleared) -> dict:
    """The paired 2x2 table: images correct by both, by the candidate only, by the cleared model
    only, by neither."""
    a, b = _check(candidate, cleared)
    return {"both": int(np.sum((a == 1) & (b == 1))), "candidate_only": int(np.sum((a == 1) & (b == 0))),
            "cleared_only": int(np.sum((a == 0) & (b == 1))), "neither": int(np.sum((a == 0) & (b == 0)))}


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(both: int, candidate_only: int, cleared_only: int, neither: int, *,
                      level: float = 0.95) -> dict:
    """Newcombe's method 10 for p1 - p2 from the paired 2x2 table (p1: the candidate's proportion
    correct, p2: the cleared model's); not estimable without pairs."""
    level = _level(level)
    e, f, g, h = (int(x) for x in (both, candidate_only, cleared_only, neither))
    if min(e, f, g, h) < 0:
        raise StatsError("a paired table holds counts of zero or more")
    n = e + f + g + h
    if n == 0:
        return not_estimable("no images of this class")
    z = float(norm.ppf(1 - (1 - level) / 2))
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = _wilson(e + f, n, z)
    l2, u2 = _wilson(e + g, n, z)
    margins = (e + f) * (g + h) * (e + g) * (f + h)
    if margins == 0:
        phi = 0.0
    else:
        cross = e * h - f * g
        # Newcombe's correction: a positive association counts only beyond n/2
        corrected = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
        phi = corrected / math.sqrt(margins)
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return {"estimate": float(d), "ci_low": float(max(-1.0, low)), "ci_high": float(min(1.0, high)),
            "ci_level": level, "method": NEWCOMBE, "n": n, "phi": float(phi)}


def _per_patient(values: np.ndarray, patient_ids) -> tuple[np.ndarray, np.ndarray]:
    """(per-patient sums of `values`, per-patient image counts), patients in sorted order."""
    _, index = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    sums = np.bincount(index, weights=values.astype(float))
    counts = np.bincount(index).astype(float)
    return sums, counts


def cluster_bootstrap(candidate, cleared, patient_ids, *, level: float = 0.95, n_resamples: int = 2000,
                      seed: int = 0) -> dict:
    """Patient-cluster bootstrap percentile interval of mean(candidate) - mean(cleared) over the same
    images; the difference is the ratio estimate sum(candidate - cleared) / images."""
    a, b = _check(candidate, cleared, patient_ids)
    level = _level(level)
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
            "ci_level": level, "method": BOOTSTRAP, "n": n, "n_patients": int(patients),
            "n_resamples": int(n_resamples), "seed": int(seed)}


def compare(candidate, cleared, patient_ids, *, level: float = 0.95, decision: str = "both",
            n_resamples: int = 2000, seed: int = 0) -> dict:
    """Both intervals of the paired difference and the lower bound the decision reads (`ci_low`,
    from `decision`, one of DECISION_INTERVALS), with the two proportions and the paired table;
    not estimable without images."""
    if decision not in DECISION_INTERVALS:
        raise StatsError(f"decision interval {decision!r} unknown; use one of {', '.join(DECISION_INTERVALS)}")
    a, b = _check(candidate, cleared, patient_ids)
    if a.size == 0:
        return not_estimable("no images of this class")
    counts = table(a, b)
    nc = newcombe_interval(**counts, level=level)
    boot = cluster_bootstrap(a, b, patient_ids, level=level, n_resamples=n_resamples, seed=seed)
    read = {"newcombe": (nc,), "cluster_bootstrap": (boot,), "both": (nc, boot)}[decision]
    return {"estimate": nc["estimate"], "ci_low": min(i["ci_low"] for i in read),
            "ci_high": max(i["ci_high"] for i in read), "ci_level": nc["ci_level"], "method": DECIDED[decision],
            "decision_interval": decision, "n": int(a.size), "n_patients": boot["n_patients"],
            "candidate": float(a.mean()), "cleared": float(b.mean()), **counts,
            "newcombe": nc, "cluster_bootstrap": {k: v for k, v in boot.items() if k != "n_patients"}}


def non_inferior(interval: dict, margin: float) -> bool:
    """The lower bound of the difference lies above minus the margin (a one-sided test at
    (1 - ci_level) / 2); a difference that is not estimable does not pass."""
    return "ci_low" in interval and interval["ci_low"] > -margin


def required_pairs(margin: float, discordance: float, *, level: float = 0.95, power: float = 0.8) -> int:
    """Images of one class a paired non-inferiority test needs when the two models are equally good:
    n = discordance x (z(1 - alpha) + z(power))^2 / margin^2, alpha = (1 - level) / 2 one-sided
    (the normal approximation for the difference of paired proportions, Connor 1987, Biometrics
    43:207-211, at a true difference of zero; `discordance`: the expected fraction of images the two
    models call differently)."""
    level = _level(level)
    if not (0 < margin < 1 and 0 < discordance <= 1 and 0 < power < 1):
        raise StatsError("margin and power lie strictly between 0 and 1; discordance in (0, 1]")
    z = norm.ppf(1 - (1 - level) / 2) + norm.ppf(power)
    return int(math.ceil(discordance * z * z / (margin * margin) - 1e-9))
