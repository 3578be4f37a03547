"""The paired difference of correlated proportions (validation.paired) against an independent
reference: statsmodels' patient-clustered (cluster-robust) interval of the mean difference."""
from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from validation import paired
from validation.stats import StatsError


def _clustered(seed: int, patients: int = 1500):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, patients)                 # 1 to 3 images per patient
    ids = np.repeat(np.arange(patients), sizes)
    frailty = np.repeat(rng.normal(0, 1, patients), sizes)   # images of one patient are correlated
    old = (rng.normal(0, 1, ids.size) + frailty > -1.0).astype(int)
    new = np.where(rng.random(ids.size) < 0.9, old, (frailty > -0.8).astype(int))   # mostly concordant
    return new, old, ids


@pytest.mark.parametrize("seed", [1, 2])
def test_the_cluster_bootstrap_agrees_with_statsmodels_cluster_robust_interval(seed):
    new, old, ids = _clustered(seed)
    got = paired.paired_difference(new, old, ids, level=0.95, n_resamples=4000, seed=0)
    d = (new - old).astype(float)
    fit = sm.OLS(d, np.ones_like(d)).fit(cov_type="cluster", cov_kwds={"groups": ids})
    low, high = fit.conf_int(alpha=0.05)[0]
    assert got["estimate"] == pytest.approx(fit.params[0], abs=1e-12)
    assert got["ci_low"] == pytest.approx(low, abs=0.004)
    assert got["ci_high"] == pytest.approx(high, abs=0.004)
    assert got["candidate_only"] == int(np.sum((new == 1) & (old == 0)))
    assert got["n_patients"] == len(np.unique(ids))


def test_clustering_widens_the_interval_over_the_independent_one():
    """Patients whose images move together: the clustered interval is wider than the one that
    treats the images as independent (statsmodels without clusters)."""
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(400), 3)
    shift = np.repeat(rng.random(400) < 0.1, 3)           # a patient's three images change together
    old = np.ones(ids.size, dtype=int)
    new = np.where(shift, 0, 1)
    got = paired.paired_difference(new, old, ids, n_resamples=3000)
    d = (new - old).astype(float)
    plain = sm.OLS(d, np.ones_like(d)).fit().conf_int(alpha=0.05)[0]
    assert (got["ci_high"] - got["ci_low"]) > 1.4 * (plain[1] - plain[0])


def test_non_inferiority_reads_the_lower_bound_against_the_margin():
    assert paired.non_inferior({"ci_low": -0.04}, 0.05)
    assert not paired.non_inferior({"ci_low": -0.06}, 0.05)
    assert not paired.non_inferior({"estimable": False, "reason": "no images"}, 0.05)


def test_bad_input_is_refused_and_no_image_is_not_estimable():
    with pytest.raises(StatsError):
        paired.paired_difference([1, 0], [1], ["a", "b"])
    with pytest.raises(StatsError):
        paired.paired_difference([2], [1], ["a"])
    assert paired.paired_difference([], [], [])["estimable"] is False
