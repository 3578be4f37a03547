"""Performance goals: pre-specified in params `validate.acceptance`, judged against metrics.

A goal is ``{metric, bound, op, value}`` with optional ``method``, ``primary``, ``anticipated`` and
``justification``:
    metric:        one of `validation.stats.ALL_METRICS`
    bound:         estimate | ci_low | ci_high
    op:            >= | > | <= | <
    value:         the goal (e.g. 0.80: the lower bound must lie above it)
    method:        which estimate of the metric to judge (default: the patient-cluster bootstrap,
                   which allows for several images per patient; then delong, wilson, clopper-pearson)
    primary:       true (default) when the goal decides the study; false: a secondary goal, reported
                   against its value but not deciding
    anticipated:   the performance expected of the device, for the power calculation
                   (`validation.sample_size`); must exceed a lower-bound goal
    justification: ids of the published predicate performance the goal rests on
                   (`submission/data/predicate_performance.yml`, checked by `validation.sample_size`)

The study passes when every primary goal is met (`all_passed`); secondary goals are judged and
reported (`passed` true or false) without deciding it.
"""
from __future__ import annotations

import operator

from evidence.errors import ToolkitError

from .stats import ALL_METRICS

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
BOUNDS = ("estimate", "ci_low", "ci_high")
#: The estimates a criterion may name, in the order tried when it names none.
METHODS = ("bootstrap", "delong", "wilson", "clopper-pearson")
#: How a goal reads in a document.
OP_WORDS = {">=": "at or above", ">": "above", "<=": "at or below", "<": "below"}
METHOD_WORDS = {"clopper-pearson": "exact (Clopper-Pearson)", "wilson": "Wilson score",
                "delong": "DeLong", "bootstrap": "patient-cluster bootstrap"}
METRIC_WORDS = {"auc": "AUC", "ppv": "PPV", "npv": "NPV", "f1": "F1"}
#: A lower-bound goal: what the exact binomial power calculation sizes.
LOWER_BOUND_OPS = (">", ">=")


class CriteriaError(ToolkitError, ValueError):
    pass


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_criteria(criteria) -> list[dict]:
    """Validate the goals; raise CriteriaError naming the entry and the fix."""
    if not isinstance(criteria, list) or not criteria:
        raise CriteriaError("params validate.acceptance must be a non-empty list of "
                            "{metric, bound, op, value} entries")
    out = []
    for i, c in enumerate(criteria):
        where = f"params validate.acceptance[{i}]"
        if not isinstance(c, dict):
            raise CriteriaError(f"{where} must be a mapping with metric, bound, op, value")
        missing = [k for k in ("metric", "bound", "op", "value") if k not in c]
        if missing:
            raise CriteriaError(f"{where} lacks {', '.join(missing)}")
        if c["metric"] not in ALL_METRICS:
            raise CriteriaError(f"{where}: metric {c['metric']!r} unknown; use one of {', '.join(ALL_METRICS)}")
        if c["bound"] not in BOUNDS:
            raise CriteriaError(f"{where}: bound {c['bound']!r} unknown; use one of {', '.join(BOUNDS)}")
        if c["op"] not in OPS:
            raise CriteriaError(f"{where}: op {c['op']!r} unknown; use one of {', '.join(OPS)}")
        if not _number(c["value"]):
            raise CriteriaError(f"{where}: value must be a number, got {c['value']!r}")
        if c.get("method") is not None and c["method"] not in METHODS:
            raise CriteriaError(f"{where}: method {c['method']!r} unknown; use one of {', '.join(METHODS)}")
        if not isinstance(c.get("primary", True), bool):
            raise CriteriaError(f"{where}: primary must be true or false, got {c['primary']!r}")
        if "anticipated" in c:
            a = c["anticipated"]
            if not _number(a) or not 0 < a < 1:
                raise CriteriaError(f"{where}: anticipated must be a number between 0 and 1, got {a!r}")
            if is_lower_bound_goal(c) and not a > c["value"]:
                raise CriteriaError(f"{where}: anticipated {a} must exceed the goal {c['value']}: a study "
                                    "cannot be powered to show performance above what is expected")
        ids = c.get("justification", [])
        if not isinstance(ids, list) or not all(isinstance(x, str) and x for x in ids):
            raise CriteriaError(f"{where}: justification must be a list of predicate ids "
                                f"(keys of devices in submission/data/predicate_performance.yml), got {ids!r}")
        out.append(dict(c))
    if not any(c.get("primary", True) for c in out):
        raise CriteriaError("params validate.acceptance: no goal is primary; mark at least one `primary: true` "
                            "(the study passes when every primary goal is met)")
    return out


