"""Validation statistics: proportion intervals, patient-cluster bootstrap, DeLong, sample size.

Every interval is returned as an estimate dict
``{"estimate", "ci_low", "ci_high", "ci_level", "method", "n"}`` (plus method-specific extras);
a value that cannot be estimated is ``{"estimable": False, "reason": "..."}``, never NaN.

Public API:
    proportion_ci(k, n, *, method="wilson", level=0.95)
    bootstrap_metrics(labels, scores, patient_ids, threshold, *, metrics=..., n_resamples=10000,
                      level=0.95, method="percentile", seed=0)
    delong_auc_ci(labels, scores, *, level=0.95)
    delong_test(labels, scores_a, scores_b)
    homogeneity_test(successes, totals)
    buderer_sample_size(sensitivity, specificity, prevalence, half_width, *, level=0.95)
    ppv_npv_at_prevalence(sensitivity, specificity, prevalence)
    predictive_values_ci(tp, fp, tn, fn, prevalence, *, level=0.95)
    confusion(labels, scores, threshold), point_metrics(tp, fp, tn, fn), auc(labels, scores)

Decision rule everywhere: an image is called positive when ``score >= threshold``.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy import sparse
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from evidence.errors import ToolkitError

PROPORTION_METHODS = {
    "wilson": "wilson",
    "clopper-pearson": "beta",
    "jeffreys": "jeffreys",
    "agresti-coull": "agresti_coull",
}
#: The metric names, declared once: proportions (Wilson and bootstrap intervals), count metrics
#: (from the confusion matrix), all metrics (an acceptance criterion may name any of them).
PROPORTION_METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
COUNT_METRICS = PROPORTION_METRICS + ("f1",)
ALL_METRICS = COUNT_METRICS + ("auc",)
BOOTSTRAP_METHODS = ("percentile", "bca")
_CHUNK_CELLS = 4_000_000  # resamples x columns per vectorised block (bounds memory to ~100 MB)


class StatsError(ToolkitError, ValueError):
    """A statistic asked for with a parameter it does not accept (level, method, metric name) or
    on data it is not defined for; the message names the value."""


def not_estimable(reason: str) -> dict:
    return {"estimable": False, "reason": reason}


def is_estimable(value) -> bool:
    return not (isinstance(value, dict) and value.get("estimable") is False)


def _check_level(level: float) -> float:
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise StatsError(f"ci level must be a number strictly between 0 and 1, got {level!r}")
    return float(level)


def _estimate(est, lo, hi, level, method, n, **extra) -> dict:
    lo, hi = float(min(lo, hi)), float(max(lo, hi))
    out = {"estimate": float(est), "ci_low": lo, "ci_high": hi, "ci_level": float(level),
           "method": method, "n": int(n)}
    out.update(extra)
    return out


# --------------------------------------------------------------------------- proportions

def proportion_ci(k: int, n: int, *, method: str = "wilson", level: float = 0.95) -> dict:
    """Binomial proportion k/n with a two-sided interval (statsmodels ``proportion_confint``).

    method: wilson | clopper-pearson | jeffreys | agresti-coull. n == 0 -> not estimable.
    """
    if method not in PROPORTION_METHODS:
        raise StatsError(f"proportion method {method!r} unknown; use one of {', '.join(PROPORTION_METHODS)}")
    level = _check_level(level)
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"proportion needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return not_estimable("no cases in the denominator (n = 0)")
    lo, hi = proportion_confint(k, n, alpha=1 - level, method=PROPORTION_METHODS[method])
    lo, hi = max(0.0, float(lo)), min(1.0, float(hi))
    return _estimate(k / n, lo, hi, level, method, n)


# --------------------------------------------------------------------------- point metrics

def _as_arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite numbers")
    return y.astype(np.int8), s


def confusion(labels, scores, threshold: float) -> dict:
    """{tp, fp, tn, fn} with an image called positive when score >= threshold."""
    y, s = _as_arrays(labels, scores)
    pred = s >= threshold
    pos = y == 1
    return {"tp": int(np.sum(pred & pos)), "fp": int(np.sum(pred & ~pos)),
            "tn": int(np.sum(~pred & ~pos)), "fn": int(np.sum(~pred & pos))}


def metric_fraction(metric: str, tp, fp, tn, fn):
    """(numerator, denominator) of a count metric; works on scalars or numpy arrays."""
    if metric == "sensitivity":
        return tp, tp + fn
    if metric == "specificity":
        return tn, tn + fp
    if metric == "ppv":
        return tp, tp + fp
    if metric == "npv":
        return tn, tn + fn
    if metric == "accuracy":
        return tp + tn, tp + fp + tn + fn
    if metric == "f1":
        return 2 * tp, 2 * tp + fp + fn
    raise StatsError(f"metric {metric!r} unknown; use one of {', '.join(ALL_METRICS)}")


def point_metrics(tp: int, fp: int, tn: int, fn: int) -> dict:
    """Each count metric as a float, or not-estimable when its denominator is zero."""
    out = {}
    for m in COUNT_METRICS:
        num, den = metric_fraction(m, tp, fp, tn, fn)
        out[m] = float(num / den) if den > 0 else not_estimable(f"{m}: denominator is zero")
    return out


def _midranks(x: np.ndarray) -> np.ndarray:
    return sps.rankdata(x, method="average")


def auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half)."""
    y, s = _as_arrays(labels, scores)
    m, n = int(y.sum()), int((1 - y).sum())
    if m == 0 or n == 0:
        raise StatsError("AUC needs at least one positive and one negative")
    r = _midranks(s)
    return float((r[y == 1].sum() - m * (m + 1) / 2) / (m * n))


