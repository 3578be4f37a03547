"""Calibration of the scores on the test split: Brier score, reliability bins, expected calibration
error with a bootstrap interval, and where the scores lie relative to the locked threshold.

Bins (`binning`):
- `quantile` (default): equal-count bins. The interior edges are the j/B quantiles of the scores
  (numpy's default linear interpolation), a score goes to the bin [edge_j, edge_j+1) it falls in
  (the last bin closed at 1), so tied scores always share a bin and the assignment does not depend
  on the order of the rows; edges that coincide (many tied scores) leave fewer, larger bins, and
  `ece_bins.count` counts the non-empty ones actually used.
- `uniform`: equal-width bins over [0, 1], the last closed; empty bins are listed, not estimable.

ECE = sum over non-empty bins of (n_bin / n) |observed rate - mean score|. Its interval is a
patient-cluster percentile bootstrap (each resample draws patients with replacement and keeps all
their images) with the bin edges held at those of the full test split; without patient ids every
image is its own cluster.

Concentration: the share of test scores within +/- `CONCENTRATION_WINDOW` of the threshold, and the
number of equal-width tenths of [0, 1] the scores occupy. The scores are called concentrated around
the threshold when at least `CONCENTRATION_SHARE` of them lie in that window, or when every score
falls in the single equal-width tenth that holds the threshold.
"""
from __future__ import annotations

import numpy as np

from .stats import StatsError, _check_level, _estimate, _in_chunks, _patient_multiplicities, not_estimable

BINNINGS = ("quantile", "uniform")
CONCENTRATION_WINDOW = 0.05
CONCENTRATION_SHARE = 0.5
SCHEMES = {"quantile": "equal-count: interior edges at the j/B quantiles of the test scores, bins [low, high), "
                       "the last closed; tied scores share a bin, coinciding edges merge bins",
           "uniform": "equal-width on [0, 1], bins [low, high), the last closed"}


def brier_score(labels, scores) -> float:
    """Mean squared difference between score and label."""
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    return float(np.mean((s - y) ** 2))


