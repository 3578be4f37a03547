"""Choose the operating point on the validation split only, and lock it in `validation.threshold`.

    python -m validation.threshold --out OUT --params PARAMS

Rules (params `validate.threshold_rule`): max_f1 | youden | target_sensitivity (with
`target_sensitivity`). An image is called positive when ``score >= threshold``; the threshold
is one of the observed validation scores. Ties between candidate thresholds go to the highest.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from evidence import layout, write_record
from evidence.params import section
from evidence.cli import stage_main

from . import stats
from .stats import StatsError
from .predictions import InputError, read_predictions

RECORD_ID = "validation.threshold"
RULES = ("max_f1", "youden", "target_sensitivity")
CI_LEVEL = 0.95


def candidate_curve(labels, scores) -> dict[str, np.ndarray]:
    """For each distinct score t (descending): tp, fp, tn, fn of the rule score >= t."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    order = np.argsort(-s, kind="mergesort")
    s_desc, y_desc = s[order], y[order]
    last_of_group = np.r_[s_desc[1:] != s_desc[:-1], True]
    tp = np.cumsum(y_desc)[last_of_group]
    fp = np.cumsum(1 - y_desc)[last_of_group]
    P, N = int(y.sum()), int(len(y) - y.sum())
    return {"threshold": s_desc[last_of_group], "tp": tp, "fp": fp, "tn": N - fp, "fn": P - tp}


def choose_threshold(labels, scores, rule: str, *, target_sensitivity: float | None = None) -> float:
    """The locked threshold by `rule`; needs both classes."""
    if rule not in RULES:
        raise StatsError(f"threshold_rule {rule!r} unknown; use one of {', '.join(RULES)}")
    y = np.asarray(labels, dtype=int)
    if y.sum() == 0 or y.sum() == len(y):
        raise StatsError("choosing a threshold needs validation images of both classes")
    c = candidate_curve(y, scores)
    tp, fp, tn, fn = (c[k].astype(float) for k in ("tp", "fp", "tn", "fn"))
    if rule == "max_f1":
        crit = 2 * tp / (2 * tp + fp + fn)
        i = int(np.argmax(crit))
    elif rule == "youden":
        crit = tp / (tp + fn) + tn / (tn + fp) - 1
        i = int(np.argmax(crit))
    else:
        if target_sensitivity is None or not 0 < float(target_sensitivity) <= 1:
            raise StatsError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity!r}")
        ok = np.flatnonzero(tp / (tp + fn) >= float(target_sensitivity))
        i = int(ok[0])  # the highest threshold reaching the target: the best specificity there
    return float(c["threshold"][i])


def operating_point(labels, scores, patient_ids, threshold: float, *, level: float) -> dict:
    """Counts and metrics at `threshold` (Wilson intervals for the proportions)."""
    conf = stats.confusion(labels, scores, threshold)
    tp, fp, tn, fn = conf["tp"], conf["fp"], conf["tn"], conf["fn"]
    metrics = {}
    for m in stats.PROPORTION_METRICS:
        num, den = stats.metric_fraction(m, tp, fp, tn, fn)
        metrics[m] = stats.proportion_ci(num, den, method="wilson", level=level)
    metrics["f1"] = stats.point_metrics(tp, fp, tn, fn)["f1"]
    return {"n": len(labels), "n_patients": int(len(set(map(str, patient_ids)))),
            "positives": int(np.sum(labels)), "confusion": conf, "metrics": metrics}


def check_params(p: dict) -> dict:
    """The validate settings the threshold needs (checked by evidence.params), with defaults."""
    return {"threshold_rule": p.get("threshold_rule", "max_f1"), "target_sensitivity": p.get("target_sensitivity"),
            "ci_level": p.get("ci_level", CI_LEVEL)}


def run(out_dir: str | Path, params: dict) -> dict:
    out_dir = Path(out_dir)
    p = check_params(params)
    val_path = layout.predictions(out_dir, "val")
    df = read_predictions(val_path)
    y, s = df["label"].to_numpy(), df["score"].to_numpy()
    if y.sum() == 0 or y.sum() == len(y):
        raise InputError(f"{val_path}: the validation split has only one class "
                         f"({int(y.sum())} positives of {len(y)}); a threshold needs both")
    t = choose_threshold(y, s, p["threshold_rule"], target_sensitivity=p["target_sensitivity"])
    data = {"threshold": t, "rule": p["threshold_rule"], "decision": "positive when score >= threshold",
            "split": "val"}
    if p["threshold_rule"] == "target_sensitivity":
        data["target_sensitivity"] = float(p["target_sensitivity"])
    data["validation"] = operating_point(y, s, df["patient_id"], t, level=p["ci_level"])
    return write_record(out_dir, RECORD_ID, data=data, params=params,
                        deps=[val_path], dep_records=["model.predictions"])


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m validation.threshold", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "validate")),
        summary=lambda record, a: (f"validation.threshold: {record['data']['rule']} -> "
                                   f"threshold {record['data']['threshold']:.6g}"))


if __name__ == "__main__":
    sys.exit(main())
