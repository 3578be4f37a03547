"""Acceptance criteria: hand-written in params `validate.acceptance`, judged against metrics.

A criterion is ``{metric, bound, op, value}`` with optional ``method``:
    metric: one of `validation.stats.ALL_METRICS`
    bound:  estimate | ci_low | ci_high
    op:     >= | > | <= | <
    method: which estimate of the metric to judge (default: the patient-cluster bootstrap,
            which allows for several images per patient; then delong, then wilson)
"""
from __future__ import annotations

import operator

from evidence.errors import ToolkitError

from .stats import ALL_METRICS

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
BOUNDS = ("estimate", "ci_low", "ci_high")
#: The estimates a criterion may name, in the order tried when it names none.
METHODS = ("bootstrap", "delong", "wilson")


class CriteriaError(ToolkitError, ValueError):
    pass


def check_criteria(criteria) -> list[dict]:
    """Validate the criteria list; raise CriteriaError naming the entry and the fix."""
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
        if isinstance(c["value"], bool) or not isinstance(c["value"], (int, float)):
            raise CriteriaError(f"{where}: value must be a number, got {c['value']!r}")
        out.append(dict(c))
    return out


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
    """Judge each criterion: {"criteria": [...], "all_passed": bool}.

    metrics maps a metric name to an estimate dict, or to {method: estimate dict}.
    A missing or non-estimable value fails its criterion, with the reason.
    """
    results = []
    for c in check_criteria(criteria):
        est, method = _pick(metrics.get(c["metric"]), c["metric"], c.get("method"))
        row = {"metric": c["metric"], "method": method, "bound": c["bound"], "op": c["op"],
               "value": float(c["value"])}
        if est is None:
            row.update(observed=None, passed=False,
                       reason=f"metric {c['metric']!r} (method {c.get('method')!r}) was not reported")
        elif est.get("estimable") is False or c["bound"] not in est:
            row.update(observed=None, passed=False, reason=est.get("reason", "not estimable"))
        else:
            observed = float(est[c["bound"]])
            row.update(observed=observed, passed=bool(OPS[c["op"]](observed, float(c["value"]))))
        row["statement"] = (f"{c['metric']} {c['bound']} ({row['method']}) {c['op']} {c['value']}")
        results.append(row)
    return {"criteria": results, "all_passed": all(r["passed"] for r in results)}
