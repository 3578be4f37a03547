"""validation.stats against independent references (statsmodels, scipy, scikit-learn, literature)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from validation import stats

pytestmark = pytest.mark.verifies("SRS-022")

SM_NAMES = {"wilson": "wilson", "clopper-pearson": "beta", "jeffreys": "jeffreys", "agresti-coull": "agresti_coull"}


@pytest.mark.parametrize("method", list(SM_NAMES))
@pytest.mark.parametrize("k,n", [(0, 10), (7, 20), (139, 150), (20, 20), (1, 1)])
def test_proportion_ci_matches_statsmodels(method, k, n):
    got = stats.proportion_ci(k, n, method=method, level=0.9)
    lo, hi = proportion_confint(k, n, alpha=0.1, method=SM_NAMES[method])
    assert got["estimate"] == pytest.approx(k / n)
    assert got["ci_low"] == pytest.approx(max(0.0, lo), abs=1e-12)
    assert got["ci_high"] == pytest.approx(min(1.0, hi), abs=1e-12)
    assert (got["method"], got["n"], got["ci_level"]) == (method, n, 0.9)


def test_wilson_and_clopper_pearson_by_formula():
    k, n, z = 7, 20, sps.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    w = stats.proportion_ci(k, n)
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((centre - half, centre + half), abs=1e-10)
    cp = stats.proportion_ci(k, n, method="clopper-pearson")
    assert cp["ci_low"] == pytest.approx(sps.beta.ppf(0.025, k, n - k + 1), abs=1e-10)
    assert cp["ci_high"] == pytest.approx(sps.beta.ppf(0.975, k + 1, n - k), abs=1e-10)


def test_proportion_ci_bad_input():
    assert stats.proportion_ci(0, 0) == {"estimable": False, "reason": "no cases in the denominator (n = 0)"}
    with pytest.raises(ValueError, match="k <= n"):
        stats.proportion_ci(5, 3)
    with pytest.raises(ValueError, match="unknown"):
        stats.proportion_ci(1, 3, method="wald")
    with pytest.raises(ValueError, match="level"):
        stats.proportion_ci(1, 3, level=95)


def _data(n=300, seed=1, ties=True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    s = rng.normal(y * 1.2, 1.0)
    return y, (np.round(s, 1) if ties else s)


def test_auc_matches_sklearn_with_ties():
    y, s = _data()
    assert stats.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert stats.delong_auc_ci(y, s)["estimate"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_bootstrap_resample_auc_matches_weighted_sklearn():
    """The vectorised weighted Mann-Whitney equals sklearn's AUC with integer sample weights."""
    y, s = _data(200)
    pid = np.arange(200) // 2
    cd = stats._ClusterData(y, s, pid.astype(str), 0.5)
    rng = np.random.default_rng(3)
    w = rng.multinomial(cd.n_patients, np.full(cd.n_patients, 1 / cd.n_patients), size=5).astype(float)
    a, _, _ = cd.auc_stats(w)
    counts = cd.count_stats(w)
    for b in range(5):
        wi = w[b, cd.patient_of]
        assert a[b] == pytest.approx(roc_auc_score(y, s, sample_weight=wi), abs=1e-12)
        pred = s >= 0.5
        assert counts[b, 0] == pytest.approx(wi[pred & (y == 1)].sum())
        assert counts[b, 3] == pytest.approx(wi[~pred & (y == 1)].sum())


def test_percentile_ci_close_to_scipy_bootstrap_when_unclustered():
    y, s = _data(400, seed=5, ties=False)
    pred = (s >= 0.5).astype(int)
    got = stats.bootstrap_metrics(y, s, np.arange(len(y)), 0.5, metrics=("sensitivity", "auc"),
                                  n_resamples=4000, seed=11)

    def sens(lab, pr, axis=-1):
        return np.sum(lab * pr, axis=axis) / np.sum(lab, axis=axis)

    ref = sps.bootstrap((y, pred), sens, paired=True, vectorized=True, n_resamples=4000,
                        method="percentile", random_state=np.random.default_rng(2)).confidence_interval
    assert got["sensitivity"]["ci_low"] == pytest.approx(ref.low, abs=0.02)
    assert got["sensitivity"]["ci_high"] == pytest.approx(ref.high, abs=0.02)
    assert got["sensitivity"]["method"] == "cluster-bootstrap-percentile"
    assert got["sensitivity"]["estimate"] == pytest.approx(sens(y, pred))
    # AUC: against scipy as well (unclustered, each row resampled)
    ref_auc = sps.bootstrap((y, s), lambda a, b: roc_auc_score(a, b), paired=True, vectorized=False,
                            n_resamples=1000, method="percentile",
                            random_state=np.random.default_rng(4)).confidence_interval
    assert got["auc"]["ci_low"] == pytest.approx(ref_auc.low, abs=0.02)
    assert got["auc"]["ci_high"] == pytest.approx(ref_auc.high, abs=0.02)


