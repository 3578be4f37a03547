"""The paired difference of correlated proportions (validation.paired) against independent references:
Newcombe's hybrid score interval against a published worked example and against a computation from
statsmodels' Wilson intervals and numpy's correlation; the patient-cluster bootstrap against
statsmodels' patient-clustered (cluster-robust) interval of the mean difference; the planning sample
size against statsmodels' normal power solver."""
from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint

from validation import paired
from validation.stats import StatsError


def test_newcombe_matches_the_published_worked_example():
    """Cavo et al. (2012), complete response before and after consolidation therapy, 161 patients:
    59 responded at both times, 6 before only, 16 after only, 80 at neither. Newcombe's
    square-and-add (hybrid score, method 10) interval of the difference: -0.0621 (95% CI -0.1186 to
    -0.0046), Fagerland, Lydersen and Laake, Statistical Analysis of Contingency Tables (CRC 2017),
    chapter 8, the paired 2x2 table (the same values in the tests of the R package contingencytables
    that accompanies the book, tests/testthat/test-ch8.R)."""
    got = paired.newcombe_interval(59, 6, 16, 80, level=0.95)
    assert got["estimate"] == pytest.approx(-0.0621, abs=5e-5)
    assert got["ci_low"] == pytest.approx(-0.1186, abs=5e-5)
    assert got["ci_high"] == pytest.approx(-0.0046, abs=5e-5)


def _independent_newcombe(e, f, g, h, level):
    """Newcombe (1998) method 10 from statsmodels' Wilson intervals and the phi coefficient as numpy's
    Pearson correlation of the two 0/1 vectors, with Newcombe's correction of phi."""
    n = e + f + g + h
    a = np.array([1] * e + [1] * f + [0] * g + [0] * h)      # the candidate correct
    b = np.array([1] * e + [0] * f + [1] * g + [0] * h)      # the cleared model correct
    p1, p2 = a.mean(), b.mean()
    l1, u1 = proportion_confint(a.sum(), n, alpha=1 - level, method="wilson")
    l2, u2 = proportion_confint(b.sum(), n, alpha=1 - level, method="wilson")
    if a.std() == 0 or b.std() == 0:
        phi = 0.0
    else:
        r = np.corrcoef(a, b)[0, 1]
        denominator = math.sqrt((e + f) * (g + h) * (e + g) * (f + h))
        cross = r * denominator                               # e*h - f*g
        phi = (cross - n / 2) / denominator if cross > n / 2 else (0.0 if cross >= 0 else r)
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = p1 - p2 + math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    return low, high


