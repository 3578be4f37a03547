"""Benchmark: `make submission` on the default demo, timed, and the demo's goals checked independently.

Runs `make submission` (DATA=demo, params.yaml) into a fresh run folder (default `build/bench/demo`,
removed first) and measures its wall time and CPU time (user + sys of make and every process it
waited for) with the load average before and after, since a shared machine slows the wall time.
Then, from the per-image scores the run wrote (`predictions/val.csv`, `predictions/test.csv`) and
independently of the pipeline's own statistics, it checks what the demo must show:

- the test split holds at least `MIN_IMAGES` positive and `MIN_IMAGES` negative images, and at least
  the plan's own powered numbers (record `validation.sample_size`, `data.power`), and the validation
  split at least `MIN_VAL` of each;
- the operating point by the target-sensitivity rule: the highest validation score whose
  validation sensitivity (score >= threshold is positive) is at least `validate.target_sensitivity`;
- test sensitivity and specificity at it with exact two-sided 95% Clopper-Pearson intervals
  (statsmodels, method "beta"): both lower bounds above `GOAL`; the test AUC (scikit-learn).

Goal: all of it within `GOAL_SECONDS` (5 minutes) of wall time on a 2-core CPU. The data are
synthetic: this is evidence that the demo works as a demonstration, never about a device.
`python -m bench.demo [OUT]` prints the lines; `main()` returns the numbers.
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
GOAL = 0.80
MIN_IMAGES, MIN_VAL = 125, 20
GOAL_SECONDS = 300.0


def target_sensitivity_threshold(labels, scores, target: float) -> float:
    """The highest score t with sensitivity(score >= t) >= target on these labelled scores."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    if not labels.any():
        raise ValueError("no positive case: the target-sensitivity threshold is not defined")
    for t in np.unique(scores)[::-1]:
        if (scores[labels] >= t).mean() >= target:
            return float(t)
    raise AssertionError("unreachable: the lowest score gives sensitivity 1")


def clopper_pearson(k: int, n: int, level: float = 0.95) -> dict:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=1 - level, method="beta")
    return {"estimate": k / n, "ci_low": float(low), "ci_high": float(high), "k": int(k), "n": int(n)}


def goals(out: str | Path, target_sensitivity: float) -> dict:
    """The demo's checks from `OUT/predictions/{val,test}.csv` (see the module docstring)."""
    from sklearn.metrics import roc_auc_score

    out = Path(out)
    val, test = (pd.read_csv(out / "predictions" / f"{s}.csv") for s in ("val", "test"))
    plan = json.loads((out / "evidence" / "validation.sample_size.json").read_text())["data"]["power"]
    required = max(plan["positives"], plan["negatives"])   # the plan's own powered numbers
    counts = {name: {"positives": int(d["label"].sum()), "negatives": int((d["label"] == 0).sum()),
                     "patients": int(d["patient_id"].nunique())} for name, d in (("val", val), ("test", test))}
    threshold = target_sensitivity_threshold(val["label"], val["score"], target_sensitivity)
    pos, neg = test["score"][test["label"] == 1], test["score"][test["label"] == 0]
    sens = clopper_pearson(int((pos >= threshold).sum()), len(pos))
    spec = clopper_pearson(int((neg < threshold).sum()), len(neg))
    checks = {
        "test_size": min(counts["test"]["positives"], counts["test"]["negatives"]) >= max(MIN_IMAGES, required),
        "val_size": min(counts["val"]["positives"], counts["val"]["negatives"]) >= MIN_VAL,
        "sensitivity_goal": sens["ci_low"] > GOAL,
        "specificity_goal": spec["ci_low"] > GOAL,
    }
    return {"counts": counts, "required_per_class": required, "threshold": threshold,
            "target_sensitivity": target_sensitivity,
            "val_sensitivity": float((val["score"][val["label"] == 1] >= threshold).mean()),
            "test_sensitivity": sens, "test_specificity": spec,
            "test_auc": float(roc_auc_score(test["label"], test["score"])),
            "val_auc": float(roc_auc_score(val["label"], val["score"])),
            "checks": checks, "passed": all(checks.values())}


def timed_make(out: Path) -> dict:
    """`make submission` on the default demo into `out` (removed first): wall, CPU and load."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(["make", "--no-print-directory", "submission", f"OUT={out}", "DATA=demo",
                           f"PARAMS={REPO / 'params.yaml'}"], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"make submission failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return {"wall_s": round(wall, 1), "user_s": round(after.ru_utime - before.ru_utime, 1),
            "sys_s": round(after.ru_stime - before.ru_stime, 1), "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}


def main(out: str | Path | None = None) -> dict:
    out = Path(out or REPO / "build" / "bench" / "demo").resolve()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    timing = timed_make(out)
    result = {"out": str(out), "timing": timing, **goals(out, float(params["validate"]["target_sensitivity"]))}
    result["checks"]["time"] = timing["wall_s"] <= GOAL_SECONDS
    result["passed"] = all(result["checks"].values())
    c, s, p = result["counts"], result["test_sensitivity"], result["test_specificity"]
    print(f"demo: make submission {timing['wall_s']:.0f} s wall, {timing['user_s'] + timing['sys_s']:.0f} s CPU "
          f"(user+sys) on {timing['cpus']} CPUs, load {timing['load_before'][0]:.1f} -> {timing['load_after'][0]:.1f} "
          f"(goal <= {GOAL_SECONDS:.0f} s wall)")
    print(f"demo: test {c['test']['positives']} positive / {c['test']['negatives']} negative images "
          f"(plan requires {result['required_per_class']} each), val {c['val']['positives']} / {c['val']['negatives']}")
    print(f"demo: threshold {result['threshold']:.6f} (val sensitivity {result['val_sensitivity']:.3f} >= "
          f"{result['target_sensitivity']}); test AUC {result['test_auc']:.4f}; sensitivity {s['k']}/{s['n']} "
          f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}], specificity {p['k']}/{p['n']} [{p['ci_low']:.3f}, "
          f"{p['ci_high']:.3f}] (95% Clopper-Pearson; goal: lower bounds > {GOAL})")
    print("demo: " + ("all checks passed" if result["passed"] else
                      "FAILED: " + ", ".join(k for k, ok in result["checks"].items() if not ok)))
    return result


def cli(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="run folder to build (default: build/bench/demo)")
    return 0 if main(parser.parse_args(argv).out)["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli())