def bin_edges(scores, n_bins: int = 10, binning: str = "quantile") -> np.ndarray:
    """The bin edges from 0 to 1 (strictly increasing; fewer than n_bins + 1 when quantiles tie)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise StatsError(f"calibration bins must be a positive integer, got {n_bins!r}")
    if binning not in BINNINGS:
        raise StatsError(f"calibration binning {binning!r} unknown; use {' or '.join(BINNINGS)}")
    if binning == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    s = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    inner = np.quantile(s, np.arange(1, n_bins) / n_bins) if len(s) else np.array([])
    inner = inner[(inner > 0.0) & (inner < 1.0)]
    return np.unique(np.concatenate([[0.0], inner, [1.0]]))


def bin_index(scores, edges: np.ndarray) -> np.ndarray:
    """The bin of each score: [edges[b], edges[b+1]), the last bin closed."""
    s = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    return np.minimum(np.searchsorted(edges, s, side="right") - 1, len(edges) - 2)


def reliability_bins(labels, scores, n_bins: int = 10, binning: str = "uniform") -> list[dict]:
    """Per bin low, high, n, positives, mean score, observed rate. Uniform bins keep the empty
    ones (mean score and observed rate not estimable); quantile bins list the non-empty ones."""
    y = np.asarray(labels, dtype=float)
    s = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    order = np.lexsort((y, s))  # sums in one order: the same bins to the last bit whatever the row order
    y, s = y[order], s[order]
    edges = bin_edges(s, n_bins, binning)
    idx = bin_index(s, edges)
    bins = []
    for b in range(len(edges) - 1):
        sel = idx == b
        n = int(sel.sum())
        row = {"low": float(edges[b]), "high": float(edges[b + 1]), "n": n}
        if n:
            row.update(mean_score=float(s[sel].mean()), observed_rate=float(y[sel].mean()),
                       positives=int(y[sel].sum()))
        elif binning == "quantile":
            continue
        else:
            reason = not_estimable("no test image has a score in this bin")
            row.update(mean_score=reason, observed_rate=reason, positives=0)
        bins.append(row)
    return bins


def expected_calibration_error(bins: list[dict]) -> float:
    """ECE = sum over non-empty bins of (n_bin / n) * |observed rate - mean score|."""
    total = sum(b["n"] for b in bins)
    return float(sum(b["n"] / total * abs(b["observed_rate"] - b["mean_score"]) for b in bins if b["n"]))


def ece_bootstrap(labels, scores, edges: np.ndarray, patient_ids=None, *, n_resamples: int = 2000,
                  level: float = 0.95, seed: int = 0) -> dict:
    """ECE over the bins `edges` with a cluster-bootstrap percentile interval (edges held fixed).

    With weights w (a patient's multiplicity, for each of its images), a resample's ECE is
    sum_b |sum_{i in b} w_i (y_i - s_i)| / sum_i w_i; every resample is defined."""
    level = _check_level(level)
    if not (isinstance(n_resamples, int) and n_resamples >= 1):
        raise StatsError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    y = np.asarray(labels, dtype=float)
    s = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    if len(y) < 2:
        return not_estimable(f"{len(y)} test images: a bootstrap interval needs at least 2")
    unit = "patient" if patient_ids is not None else "image"
    ids = np.asarray(patient_ids).astype(str) if patient_ids is not None else np.arange(len(y)).astype(str)
    _, patient_of = np.unique(ids, return_inverse=True)
    patient_of = patient_of.ravel()
    P, K = int(patient_of.max()) + 1, len(edges) - 1
    idx = bin_index(s, edges)
    resid = np.zeros((P, K))
    np.add.at(resid, (patient_of, idx), y - s)
    sizes = np.bincount(patient_of, minlength=P).astype(float)
    point = float(np.abs(resid.sum(axis=0)).sum() / len(y))
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    for a, b in _in_chunks(n_resamples, P + K):
        w = _patient_multiplicities(rng, b - a, P)
        boot[a:b] = np.abs(w @ resid).sum(axis=1) / (w @ sizes)
    alpha = 1 - level
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return _estimate(point, lo, hi, level, f"{'cluster-' if unit == 'patient' else ''}bootstrap-percentile",
                     len(y), n_resamples=n_resamples, seed=seed, unit=unit, n_clusters=P)


def concentration(scores, threshold: float) -> dict:
    """Where the scores lie relative to the threshold (the definitions are in the module doc)."""
    s = np.asarray(scores, dtype=float)
    near = int(np.sum(np.abs(s - threshold) <= CONCENTRATION_WINDOW))
    tenths = np.minimum(np.floor(np.clip(s, 0.0, 1.0) * 10).astype(int), 9)
    t_tenth = min(int(np.floor(min(max(threshold, 0.0), 1.0) * 10)), 9)
    occupied = sorted({int(t) for t in tenths})
    one_bin = len(occupied) == 1 and occupied[0] == t_tenth
    share = float(near / len(s)) if len(s) else not_estimable("no test scores")
    q = np.quantile(s, [0.0, 0.25, 0.5, 0.75, 1.0]) if len(s) else [0.0] * 5
    return {
        "threshold": float(threshold),
        "window": CONCENTRATION_WINDOW,
        "n_within_window": near,
        "share_within_window": share,
        "share_rule": CONCENTRATION_SHARE,
        "equal_width_tenths_occupied": len(occupied),
        "all_in_threshold_tenth": bool(one_bin),
        "score_min": float(q[0]), "score_q1": float(q[1]), "score_median": float(q[2]),
        "score_q3": float(q[3]), "score_max": float(q[4]),
        "concentrated": bool(one_bin or (len(s) and near / len(s) >= CONCENTRATION_SHARE)),
        "definition": (f"concentrated when at least {CONCENTRATION_SHARE:.0%} of the test scores lie within "
                       f"+/-{CONCENTRATION_WINDOW:g} of the threshold, or every score falls in the equal-width "
                       "tenth of [0, 1] that holds the threshold"),
    }


def calibration(labels, scores, *, n_bins: int = 10, binning: str = "quantile", threshold: float | None = None,
                patient_ids=None, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """The `validation.calibration` data (figure paths added by the caller)."""
    s = np.asarray(scores, dtype=float)
    edges = bin_edges(s, n_bins, binning)
    bins = reliability_bins(labels, scores, n_bins, binning)
    out = {
        "n": int(len(s)),
        "brier_score": brier_score(labels, scores),
        "ece": expected_calibration_error(bins),
        "ece_ci": ece_bootstrap(labels, scores, edges, patient_ids, n_resamples=n_resamples, level=level,
                                seed=seed),
        "ece_bins": {"count": sum(1 for b in bins if b["n"]), "requested": n_bins, "binning": binning,
                     "scheme": SCHEMES[binning], "weighting": "bin size"},
        "scores_outside_unit_interval": int(np.sum((s < 0) | (s > 1))),
        "bins": bins,
    }
    if threshold is not None:
        out["concentration"] = concentration(s, threshold)
    return out
