"""Sample size by power for a performance goal on a proportion (sensitivity or specificity).

The study tests H0: p <= goal against H1: p > goal with an exact one-sided binomial test at level
`alpha`: with n cases, the goal is met when the number of successes x reaches the critical value

    k(n) = min{k : P(X >= k | n, goal) <= alpha},

which is the same as the one-sided exact (Clopper-Pearson) lower bound at 1 - alpha lying above the
goal. Its power at the anticipated performance p1 is P(X >= k(n) | n, p1). Because the binomial is
discrete, power is not monotone in n (the "sawtooth"): `exact_binomial_n` returns both the smallest
n that reaches the power and the smallest n from which every larger n (up to the search bound) does,
and the plan uses the latter.
"""
from __future__ import annotations

import numpy as np
from scipy.special import betainc

from .stats import StatsError

MAX_N = 20_000


def _upper_tail(k: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    """P(X >= k) for X ~ Binomial(n, p), elementwise; 1 for k <= 0, 0 for k > n."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    inside = (k >= 1) & (k <= n)
    out = np.where(k <= 0, 1.0, 0.0)
    # P(X >= k) = I_p(k, n - k + 1), the regularized incomplete beta function.
    safe_k, safe_rest = np.where(inside, k, 1.0), np.where(inside, n - k + 1, 1.0)
    return np.where(inside, betainc(safe_k, safe_rest, p), out)


def critical_successes(n: np.ndarray, goal: float, alpha: float) -> np.ndarray:
    """k(n): the fewest successes out of n for which the exact one-sided test rejects p <= goal."""
    n = np.asarray(n, dtype=int)
    k = np.ceil(n * goal).astype(int)           # P(X >= k) <= alpha needs k above the null mean
    while True:
        too_likely = _upper_tail(k, n, goal) > alpha
        if not too_likely.any():
            return k
        k = k + too_likely


def power(n: int, goal: float, anticipated: float, alpha: float = 0.025) -> float:
    """Power of the exact one-sided binomial test of p <= goal with n cases when p = anticipated."""
    _check(goal, anticipated, alpha, 0.5)
    k = critical_successes(np.array([n]), goal, alpha)
    return float(_upper_tail(k, np.array([n]), anticipated)[0])


def exact_binomial_n(goal: float, anticipated: float, *, alpha: float = 0.025, target: float = 0.80,
                     max_n: int = MAX_N) -> dict:
    """The number of cases (positives for sensitivity, negatives for specificity) for the exact test.

    Returns `n_first` (the smallest n with power >= target), `n` (the smallest n from which every
    n up to `max_n` has power >= target), the critical successes and power at `n`, and the inputs."""
    _check(goal, anticipated, alpha, target)
    ns = np.arange(1, max_n + 1)
    powers = _upper_tail(critical_successes(ns, goal, alpha), ns, anticipated)
    ok = powers >= target
    if not ok[-1]:
        raise StatsError(f"power {target} is not reached with up to {max_n} cases for goal {goal} and "
                         f"anticipated performance {anticipated}; raise the anticipated value or the goal margin")
    first = int(ns[np.argmax(ok)])
    failing = np.flatnonzero(~ok)
    stable = int(ns[failing[-1] + 1]) if failing.size else 1
    k = int(critical_successes(np.array([stable]), goal, alpha)[0])
    return {"n": stable, "n_first": first, "critical_successes": k,
            "power": float(powers[stable - 1]), "goal": goal, "anticipated": anticipated,
            "alpha": alpha, "target_power": target, "test": "exact binomial, one-sided"}


def _check(goal: float, anticipated: float, alpha: float, target: float) -> None:
    if not 0 < goal < anticipated < 1:
        raise StatsError(f"exact binomial power needs 0 < goal < anticipated < 1, got goal {goal} and "
                         f"anticipated {anticipated}")
    if not 0 < alpha < 0.5 or not 0 < target < 1:
        raise StatsError(f"alpha must be in (0, 0.5) and power in (0, 1), got {alpha} and {target}")
