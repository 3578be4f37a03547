"""Drift statistics of postmarket monitoring: the population stability index (PSI) of a numeric or
categorical distribution against a baseline, and the two-sample Kolmogorov-Smirnov test (scipy).

PSI = sum over bins of (a - e) * ln(a / e), `e` the baseline share and `a` the batch share of a bin
(Siddiqi, "Credit Risk Scorecards", 2006; Yurdakul, "Statistical properties of population stability
index", 2018). A bin empty on either side takes the share `EMPTY_SHARE` instead of 0, so the index
stays finite and a category the baseline never saw (a lateral view) weighs heavily.
Numeric values are binned at the baseline's quantiles (`quantile_edges`); the outer bins are open.
"""
from __future__ import annotations

import numpy as np

#: the share an empty bin takes in the PSI (on either side)
EMPTY_SHARE = 1e-4
MISSING = "missing"


def quantile_edges(values, bins: int) -> list[float]:
    """The inner bin edges of `bins` baseline-quantile bins (fewer when values repeat)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return []
    inner = np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(x) for x in np.unique(inner)]


def numeric_shares(values, edges: list[float]) -> list[float]:
    """Shares of finite `values` in the bins (-inf, e1), [e1, e2), ..., [ek, inf)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=float), v, side="right"),
                         minlength=len(edges) + 1)
    return [float(c) / v.size for c in counts] if v.size else [0.0] * (len(edges) + 1)


def categorical_shares(values) -> dict[str, float]:
    """{category: share}; None, NaN and empty text are the category `missing`."""
    keys = [MISSING if v is None or (isinstance(v, float) and not np.isfinite(v)) or str(v).strip() == ""
            else str(v).strip().upper() for v in values]
    n = len(keys)
    return {k: keys.count(k) / n for k in sorted(set(keys))} if n else {}


def psi(expected: list[float], actual: list[float]) -> float:
    """The PSI of two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=float), EMPTY_SHARE)
    a = np.maximum(np.asarray(actual, dtype=float), EMPTY_SHARE)
    if e.shape != a.shape:
        raise ValueError(f"psi: {e.size} baseline bins and {a.size} batch bins")
    return float(np.sum((a - e) * np.log(a / e)))


def categorical_psi(expected: dict[str, float], actual: dict[str, float]) -> float:
    """The PSI over the union of the categories of both sides."""
    keys = sorted(set(expected) | set(actual))
    return psi([expected.get(k, 0.0) for k in keys], [actual.get(k, 0.0) for k in keys])


def ks(baseline, batch) -> dict:
    """Two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp, two-sided, exact where scipy uses it)."""
    from scipy.stats import ks_2samp

    a, b = np.asarray(baseline, dtype=float), np.asarray(batch, dtype=float)
    result = ks_2samp(a[np.isfinite(a)], b[np.isfinite(b)])
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue),
            "n_baseline": int(np.isfinite(a).sum()), "n_batch": int(np.isfinite(b).sum()),
            "method": "two-sample Kolmogorov-Smirnov, two-sided (scipy.stats.ks_2samp)"}