@pytest.mark.parametrize("seed", range(6))
def test_newcombe_agrees_with_an_independent_computation(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        e, f, g, h = (int(x) for x in rng.integers(0, 60, 4))
        if rng.random() < 0.3:
            f = g = 0                                          # zero discordance
        if e + f + g + h == 0:
            continue
        level = float(rng.choice([0.9, 0.95, 0.99]))
        got = paired.newcombe_interval(e, f, g, h, level=level)
        low, high = _independent_newcombe(e, f, g, h, level)
        assert got["ci_low"] == pytest.approx(max(-1.0, low), abs=1e-9), (e, f, g, h)
        assert got["ci_high"] == pytest.approx(min(1.0, high), abs=1e-9), (e, f, g, h)


def test_zero_discordance_gives_a_real_interval_and_small_n_cannot_show_non_inferiority():
    """The two models agree on every image: the bootstrap collapses to [0, 0] and would pass any
    margin; Newcombe's interval keeps the width the number of images allows, and the decision reads
    it: 40 positives cannot show a margin of 0.05, 2,000 can."""
    small = np.r_[np.ones(36, int), np.zeros(4, int)]
    ids = np.arange(small.size)
    boot = paired.cluster_bootstrap(small, small, ids, n_resamples=500)
    assert boot["ci_low"] == boot["ci_high"] == 0.0
    got = paired.compare(small, small, ids, n_resamples=500, decision="both")
    assert got["candidate_only"] == got["cleared_only"] == 0
    assert got["ci_low"] == got["newcombe"]["ci_low"] < -0.05
    assert not paired.non_inferior(got, 0.05)
    large = np.r_[np.ones(1800, int), np.zeros(200, int)]
    got = paired.compare(large, large, np.arange(large.size), n_resamples=200)
    assert -0.05 < got["ci_low"] < 0 and paired.non_inferior(got, 0.05)


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
    got = paired.cluster_bootstrap(new, old, ids, level=0.95, n_resamples=4000, seed=0)
    d = (new - old).astype(float)
    fit = sm.OLS(d, np.ones_like(d)).fit(cov_type="cluster", cov_kwds={"groups": ids})
    low, high = fit.conf_int(alpha=0.05)[0]
    assert got["estimate"] == pytest.approx(fit.params[0], abs=1e-12)
    assert got["ci_low"] == pytest.approx(low, abs=0.004)
    assert got["ci_high"] == pytest.approx(high, abs=0.004)
    assert got["n_patients"] == len(np.unique(ids))


def test_clustering_widens_the_interval_and_the_decision_reads_the_lower_bound():
    """Patients whose three images change together: the clustered interval is wider than the one
    that treats the images as independent (statsmodels without clusters), and `both` reads it."""
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(400), 3)
    shift = np.repeat(rng.random(400) < 0.1, 3)
    old = np.ones(ids.size, dtype=int)
    new = np.where(shift, 0, 1)
    got = paired.compare(new, old, ids, n_resamples=3000)
    boot = got["cluster_bootstrap"]
    d = (new - old).astype(float)
    plain = sm.OLS(d, np.ones_like(d)).fit().conf_int(alpha=0.05)[0]
    assert (boot["ci_high"] - boot["ci_low"]) > 1.4 * (plain[1] - plain[0])
    assert got["ci_low"] == min(boot["ci_low"], got["newcombe"]["ci_low"]) == boot["ci_low"]
    assert got["candidate_only"] == 0 and got["cleared_only"] == int(shift.sum())
    only = paired.compare(new, old, ids, n_resamples=3000, decision="newcombe")
    assert only["ci_low"] == got["newcombe"]["ci_low"] > got["ci_low"]


@pytest.mark.parametrize("margin,discordance,power", [(0.05, 0.10, 0.8), (0.05, 0.05, 0.9), (0.10, 0.2, 0.8)])
def test_the_planning_sample_size_matches_statsmodels_normal_power(margin, discordance, power):
    """A one-sample z test of the per-image difference (variance = discordance at a true difference
    of zero), one-sided at 0.025: statsmodels' NormalIndPower with ratio 0 is that test."""
    effect = margin / math.sqrt(discordance)
    n = NormalIndPower().solve_power(effect_size=effect, alpha=0.025, power=power, ratio=0, alternative="larger")
    assert paired.required_pairs(margin, discordance, level=0.95, power=power) == math.ceil(n - 1e-6)


def test_non_inferiority_reads_the_lower_bound_against_the_margin():
    assert paired.non_inferior({"ci_low": -0.04}, 0.05)
    assert not paired.non_inferior({"ci_low": -0.06}, 0.05)
    assert not paired.non_inferior({"estimable": False, "reason": "no images"}, 0.05)


def test_bad_input_is_refused_and_no_image_is_not_estimable():
    with pytest.raises(StatsError):
        paired.compare([1, 0], [1], ["a", "b"])
    with pytest.raises(StatsError):
        paired.compare([2], [1], ["a"])
    with pytest.raises(StatsError):
        paired.compare([1], [1], ["a"], decision="wald")
    with pytest.raises(StatsError):
        paired.newcombe_interval(-1, 0, 0, 3)
    assert paired.compare([], [], [])["estimable"] is False
    assert paired.newcombe_interval(0, 0, 0, 0)["estimable"] is False