def is_lower_bound_goal(c: dict) -> bool:
    """A goal on the lower confidence bound: `ci_low` above (or at) the value."""
    return c["bound"] == "ci_low" and c["op"] in LOWER_BOUND_OPS


def _goal_text(value: float) -> str:
    value = float(value)
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


def describe(c: dict, ci_level: float | None = None) -> str:
    """The goal in words, e.g. "sensitivity: lower bound of the two-sided 95% exact (Clopper-Pearson)
    interval above 0.80"."""
    metric = METRIC_WORDS.get(c["metric"], c["metric"])
    method = METHOD_WORDS.get(c.get("method") or "", c.get("method") or "")
    level = ""
    if ci_level is not None:
        pct = float(ci_level) * 100
        level = f"two-sided {pct:.0f}% " if abs(pct - round(pct)) < 1e-9 else f"two-sided {pct:g}% "
    goal = f"{OP_WORDS[c['op']]} {_goal_text(c['value'])}"
    if c["bound"] == "estimate":
        return f"{metric}: point estimate{f' ({method})' if method else ''} {goal}"
    side = "lower" if c["bound"] == "ci_low" else "upper"
    return f"{metric}: {side} bound of the {level}{method + ' ' if method else ''}interval {goal}".replace("  ", " ")


def _pick(entry, metric: str, method: str | None):
    """The estimate dict to judge: entry may be an estimate itself or {method: estimate}."""
    if not isinstance(entry, dict):
        return None, None
    if "estimate" in entry or entry.get("estimable") is False:
        return entry, entry.get("method", method)
    wanted = [method] if method else [*METHODS, *entry]
    for name in wanted:
        if name in entry and isinstance(entry[name], dict):
            return entry[name], name
    return None, None


def evaluate(criteria, metrics: dict) -> dict:
    """Judge every goal: {"criteria": [...], "all_passed": bool, "n_primary", "n_secondary",
    "n_secondary_passed"}.

    metrics maps a metric name to an estimate dict, or to {method: estimate dict}.
    A missing or non-estimable value fails its goal, with the reason. `all_passed` is true when
    every primary goal is met; secondary goals carry `passed` but do not decide it.
    """
    results = []
    for c in check_criteria(criteria):
        est, method = _pick(metrics.get(c["metric"]), c["metric"], c.get("method"))
        primary = bool(c.get("primary", True))
        row = {"metric": c["metric"], "method": method, "bound": c["bound"], "op": c["op"],
               "value": float(c["value"]), "primary": primary}
        if est is None:
            row.update(observed=None, passed=False,
                       reason=f"metric {c['metric']!r} (method {c.get('method')!r}) was not reported")
        elif est.get("estimable") is False or c["bound"] not in est:
            row.update(observed=None, passed=False, reason=est.get("reason", "not estimable"))
        else:
            observed = float(est[c["bound"]])
            row.update(observed=observed, passed=bool(OPS[c["op"]](observed, float(c["value"]))))
        level = est.get("ci_level") if isinstance(est, dict) else None
        row["statement"] = describe({**c, "method": method}, level if _number(level) else None)
        results.append(row)
    secondary = [r["passed"] for r in results if not r["primary"]]
    return {"criteria": results, "all_passed": all(r["passed"] for r in results if r["primary"]),
            "n_primary": sum(r["primary"] for r in results), "n_secondary": len(secondary),
            "n_secondary_passed": sum(secondary)}
