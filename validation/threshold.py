"""Choose the operating point on the validation split only, and lock it in `validation.threshold`.

    python -m validation.threshold --out OUT --params PARAMS

Rules (params `validate.threshold_rule`):

- target_sensitivity (default; the triage rule): the highest threshold whose validation
  sensitivity reaches `target_sensitivity`, judged on the estimate or, with
  `target_bound: ci_low`, on the lower bound of its Wilson interval at `ci_level`. The highest
  such threshold has the best specificity among them. When no threshold reaches a lower-bound
  target (too few validation positives: even flagging every image leaves the bound below it) the
  stage stops with `ThresholdError`, naming the positives needed; there is no fallback rule.
- max_f1, youden: the threshold maximising F1, or sensitivity + specificity - 1.

An image is called positive when ``score >= threshold``; the threshold is one of the observed
validation scores. Ties between candidate thresholds go to the highest.

The record says whether the operating point is estimable from the data: not when the split stage
recorded the val split below its pre-specified minimum and the run was allowed to proceed
(`split.patients` `validation_adequacy`); the rule is still applied and the reason recorded.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from evidence import layout, write_record
from evidence.manifest import validation_adequacy
from evidence.params import section
from evidence.cli import stage_main

from . import stats
from .stats import StatsError
from .predictions import InputError, read_predictions

RECORD_ID = "validation.threshold"
RULES = ("max_f1", "youden", "target_sensitivity")
TARGET_BOUNDS = ("estimate", "ci_low")
CI_LEVEL = 0.95
DEFAULTS = {"threshold_rule": "target_sensitivity", "target_sensitivity": 0.90, "target_bound": "estimate"}

#: Why each rule, in words (the documents render it beside the numbers of the record).
WHY = {
    "target_sensitivity": (
        "The device is a triage aid: a missed pneumonia leaves the study in its ordinary place on the worklist, "
        "so the reading of a sick patient is not expedited, while a false flag moves a study up the worklist and "
        "delays the others; a miss is weighed above a false flag, so sensitivity is fixed first and the highest "
        "threshold reaching the target is taken, which gives the best specificity at that sensitivity"),
    "max_f1": ("The threshold maximizes F1 (the harmonic mean of sensitivity and positive predictive value) on "
               "the validation split; it does not fix sensitivity, so it is not a triage rule"),
    "youden": ("The threshold maximizes Youden's J (sensitivity + specificity - 1) on the validation split, "
               "weighing a missed pneumonia and a false flag equally; it is not a triage rule"),
}


class ThresholdError(StatsError):
    """No validation threshold satisfies the rule's target."""


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


def wilson_low(k, n, level: float) -> np.ndarray:
    """Lower bound of the two-sided Wilson interval at `level` (statsmodels), elementwise."""
    lo, _ = proportion_confint(np.asarray(k), np.asarray(n), alpha=1 - level, method="wilson")
    return np.clip(np.asarray(lo, dtype=float), 0.0, 1.0)


def positives_needed(target: float, level: float) -> int | None:
    """Fewest positives, all detected, whose Wilson lower bound at `level` reaches `target`
    (n / (n + z^2) >= target); None when no number does (target 1)."""
    if target >= 1:
        return None
    z2 = norm.ppf(1 - (1 - level) / 2) ** 2
    n = max(1, math.ceil(z2 * target / (1 - target)) - 1)
    while wilson_low(n, n, level) < target:
        n += 1
    return n


def _check_target(target_sensitivity, target_bound: str) -> float:
    if target_sensitivity is None or isinstance(target_sensitivity, bool) or not 0 < float(target_sensitivity) <= 1:
        raise StatsError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity!r}")
    if target_bound not in TARGET_BOUNDS:
        raise StatsError(f"target_bound {target_bound!r} unknown; use one of {', '.join(TARGET_BOUNDS)}")
    return float(target_sensitivity)


