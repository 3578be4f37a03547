"""Calibration of the scores on the test split: Brier score, expected calibration error, reliability bins."""
from __future__ import annotations

import numpy as np

from .stats import StatsError


def brier_score(labels, scores) -> float:
    """Mean squared difference between score and label."""
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    return float(np.mean((s - y) ** 2))


def reliability_bins(labels, scores, n_bins: int = 10) -> list[dict]:
    """Equal-width bins over [0, 1] (the last bin closed): per bin n, mean score, observed rate.

    An empty bin has n 0 and its mean score and observed rate are not estimable."""
    if not isinstance(n_bins, int) or n_bins < 1:
        raise StatsError(f"calibration bins must be a positive integer, got {n_bins!r}")
    y = np.asarray(labels, dtype=float)
    s = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.minimum(np.searchsorted(edges, s, side="right") - 1, n_bins - 1)
    bins = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        row = {"low": float(edges[b]), "high": float(edges[b + 1]), "n": n}
        if n:
            row.update(mean_score=float(s[sel].mean()), observed_rate=float(y[sel].mean()),
                       positives=int(y[sel].sum()))
        else:
            reason = {"estimable": False, "reason": "no test image has a score in this bin"}
            row.update(mean_score=reason, observed_rate=reason, positives=0)
        bins.append(row)
    return bins


def expected_calibration_error(bins: list[dict]) -> float:
    """ECE = sum over non-empty bins of (n_bin / n) * |observed rate - mean score|."""
    total = sum(b["n"] for b in bins)
    return float(sum(b["n"] / total * abs(b["observed_rate"] - b["mean_score"]) for b in bins if b["n"]))


def calibration(labels, scores, *, n_bins: int = 10) -> dict:
    """The `validation.calibration` data (figure path added by the caller)."""
    s = np.asarray(scores, dtype=float)
    bins = reliability_bins(labels, scores, n_bins)
    return {
        "n": int(len(s)),
        "brier_score": brier_score(labels, scores),
        "ece": expected_calibration_error(bins),
        "ece_bins": {"count": n_bins, "scheme": "equal-width on [0, 1], last bin closed",
                     "weighting": "bin size"},
        "scores_outside_unit_interval": int(np.sum((s < 0) | (s > 1))),
        "bins": bins,
    }
