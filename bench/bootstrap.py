"""Benchmark: the vectorised patient-cluster bootstrap against two baselines, in one run.

Data: 25,596 synthetic predictions from 2,800 patients. Task: 10,000 resamples of
sensitivity, specificity and AUC.
  (a) naive loop: resample patients, gather their images, call scikit-learn per resample;
      timed on NAIVE_ITERATIONS resamples and scaled linearly to 10,000 (stated in the output).
  (b) scipy.stats.bootstrap: row-level (it cannot resample patients), vectorised, same
      number of resamples and the same three metrics (AUC by ranks along the resample axis).
Goal: >= 50x faster than (a) and faster than (b).
`python -m bench.bootstrap` prints the lines; `main()` returns the timings and ratios.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from scipy import stats as sps
from sklearn.metrics import recall_score, roc_auc_score

from validation.stats import bootstrap_metrics

N_IMAGES = 25_596
N_PATIENTS = 2_800
N_RESAMPLES = 10_000
NAIVE_ITERATIONS = 200
SCIPY_BATCH = 100
THRESHOLD = 0.5
GOAL_NAIVE = 50.0


def synthetic(seed: int = 0):
    """Labels, scores, patient ids: every patient has at least one image; images per patient vary."""
    rng = np.random.default_rng(seed)
    extra = rng.multinomial(N_IMAGES - N_PATIENTS, rng.dirichlet(np.ones(N_PATIENTS)))
    pid = np.repeat(np.arange(N_PATIENTS), 1 + extra)
    sick = rng.random(N_PATIENTS) < 0.1
    y = (sick[pid] & (rng.random(N_IMAGES) < 0.6)).astype(int)
    s = 1 / (1 + np.exp(-rng.normal(1.8 * y - 1.0, 1.0)))
    return y, np.round(s, 4), pid


def naive_loop(y, s, pid, iterations: int, seed: int = 1) -> float:
    """Seconds for `iterations` patient resamples with a Python loop and scikit-learn."""
    rng = np.random.default_rng(seed)
    order = np.argsort(pid, kind="mergesort")
    starts = np.r_[0, np.flatnonzero(np.diff(pid[order])) + 1]
    by_patient = np.split(order, starts[1:])
    pred = (s >= THRESHOLD).astype(int)
    t0 = time.perf_counter()
    for _ in range(iterations):
        drawn = rng.integers(0, N_PATIENTS, N_PATIENTS)
        idx = np.concatenate([by_patient[p] for p in drawn])
        yy, pp = y[idx], pred[idx]
        recall_score(yy, pp, zero_division=0)
        recall_score(1 - yy, 1 - pp, zero_division=0)
        roc_auc_score(yy, s[idx])
    return time.perf_counter() - t0


def _scipy_statistic(yy, ss, axis=-1):
    pred = ss >= THRESHOLD
    pos = yy == 1
    n_pos = pos.sum(axis=axis)
    n_neg = (~pos).sum(axis=axis)
    sens = (pred & pos).sum(axis=axis) / n_pos
    spec = (~pred & ~pos).sum(axis=axis) / n_neg
    ranks = sps.rankdata(ss, axis=axis)
    auc = ((ranks * pos).sum(axis=axis) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.stack([sens, spec, auc])


def scipy_bootstrap(y, s) -> float:
    t0 = time.perf_counter()
    sps.bootstrap((y, s), _scipy_statistic, paired=True, vectorized=True, n_resamples=N_RESAMPLES,
                  batch=SCIPY_BATCH, method="percentile", random_state=np.random.default_rng(2))
    return time.perf_counter() - t0


def main() -> dict:
    y, s, pid = synthetic()
    t0 = time.perf_counter()
    ours = bootstrap_metrics(y, s, pid, THRESHOLD, metrics=("sensitivity", "specificity", "auc"),
                             n_resamples=N_RESAMPLES, seed=0)
    t_ours = time.perf_counter() - t0
    t_naive_part = naive_loop(y, s, pid, NAIVE_ITERATIONS)
    t_naive = t_naive_part * N_RESAMPLES / NAIVE_ITERATIONS
    t_scipy = scipy_bootstrap(y, s)
    result = {
        "n_images": N_IMAGES, "n_patients": N_PATIENTS, "n_resamples": N_RESAMPLES,
        "ours_s": round(t_ours, 3),
        "naive_s_measured": round(t_naive_part, 3), "naive_iterations_measured": NAIVE_ITERATIONS,
        "naive_s_scaled": round(t_naive, 1),
        "scipy_row_bootstrap_s": round(t_scipy, 2),
        "ratio_vs_naive": round(t_naive / t_ours, 1),
        "ratio_vs_scipy": round(t_scipy / t_ours, 1),
        "goal": f">= {GOAL_NAIVE:g}x vs naive, > 1x vs scipy",
        "ours_ci": {m: [round(v["ci_low"], 4), round(v["ci_high"], 4)] for m, v in ours.items()},
    }
    result["goal_met"] = result["ratio_vs_naive"] >= GOAL_NAIVE and result["ratio_vs_scipy"] > 1.0
    print(f"bootstrap: {N_RESAMPLES} patient resamples of sensitivity, specificity, AUC on "
          f"{N_IMAGES} predictions / {N_PATIENTS} patients: {t_ours:.2f} s")
    print(f"  (a) naive loop + scikit-learn: {t_naive_part:.2f} s for {NAIVE_ITERATIONS} resamples, "
          f"scaled to {N_RESAMPLES}: {t_naive:.0f} s -> ratio {result['ratio_vs_naive']}x (goal >= {GOAL_NAIVE:g}x)")
    print(f"  (b) scipy.stats.bootstrap (row-level, vectorised, batch {SCIPY_BATCH}): {t_scipy:.2f} s "
          f"-> ratio {result['ratio_vs_scipy']}x (goal > 1x)")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