# --------------------------------------------------------------------------- DeLong

def _delong_components(pos: np.ndarray, neg: np.ndarray, ranks_all, ranks_pos, ranks_neg):
    """Structural components V10 (per positive) and V01 (per negative), Sun & Xu 2014."""
    m, n = len(pos), len(neg)
    v10 = (ranks_all[:m] - ranks_pos) / n
    v01 = 1.0 - (ranks_all[m:] - ranks_neg) / m
    return v10, v01


def _fast_delong(y: np.ndarray, score_sets: Sequence[np.ndarray]):
    """AUCs and their covariance matrix for k score vectors on the same cases."""
    pos_idx, neg_idx = y == 1, y == 0
    m, n = int(pos_idx.sum()), int(neg_idx.sum())
    aucs, v10s, v01s = [], [], []
    for s in score_sets:
        pos, neg = s[pos_idx], s[neg_idx]
        ranks_all = _midranks(np.concatenate([pos, neg]))
        ranks_pos, ranks_neg = _midranks(pos), _midranks(neg)
        aucs.append((ranks_all[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10, v01 = _delong_components(pos, neg, ranks_all, ranks_pos, ranks_neg)
        v10s.append(v10)
        v01s.append(v01)
    v10m, v01m = np.atleast_2d(np.array(v10s)), np.atleast_2d(np.array(v01s))
    s10, s01 = np.atleast_2d(np.cov(v10m)), np.atleast_2d(np.cov(v01m))
    return np.array(aucs), s10 / m + s01 / n, m, n


def auc_interval_reason(labels) -> str | None:
    """Why no AUC interval can be given (None when one can): every AUC interval of this toolkit,
    DeLong or bootstrap, needs at least two positives and two negatives. With one case of a class
    the DeLong variance of its structural components is undefined, and a bootstrap interval
    would only show how often that single case is drawn, not the uncertainty of the AUC."""
    y = np.asarray(labels)
    m, n = int(np.sum(y == 1)), int(np.sum(y == 0))
    if m < 2 or n < 2:
        return (f"an AUC interval needs at least two positives and two negatives "
                f"(positives {m}, negatives {n})")
    return None


def delong_auc_ci(labels, scores, *, level: float = 0.95) -> dict:
    """AUC with the DeLong (1988) variance, fast algorithm of Sun & Xu (2014); Wald interval
    clipped to [0, 1]. Not estimable with fewer than two positives or two negatives: the variance
    of the structural components of a class of one case is undefined."""
    level = _check_level(level)
    y, s = _as_arrays(labels, scores)
    reason = auc_interval_reason(y)
    if reason:
        return not_estimable(f"the DeLong interval: {reason}")
    aucs, cov, m, n = _fast_delong(y, [s])
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    z = sps.norm.ppf(0.5 + level / 2)
    a = float(aucs[0])
    return _estimate(a, max(0.0, a - z * se), min(1.0, a + z * se), level, "delong", m + n,
                     se=se, n_positive=m, n_negative=n)


def delong_test(labels, scores_a, scores_b) -> dict:
    """Two-sided DeLong test for two correlated AUCs on the same cases: {auc_a, auc_b,
    difference, se, z, p_value}. Identical score vectors give z 0, p 1."""
    y, a = _as_arrays(labels, scores_a)
    _, b = _as_arrays(labels, scores_b)
    if a.shape != b.shape:
        raise ValueError("scores_a and scores_b must have the same length")
    m, n = int(y.sum()), int(len(y) - y.sum())
    if m < 2 or n < 2:
        return not_estimable(f"the DeLong comparison needs at least two positives and two negatives "
                             f"(positives {m}, negatives {n})")
    aucs, cov, m, n = _fast_delong(y, [a, b])
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    if se == 0.0:
        z, p = (0.0, 1.0) if diff == 0.0 else (math.copysign(math.inf, diff), 0.0)
        if not math.isfinite(z):
            return not_estimable("DeLong variance of the difference is zero but the AUCs differ")
    else:
        z = diff / se
        p = float(2 * sps.norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": diff, "se": se,
            "z": float(z), "p_value": float(p), "method": "delong", "n": m + n}


# --------------------------------------------------------------------------- heterogeneity

HOMOGENEITY_METHODS = {
    "pearson-chi-square": "Pearson chi-square test of homogeneity of proportions (no continuity correction)",
    "fisher-exact": "Fisher's exact test, two-sided",
}


def homogeneity_test(successes: Sequence[int], totals: Sequence[int]) -> dict:
    """Test that k proportions successes[i] / totals[i] are equal (heterogeneity across strata).

    Two strata: Fisher's exact test, two-sided (scipy.stats.fisher_exact), valid at any count;
    three or more: the Pearson chi-square test of homogeneity of the k x 2 table, k - 1 degrees
    of freedom, no continuity correction (scipy.stats.chi2_contingency), with the smallest expected
    cell count reported (below 5 the chi-square approximation is rough). Not estimable with fewer
    than two strata, or when every stratum has the same outcome for every case (the statistic is
    0/0). Returns {method, p_value, n_strata, n, min_expected}, and for the chi-square test
    `statistic` and `df`.
    """
    k = np.asarray(successes, dtype=int)
    n = np.asarray(totals, dtype=int)
    if k.shape != n.shape or k.ndim != 1:
        raise ValueError("successes and totals must be 1-D of equal length")
    if np.any(n <= 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"homogeneity test needs 0 <= successes <= totals and totals > 0, got {k} of {n}")
    if len(k) < 2:
        return not_estimable(f"{len(k)} {'stratum' if len(k) == 1 else 'strata'} with an estimate: "
                             "a heterogeneity test needs at least two")
    table = np.stack([k, n - k], axis=1)
    if table[:, 0].sum() == 0 or table[:, 1].sum() == 0:
        return not_estimable("every case in every stratum has the same outcome: no heterogeneity to test")
    expected = np.outer(n, table.sum(axis=0)) / n.sum()
    base = {"n_strata": int(len(k)), "n": int(n.sum()), "min_expected": float(expected.min())}
    if len(k) == 2:
        _, p = sps.fisher_exact(table, alternative="two-sided")
        return {"method": "fisher-exact", "p_value": float(min(1.0, p)), **base}
    chi2, p, dof, _ = sps.chi2_contingency(table, correction=False)
    return {"method": "pearson-chi-square", "statistic": float(chi2), "df": int(dof), "p_value": float(p), **base}


# --------------------------------------------------------------------------- sample size, prevalence

def buderer_sample_size(sensitivity: float, specificity: float, prevalence: float, half_width: float,
                        *, level: float = 0.95) -> dict:
    """Buderer (1996): positives z^2 Se(1-Se)/w^2, negatives z^2 Sp(1-Sp)/w^2 (each rounded up),
    total max(positives/prevalence, negatives/(1-prevalence)) rounded up."""
    level = _check_level(level)
    for name, v in (("sensitivity", sensitivity), ("specificity", specificity), ("prevalence", prevalence)):
        if not 0 < v < 1:
            raise StatsError(f"{name} must be strictly between 0 and 1, got {v!r}")
    if not 0 < half_width < 1:
        raise StatsError(f"half_width must be strictly between 0 and 1, got {half_width!r}")
    z = float(sps.norm.ppf(0.5 + level / 2))
    pos = math.ceil(z * z * sensitivity * (1 - sensitivity) / half_width ** 2 - 1e-9)
    neg = math.ceil(z * z * specificity * (1 - specificity) / half_width ** 2 - 1e-9)
    total = math.ceil(max(pos / prevalence, neg / (1 - prevalence)) - 1e-9)
    return {"positives": pos, "negatives": neg, "total": total, "z": z, "ci_level": level,
            "half_width": float(half_width), "method": "buderer-1996"}


def ppv_npv_at_prevalence(sensitivity: float, specificity: float, prevalence: float) -> dict:
    """Bayes: PPV = Se p / (Se p + (1-Sp)(1-p)); NPV = Sp(1-p) / (Sp(1-p) + (1-Se) p)."""
    se, sp, p = float(sensitivity), float(specificity), _check_prevalence(prevalence)
    if not (0 <= se <= 1 and 0 <= sp <= 1):
        raise StatsError("sensitivity and specificity must lie in [0, 1]")
    ppv_den = se * p + (1 - sp) * (1 - p)
    npv_den = sp * (1 - p) + (1 - se) * p
    return {
        "prevalence": p,
        "ppv": se * p / ppv_den if ppv_den > 0 else not_estimable("no positive calls at this operating point"),
        "npv": sp * (1 - p) / npv_den if npv_den > 0 else not_estimable("no negative calls at this operating point"),
    }


def _check_prevalence(prevalence) -> float:
    if isinstance(prevalence, bool) or not isinstance(prevalence, (int, float)) or not 0 < prevalence < 1:
        raise StatsError(f"prevalence must be a number strictly between 0 and 1, got {prevalence!r}: "
                         "PPV and NPV at a prevalence of 0 or 1 are not defined")
    return float(prevalence)


def predictive_values_ci(tp: int, fp: int, tn: int, fn: int, prevalence: float, *, level: float = 0.95) -> dict:
    """PPV and NPV at `prevalence` from a case-control (enriched) sample, with logit intervals
    (Mercaldo, Lau & Zhou, Statistics in Medicine 2007;26:2170-2183).

    With Se = tp/n1, Sp = tn/n0 (n1 = tp + fn positives, n0 = tn + fp negatives) and prevalence p:
      logit PPV = log(Se p / ((1 - Sp)(1 - p))),  Var = (1 - Se)/(n1 Se) + Sp/(n0 (1 - Sp))
      logit NPV = log(Sp (1 - p) / ((1 - Se) p)), Var = Se/(n1 (1 - Se)) + (1 - Sp)/(n0 Sp)
    and the interval is the back-transformed logit +/- z sqrt(Var). When Se or Sp is 0 or 1 the
    logit is infinite; the paper's adjusted estimates are used instead for the interval
    (tp + z^2/2)/(n1 + z^2) and (tn + z^2/2)/(n0 + z^2), and the method says so (the interval is
    then widened to hold the estimate if it does not). The estimate is always Bayes' rule on the
    observed Se and Sp. Not estimable without positives or negatives."""
    level, p = _check_level(level), _check_prevalence(prevalence)
    tp, fp, tn, fn = (int(v) for v in (tp, fp, tn, fn))
    if min(tp, fp, tn, fn) < 0:
        raise StatsError(f"confusion counts must be non-negative, got tp={tp}, fp={fp}, tn={tn}, fn={fn}")
    n1, n0 = tp + fn, tn + fp
    if n1 == 0 or n0 == 0:
        reason = "no positives" if n1 == 0 else "no negatives"
        return {"prevalence": p, "ppv": not_estimable(f"{reason}: sensitivity or specificity not defined"),
                "npv": not_estimable(f"{reason}: sensitivity or specificity not defined")}
    z = float(sps.norm.ppf(0.5 + level / 2))
    point = ppv_npv_at_prevalence(tp / n1, tn / n0, p)
    if 0 < tp < n1 and 0 < tn < n0:
        se, sp, m1, m0, method = tp / n1, tn / n0, n1, n0, "mercaldo-logit"
    else:
        m1, m0 = n1 + z * z, n0 + z * z
        se, sp, method = (tp + z * z / 2) / m1, (tn + z * z / 2) / m0, "mercaldo-logit-adjusted"
    logit = {"ppv": math.log(se * p / ((1 - sp) * (1 - p))), "npv": math.log(sp * (1 - p) / ((1 - se) * p))}
    var = {"ppv": (1 - se) / (m1 * se) + sp / (m0 * (1 - sp)), "npv": se / (m1 * (1 - se)) + (1 - sp) / (m0 * sp)}
    out = {"prevalence": p}
    for k in ("ppv", "npv"):
        est = point[k]
        if not is_estimable(est):
            out[k] = est
            continue
        half = z * math.sqrt(var[k])
        lo, hi = (1 / (1 + math.exp(-(logit[k] + s * half))) for s in (-1, 1))
        out[k] = _estimate(est, min(lo, est), max(hi, est), level, method, n1 + n0, positives=n1, negatives=n0)
    return out


# --------------------------------------------------------------------------- cluster bootstrap

class _ClusterData:
    """Per-patient sufficient statistics for the vectorised cluster bootstrap.

    Count metrics: a (P, 4) matrix of per-patient TP, FP, TN, FN. AUC: the scores are sorted
    once; with u the distinct positive scores, each negative image falls in the bucket of the
    positive scores above it (and may tie one), so a resample's Mann-Whitney sum is
    sum_k pos_k (neg_below_k + neg_tied_k / 2), from one sparse patient-by-bucket product.
    """

    def __init__(self, y: np.ndarray, s: np.ndarray, patient_ids, threshold: float):
        _, self.patient_of = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
        self.patient_of = self.patient_of.ravel()
        self.n_patients = P = int(self.patient_of.max()) + 1 if len(y) else 0
        pred = s >= threshold
        pos = y == 1
        self.counts = np.stack([
            np.bincount(self.patient_of, weights=(pred & pos), minlength=P),
            np.bincount(self.patient_of, weights=(pred & ~pos), minlength=P),
            np.bincount(self.patient_of, weights=(~pred & ~pos), minlength=P),
            np.bincount(self.patient_of, weights=(~pred & pos), minlength=P),
        ], axis=1)
        u = np.unique(s[pos])                      # distinct positive scores, ascending
        K = self.n_buckets = len(u)
        neg_s, neg_p = s[~pos], self.patient_of[~pos]
        lo = np.searchsorted(u, neg_s, side="left")          # positive scores strictly below
        tie = (lo < K) & (u[np.minimum(lo, max(K - 1, 0))] == neg_s) if K else np.zeros(len(neg_s), bool)
        strict = lo + tie                                      # first bucket strictly above
        pos_k = np.searchsorted(u, s[pos])
        ones = lambda k: np.ones(k)  # noqa: E731
        # columns: [0, K] negatives by first bucket strictly above (K: above every positive),
        # [K+1, 2K] negatives tied with bucket k, [2K+1, 3K] positives in bucket k
        rows = np.concatenate([neg_p, neg_p[tie], self.patient_of[pos]])
        cols = np.concatenate([strict, K + 1 + lo[tie], 2 * K + 1 + pos_k])
        self.bucket_matrix = sparse.csr_matrix((ones(len(rows)), (rows, cols)), shape=(P, 3 * K + 1))

    def count_stats(self, w: np.ndarray) -> np.ndarray:
        """(B, 4) resampled tp, fp, tn, fn for patient weights w (B, P)."""
        return w @ self.counts

    def auc_stats(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(auc, total positive weight, total negative weight) for patient weights w (B, P)."""
        K = self.n_buckets
        g = np.asarray((self.bucket_matrix.T @ w.T).T)            # (B, 3K + 1)
        neg_below = np.cumsum(g[:, :K], axis=1)                    # negatives strictly below u_k
        tied, posw = g[:, K + 1:2 * K + 1], g[:, 2 * K + 1:]
        num = np.einsum("bk,bk->b", posw, neg_below + 0.5 * tied)
        tp = posw.sum(axis=1)
        tn = g[:, :K + 1].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            a = num / (tp * tn)
        return a, tp, tn


def _metric_values(cd: _ClusterData, w: np.ndarray, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """Metric values per row of w (NaN where undefined: internal only, never reported)."""
    out = {}
    count_ms = [m for m in metrics if m != "auc"]
    if count_ms:
        c = cd.count_stats(w)
        tp, fp, tn, fn = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
        for m in count_ms:
            num, den = metric_fraction(m, tp, fp, tn, fn)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[m] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    if "auc" in metrics:
        a, tp, tn = cd.auc_stats(w)
        out["auc"] = np.where((tp > 0) & (tn > 0), a, np.nan)
    return out


def _patient_multiplicities(rng: np.random.Generator, n_rows: int, P: int) -> np.ndarray:
    """(n_rows, P) multinomial(P, 1/P) counts: how often each patient is drawn in a resample."""
    draws = rng.integers(0, P, size=(n_rows, P)) + (np.arange(n_rows) * P)[:, None]
    return np.bincount(draws.ravel(), minlength=n_rows * P).reshape(n_rows, P).astype(float)


def _in_chunks(n_rows: int, n_cols: int):
    step = max(1, _CHUNK_CELLS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def _denominator_n(metric: str, conf: dict, n_images: int) -> int:
    if metric in ("auc", "f1"):
        return n_images
    return int(metric_fraction(metric, conf["tp"], conf["fp"], conf["tn"], conf["fn"])[1])


def bootstrap_metrics(labels, scores, patient_ids, threshold: float, *,
                      metrics: Iterable[str] = ALL_METRICS,
                      n_resamples: int = 10000, level: float = 0.95, method: str = "percentile",
                      seed: int = 0) -> dict:
    """Patient-cluster bootstrap of metrics at `threshold` (score >= threshold is positive).

    Each resample draws patients with replacement (multinomial multiplicities) and keeps all of
    a drawn patient's images. The AUC is not estimable with fewer than two positives or two
    negatives (`auc_interval_reason`), as for DeLong. Count metrics come from per-patient
    TP/FP/TN/FN sums by a matrix product; AUC from weighted Mann-Whitney sums over the scores
    sorted once. Resamples where a metric is undefined (e.g. no positive drawn) are counted in
    ``n_degenerate`` and left out of its interval. method "percentile" or "bca" (bias-corrected
    and accelerated, acceleration from the jackknife over patients); when BCa is degenerate
    (every resample equal, or its corrections undefined) the interval falls back to
    Clopper-Pearson for a proportion and to the percentile interval for F1 and AUC, and
    ``fallback`` says why.
    Returns {metric: estimate dict + n_resamples, n_degenerate, n_patients}.
    """
    metrics = tuple(metrics)
    for m in metrics:
        if m not in ALL_METRICS:
            raise StatsError(f"metric {m!r} unknown; use one of {', '.join(ALL_METRICS)}")
    if method not in BOOTSTRAP_METHODS:
        raise StatsError(f"bootstrap method {method!r} unknown; use percentile or bca")
    if not (isinstance(n_resamples, int) and n_resamples >= 1):
        raise StatsError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    level = _check_level(level)
    y, s = _as_arrays(labels, scores)
    if len(np.asarray(patient_ids)) != len(y):
        raise ValueError("patient_ids must have one entry per label")
    if len(y) == 0:
        return {m: not_estimable("no predictions") for m in metrics}

    cd = _ClusterData(y, s, patient_ids, float(threshold))
    P = cd.n_patients
    conf = dict(zip(("tp", "fp", "tn", "fn"), (int(v) for v in cd.counts.sum(axis=0))))
    full = _metric_values(cd, np.ones((1, P)), metrics)
    point = {m: float(v[0]) for m, v in full.items()}

    rng = np.random.default_rng(seed)
    boot = {m: np.empty(n_resamples) for m in metrics}
    for a, b in _in_chunks(n_resamples, P + 3 * cd.n_buckets + 4):
        w = _patient_multiplicities(rng, b - a, P)
        for m, v in _metric_values(cd, w, metrics).items():
            boot[m][a:b] = v

    jack = _jackknife(cd, metrics) if method == "bca" else None
    alpha = 1 - level
    out = {}
    for m in metrics:
        n = _denominator_n(m, conf, len(y))
        if m == "auc" and auc_interval_reason(y):
            out[m] = not_estimable(f"the bootstrap interval: {auc_interval_reason(y)}")
            continue
        if not math.isfinite(point[m]):
            out[m] = not_estimable(f"{m}: not defined on the full sample (denominator zero or one class)")
            continue
        vals = boot[m][np.isfinite(boot[m])]
        n_deg = int(n_resamples - len(vals))
        extra = {"n_resamples": n_resamples, "n_degenerate": n_deg, "n_patients": P, "seed": seed}
        if len(vals) < 2:
            out[m] = not_estimable(f"{m}: fewer than 2 of {n_resamples} resamples were defined")
            continue
        if method == "percentile":
            lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
            out[m] = _estimate(point[m], lo, hi, level, "cluster-bootstrap-percentile", n, **extra)
            continue
        ci, why = _bca_interval(vals, point[m], jack[m], alpha)
        if ci is not None:
            out[m] = _estimate(point[m], ci[0], ci[1], level, "cluster-bootstrap-bca", n, **extra)
        elif m in PROPORTION_METRICS:
            num, den = metric_fraction(m, conf["tp"], conf["fp"], conf["tn"], conf["fn"])
            cp = proportion_ci(num, den, method="clopper-pearson", level=level)
            out[m] = {**cp, **extra, "fallback": f"BCa degenerate ({why}); exact Clopper-Pearson interval"}
        else:
            lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
            out[m] = _estimate(point[m], lo, hi, level, "cluster-bootstrap-percentile", n, **extra,
                               fallback=f"BCa degenerate ({why}); percentile interval")
    return out


def _jackknife(cd: _ClusterData, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """Leave-one-patient-out metric values (P,), NaN where undefined."""
    P = cd.n_patients
    out = {m: np.empty(P) for m in metrics}
    for a, b in _in_chunks(P, P + 3 * cd.n_buckets + 4):
        w = np.ones((b - a, P))
        w[np.arange(b - a), np.arange(a, b)] = 0.0
        for m, v in _metric_values(cd, w, metrics).items():
            out[m][a:b] = v
    return out


def _bca_interval(vals: np.ndarray, theta: float, jack: np.ndarray, alpha: float):
    """(low, high) or (None, reason) for the BCa interval (Efron 1987)."""
    if np.all(vals == vals[0]):
        return None, "every resample gives the same value"
    prop = (np.sum(vals < theta) + 0.5 * np.sum(vals == theta)) / len(vals)
    if prop <= 0 or prop >= 1:
        return None, "the estimate lies outside the bootstrap distribution"
    z0 = sps.norm.ppf(prop)
    jack = jack[np.isfinite(jack)]
    d = jack.mean() - jack if len(jack) > 1 else np.zeros(1)
    denom = 6.0 * np.sum(d ** 2) ** 1.5
    acc = float(np.sum(d ** 3) / denom) if denom > 0 else 0.0
    zs = sps.norm.ppf([alpha / 2, 1 - alpha / 2])
    adj = sps.norm.cdf(z0 + (z0 + zs) / (1 - acc * (z0 + zs)))
    if not np.all(np.isfinite(adj)):
        return None, "the BCa adjusted levels are not defined"
    lo, hi = np.quantile(vals, adj)
    return (float(lo), float(hi)), ""


# --------------------------------------------------------------------------- quantiles

def bootstrap_quantile(values, q: float, *, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """The `q` quantile of independent observations (e.g. per-study seconds) with a percentile
    bootstrap interval (resampling observations with replacement); not estimable below 2 values."""
    level = _check_level(level)
    x = np.asarray(values, dtype=np.float64)
    if not 0 <= q <= 1:
        raise StatsError(f"quantile must be between 0 and 1, got {q!r}")
    if len(x) < 2 or not np.isfinite(x).all():
        return not_estimable(f"{len(x)} finite values: a bootstrap interval needs at least 2")
    rng = np.random.default_rng(seed)
    stats = np.quantile(x[rng.integers(0, len(x), (int(n_resamples), len(x)))], q, axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return _estimate(np.quantile(x, q), lo, hi, level, "bootstrap-percentile", len(x), quantile=q,
                     n_resamples=int(n_resamples))
