"""validation.power against a worked example by hand and an independent computation with scipy's
binomial distribution."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from validation.power import critical_successes, exact_binomial_n, power
from validation.stats import StatsError

pytestmark = pytest.mark.verifies("SRS-023")


def _upper(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1))


def test_worked_example_by_hand():
    # goal 0.5, anticipated 0.9, one-sided alpha 0.025: with 12 cases the test needs 10 successes,
    # since P(X >= 10 | 12, 0.5) = 79/4096 = 0.0193 <= 0.025 < P(X >= 9 | 12, 0.5) = 299/4096;
    # power = P(X >= 10 | 12, 0.9) = 0.8891; 11 cases need 10 successes too, with power 0.6974.
    assert critical_successes(np.array([12, 11]), 0.5, 0.025).tolist() == [10, 10]
    assert _upper(10, 12, 0.5) == pytest.approx(79 / 4096) and _upper(9, 12, 0.5) == pytest.approx(299 / 4096)
    assert power(12, 0.5, 0.9) == pytest.approx(_upper(10, 12, 0.9), abs=1e-12)
    assert power(12, 0.5, 0.9) == pytest.approx(0.8891, abs=1e-4)
    assert power(11, 0.5, 0.9) == pytest.approx(0.6974, abs=1e-4)
    design = exact_binomial_n(0.5, 0.9)
    assert design["n_first"] == 12 and design["critical_successes"] >= 10


def _scipy_design(goal: float, anticipated: float, alpha: float, target: float, max_n: int):
    """The same definition computed independently: the critical value from binom.sf, n by search."""
    powers = []
    for n in range(1, max_n + 1):
        ks = np.arange(0, n + 2)
        k = int(ks[np.argmax(binom.sf(ks - 1, n, goal) <= alpha)])
        powers.append(binom.sf(k - 1, n, anticipated))
    powers = np.array(powers)
    first = int(np.argmax(powers >= target)) + 1
    failing = np.flatnonzero(powers < target)
    return first, int(failing[-1]) + 2


@pytest.mark.parametrize("goal, anticipated", [(0.80, 0.90), (0.85, 0.95), (0.70, 0.85), (0.90, 0.97)])
def test_sample_size_equals_an_independent_scipy_search(goal, anticipated):
    design = exact_binomial_n(goal, anticipated, max_n=600)
    first, stable = _scipy_design(goal, anticipated, 0.025, 0.80, 600)
    assert (design["n_first"], design["n"]) == (first, stable)
    assert design["power"] >= 0.80 and design["n"] >= design["n_first"]
    # the exact test is stricter than the normal approximation would suggest, never looser
    z = 1.959963984540054 * math.sqrt(goal * (1 - goal)) + 0.8416212335729143 * math.sqrt(anticipated * (1 - anticipated))
    assert design["n"] >= 0.8 * (z / (anticipated - goal)) ** 2


def test_power_is_a_sawtooth_and_the_plan_takes_the_stable_n():
    design = exact_binomial_n(0.80, 0.90, max_n=600)
    ns = np.arange(design["n_first"], design["n"] + 1)
    powers = [power(int(n), 0.80, 0.90) for n in ns]
    assert powers[0] >= 0.80 and min(powers) < 0.80 or design["n_first"] == design["n"]
    assert all(power(int(n), 0.80, 0.90) >= 0.80 for n in range(design["n"], design["n"] + 50))


@pytest.mark.parametrize("goal, anticipated", [(0.9, 0.8), (0.0, 0.5), (0.5, 1.0)])
def test_impossible_designs_are_refused(goal, anticipated):
    with pytest.raises(StatsError, match="goal < anticipated"):
        exact_binomial_n(goal, anticipated)


# ----------------------------------------------------------------------------- published and independent references

@pytest.mark.parametrize("goal, anticipated, target, n_first, stable", [
    (0.80, 0.90, 0.80, 107, 113),   # REFERENCES.md: 0.90 vs 0.80 -> 107 for 80% power, stable from 113
    (0.80, 0.90, 0.90, 137, None),  # 137 for 90% power
    (0.80, 0.95, 0.80, 41, 48),     # 0.95 vs 0.80 -> 41 (48)
    (0.75, 0.85, 0.80, 132, 142),   # 0.85 vs 0.75 -> 132 (142)
    (0.85, 0.90, 0.80, 356, None),  # 0.90 vs 0.85 -> 356
])
def test_worked_numbers_of_references(goal, anticipated, target, n_first, stable):
    design = exact_binomial_n(goal, anticipated, target=target, max_n=1000)
    assert design["n_first"] == n_first
    if stable is not None:
        assert design["n"] == stable
    # and the same numbers from scipy's binomial distribution, searched over n one by one
    assert _scipy_design(goal, anticipated, 0.025, target, 1000) == (design["n_first"], design["n"])


def test_default_plan_needs_113_cases_with_99_correct_calls():
    """The default goal (0.80, anticipated 0.90): 113 cases, met with 99 correct calls or more."""
    design = exact_binomial_n(0.80, 0.90)
    assert (design["n"], design["critical_successes"]) == (113, 99)
    assert binom.sf(98, 113, 0.80) <= 0.025 < binom.sf(97, 113, 0.80)
    assert design["power"] == pytest.approx(binom.sf(98, 113, 0.90), abs=1e-12)


@pytest.mark.parametrize("goal", [0.6, 0.75, 0.8, 0.9])
@pytest.mark.parametrize("n", [20, 57, 113, 250])
def test_critical_value_is_where_the_exact_test_and_the_clopper_pearson_bound_say_met(goal, n):
    """The goal is met (k >= k(n)) exactly when scipy's one-sided exact binomial test rejects p <= goal
    at 0.025, and exactly when statsmodels' two-sided 95% Clopper-Pearson lower bound lies above the goal."""
    from scipy.stats import binomtest
    from statsmodels.stats.proportion import proportion_confint

    k_crit = int(critical_successes(np.array([n]), goal, 0.025)[0])
    for k in range(max(0, k_crit - 4), min(n, k_crit + 4) + 1):
        met = k >= k_crit
        assert (binomtest(k, n, goal, alternative="greater").pvalue <= 0.025) == met, (k, n, goal)
        lower = proportion_confint(k, n, alpha=0.05, method="beta")[0]
        assert (lower > goal) == met, (k, n, goal, lower)


def test_power_equals_scipy_binomial_tail_at_the_critical_value():
    for n in (30, 107, 110, 113):
        k = int(critical_successes(np.array([n]), 0.80, 0.025)[0])
        assert power(n, 0.80, 0.90) == pytest.approx(binom.sf(k - 1, n, 0.90), abs=1e-12)
    # the sawtooth: 107 reaches 80% power, some n between it and 113 does not
    assert power(107, 0.80, 0.90) >= 0.80 and min(power(n, 0.80, 0.90) for n in range(108, 113)) < 0.80