def choose_threshold(labels, scores, rule: str, *, target_sensitivity: float | None = None,
                     target_bound: str = "estimate", level: float = CI_LEVEL) -> float:
    """The locked threshold by `rule`; needs both classes. Raises ThresholdError when no threshold
    reaches a lower-bound sensitivity target."""
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
        target = _check_target(target_sensitivity, target_bound)
        P = int(y.sum())
        met = tp / P if target_bound == "estimate" else wilson_low(c["tp"], P, level)
        ok = np.flatnonzero(met >= target - 1e-12)
        if not len(ok):  # only the lower bound can miss: the lowest threshold has sensitivity 1
            need = positives_needed(target, level)
            raise ThresholdError(
                f"no validation threshold reaches a sensitivity lower bound (Wilson, {level:.0%}) of {target:g}: "
                f"with {P} validation positives even flagging every image gives a lower bound of "
                f"{float(wilson_low(P, P, level)):.3f}; "
                + (f"at least {need} validation positives, all detected, are needed. " if need else
                   "no number of positives reaches a lower bound of 1. ")
                + "Use more validation positives (a larger cohort or split.fractions), validate.target_bound: "
                  "estimate, or a lower validate.target_sensitivity")
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
    out = {k: p.get(k, v) for k, v in DEFAULTS.items()}
    out["ci_level"] = p.get("ci_level", CI_LEVEL)
    return out


def rationale(p: dict, point: dict, adequacy: dict | None) -> dict:
    """Why this rule, what the target is and how it was met on how many validation positives."""
    out = {"rule": p["threshold_rule"], "why": WHY[p["threshold_rule"]],
           "n_positives": point["positives"], "n_negatives": point["n"] - point["positives"]}
    if p["threshold_rule"] == "target_sensitivity":
        sens = point["metrics"]["sensitivity"]
        bound = p["target_bound"]
        out.update(target=float(p["target_sensitivity"]), bound=bound,
                   met_by=("the validation sensitivity estimate" if bound == "estimate" else
                           f"the lower bound of the two-sided {p['ci_level']:.0%} Wilson interval of the "
                           "validation sensitivity"),
                   achieved=sens["estimate"] if bound == "estimate" else sens["ci_low"])
    estimable = adequacy is None or bool(adequacy.get("adequate", True))
    out["estimable_from_data"] = estimable
    if not estimable:
        out["reason"] = (f"The validation split holds {adequacy['positives']} pneumonia images (pre-specified "
                         f"minimum {adequacy['min_positives']}, split.min_val_positives) and {adequacy['negatives']} "
                         f"non-pneumonia images (minimum {adequacy['min_negatives']}, split.min_val_negatives); the "
                         "run proceeded only because split.allow_inadequate_val is true: the threshold follows the "
                         "rule, but the operating point is not estimable from the data")
    return out


def run(out_dir: str | Path, params: dict) -> dict:
    out_dir = Path(out_dir)
    p = check_params(params)
    val_path = layout.predictions(out_dir, "val")
    df = read_predictions(val_path)
    y, s = df["label"].to_numpy(), df["score"].to_numpy()
    if y.sum() == 0 or y.sum() == len(y):
        raise InputError(f"{val_path}: the validation split has only one class "
                         f"({int(y.sum())} positives of {len(y)}); a threshold needs both")
    t = choose_threshold(y, s, p["threshold_rule"], target_sensitivity=p["target_sensitivity"],
                         target_bound=p["target_bound"], level=p["ci_level"])
    data = {"threshold": t, "rule": p["threshold_rule"], "decision": "positive when score >= threshold",
            "split": "val"}
    if p["threshold_rule"] == "target_sensitivity":
        data["target_sensitivity"] = float(p["target_sensitivity"])
        data["target_bound"] = p["target_bound"]
    data["validation"] = operating_point(y, s, df["patient_id"], t, level=p["ci_level"])
    adequacy = validation_adequacy(out_dir)
    data["rationale"] = rationale(p, data["validation"], adequacy)
    data["estimable_from_data"] = data["rationale"]["estimable_from_data"]
    if not data["estimable_from_data"]:
        data["not_estimable_reason"] = data["rationale"]["reason"]
    data["validation_adequacy"] = adequacy if adequacy is not None else {
        "recorded": False, "reason": "no validation_adequacy in record split.patients (absent or older run)"}
    deps = ["model.predictions"] + (["split.patients"] if adequacy is not None else [])
    return write_record(out_dir, RECORD_ID, data=data, params=params, deps=[val_path], dep_records=deps)


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m validation.threshold", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "validate")),
        summary=lambda record, a: (f"validation.threshold: {record['data']['rule']} -> "
                                   f"threshold {record['data']['threshold']:.6g}"
                                   + ("" if record["data"]["estimable_from_data"] else
                                      " (not estimable from the data: validation split below its minimum)")))


if __name__ == "__main__":
    sys.exit(main())