def test_cluster_bootstrap_resamples_patients_not_images():
    """Copying every image three times under the same patient changes nothing; as separate
    patients, it narrows the interval (the naive row bootstrap's error)."""
    y, s = _data(150, seed=7)
    one = stats.bootstrap_metrics(y, s, np.arange(150), 0.5, n_resamples=500, seed=3)
    y3, s3 = np.repeat(y, 3), np.repeat(s, 3)
    same = stats.bootstrap_metrics(y3, s3, np.repeat(np.arange(150), 3), 0.5, n_resamples=500, seed=3)
    rows = stats.bootstrap_metrics(y3, s3, np.arange(450), 0.5, n_resamples=500, seed=3)
    for m in ("sensitivity", "specificity", "ppv", "npv", "f1", "auc"):
        assert same[m]["ci_low"] == pytest.approx(one[m]["ci_low"], abs=1e-12)
        assert same[m]["ci_high"] == pytest.approx(one[m]["ci_high"], abs=1e-12)
        assert rows[m]["ci_high"] - rows[m]["ci_low"] < same[m]["ci_high"] - same[m]["ci_low"]
    assert same["auc"]["n_patients"] == 150 and same["auc"]["n"] == 450


def test_bootstrap_counts_degenerate_resamples():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.6, 0.2, 0.1])
    out = stats.bootstrap_metrics(y, s, np.arange(8), 0.5, n_resamples=1000, seed=0)
    # P(no positive drawn) = (7/8)^8 = 0.344
    assert 0.29 < out["sensitivity"]["n_degenerate"] / 1000 < 0.40
    assert out["auc"]["estimable"] is False  # one positive: no AUC interval (see below)
    assert out["specificity"]["n_degenerate"] == 0


def test_bootstrap_not_estimable_without_positives():
    out = stats.bootstrap_metrics([0, 0, 0], [0.1, 0.7, 0.2], ["a", "b", "c"], 0.5, n_resamples=100)
    assert out["sensitivity"]["estimable"] is False and out["auc"]["estimable"] is False
    assert out["specificity"]["estimate"] == pytest.approx(2 / 3)


def test_bca_close_to_scipy_bca_when_unclustered():
    y, s = _data(400, seed=9, ties=False)
    pred = (s >= 0.3).astype(int)
    got = stats.bootstrap_metrics(y, s, np.arange(400), 0.3, metrics=("specificity",), n_resamples=4000,
                                  method="bca", seed=1)["specificity"]
    ref = sps.bootstrap((y, pred), lambda a, b, axis=-1: np.sum((1 - a) * (1 - b), axis=axis) / np.sum(1 - a, axis=axis),
                        paired=True, vectorized=True, n_resamples=4000, method="BCa",
                        random_state=np.random.default_rng(0)).confidence_interval
    assert got["method"] == "cluster-bootstrap-bca"
    assert got["ci_low"] == pytest.approx(ref.low, abs=0.02)
    assert got["ci_high"] == pytest.approx(ref.high, abs=0.02)


def test_bca_degenerate_falls_back_to_exact_interval():
    y = np.array([1] * 12 + [0] * 20)
    s = np.r_[np.full(12, 0.9), np.linspace(0, 0.8, 20)]
    got = stats.bootstrap_metrics(y, s, np.arange(32), 0.5, metrics=("sensitivity",), n_resamples=300,
                                  method="bca")["sensitivity"]
    cp = proportion_confint(12, 12, alpha=0.05, method="beta")
    assert got["method"] == "clopper-pearson" and "BCa degenerate" in got["fallback"]
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(cp)


def _delong_quadratic(y, scores_list):
    """Textbook O(m n) DeLong (1988): placement values psi(X_i, Y_j), covariance of V10 and V01."""
    pos_i, neg_i = y == 1, y == 0
    v10, v01, aucs = [], [], []
    for s in scores_list:
        x, z = s[pos_i], s[neg_i]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    m, n = pos_i.sum(), neg_i.sum()
    cov = np.cov(np.array(v10)) / m + np.cov(np.array(v01)) / n
    return np.array(aucs), np.atleast_2d(cov)


def test_delong_hanley_mcneil_1982_rating_data():
    """Hanley & McNeil (Radiology 1982) CT rating data: 58 normal, 51 abnormal; AUC 0.893."""
    neg, pos = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    y = np.r_[np.zeros(sum(neg)), np.ones(sum(pos))].astype(int)
    s = np.r_[np.repeat(np.arange(1, 6), neg), np.repeat(np.arange(1, 6), pos)].astype(float)
    got = stats.delong_auc_ci(y, s)
    assert round(got["estimate"], 3) == 0.893
    aucs, cov = _delong_quadratic(y, [s])
    assert got["se"] == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-10)
    # Hanley-McNeil's exponential approximation gives SE 0.032; DeLong's is close to it
    assert abs(got["se"] - 0.032) < 0.003
    assert got["ci_low"] == pytest.approx(got["estimate"] - 1.959964 * got["se"], abs=1e-6)


def test_delong_test_matches_quadratic_reference():
    rng = np.random.default_rng(2)
    y = (rng.random(150) < 0.4).astype(int)
    a = np.round(rng.normal(y, 1.0), 1)
    b = np.round(a + rng.normal(0, 0.8, 150), 1)
    got = stats.delong_test(y, a, b)
    aucs, cov = _delong_quadratic(y, [a, b])
    z = (aucs[0] - aucs[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert got["z"] == pytest.approx(z, rel=1e-9)
    assert got["p_value"] == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-9)
    same = stats.delong_test(y, a, a)
    assert (same["z"], same["p_value"]) == (0.0, 1.0)
    assert stats.delong_auc_ci([1, 1], [0.2, 0.3])["estimable"] is False


@pytest.mark.parametrize("labels", [[1, 0, 0, 0, 0], [0, 1, 1, 1, 1]])
def test_delong_is_not_estimable_with_a_single_case_of_a_class(labels):
    scores = [0.9, 0.1, 0.4, 0.6, 0.3]
    got = stats.delong_auc_ci(labels, scores)
    assert got["estimable"] is False and "at least two positives and two negatives" in got["reason"]
    assert stats.delong_test(labels, scores, scores[::-1])["estimable"] is False
    assert stats.auc(labels, scores) == pytest.approx(1.0 if labels[0] else 0.0)
    two = stats.delong_auc_ci([1, 1, 0, 0, 0], scores)
    assert two["n_positive"] == 2 and two["ci_low"] <= two["estimate"] <= two["ci_high"]


@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("single", [1, 0])
def test_bootstrap_auc_is_not_estimable_with_a_single_case_of_a_class(method, single):
    """A single positive gave a bootstrap AUC interval before (resamples holding it had an AUC):
    every AUC interval, bootstrap as DeLong, needs two positives and two negatives."""
    rng = np.random.default_rng(0)
    y = np.full(40, 1 - single)
    y[7] = single
    s = rng.random(40)
    got = stats.bootstrap_metrics(y, s, np.arange(40) // 2, 0.5, n_resamples=300, method=method)
    assert got["auc"]["estimable"] is False
    assert got["auc"]["reason"] == ("the bootstrap interval: an AUC interval needs at least two positives and "
                                    f"two negatives (positives {int(y.sum())}, negatives {int(40 - y.sum())})")
    assert stats.delong_auc_ci(y, s)["reason"].startswith("the DeLong interval: an AUC interval needs")
    assert stats.is_estimable(got["accuracy"])  # the count metrics keep their intervals
    y[8] = single
    assert stats.is_estimable(stats.bootstrap_metrics(y, s, np.arange(40) // 2, 0.5, n_resamples=300,
                                                      method=method)["auc"])


def test_buderer_by_hand():
    got = stats.buderer_sample_size(0.90, 0.85, 0.20, 0.05)
    z = 1.959963984540054
    assert got["positives"] == 139 == math.ceil(z * z * 0.9 * 0.1 / 0.05 ** 2)
    assert got["negatives"] == math.ceil(z * z * 0.85 * 0.15 / 0.0025) == 196
    assert got["total"] == math.ceil(max(139 / 0.2, 196 / 0.8)) == 695
    with pytest.raises(ValueError, match="prevalence"):
        stats.buderer_sample_size(0.9, 0.9, 0.0, 0.05)


def test_ppv_npv_at_prevalence_by_hand():
    got = stats.ppv_npv_at_prevalence(0.9, 0.9, 0.013)
    assert got["ppv"] == pytest.approx(0.9 * 0.013 / (0.9 * 0.013 + 0.1 * 0.987))
    assert 0.10 < got["ppv"] < 0.11
    assert got["npv"] == pytest.approx(0.9 * 0.987 / (0.9 * 0.987 + 0.1 * 0.013))
    assert stats.ppv_npv_at_prevalence(0.0, 1.0, 0.1)["ppv"]["estimable"] is False
