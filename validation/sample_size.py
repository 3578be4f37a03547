"""The pre-specified design: the held-out sample size by power, and the analysis.

    python -m validation.sample_size --out OUT --params PARAMS

Sample size by power (`data.power` of record `validation.sample_size`): for each primary
performance goal on sensitivity or specificity (params `validate.acceptance`, a lower-bound goal
with its `anticipated` performance), the number of positives (sensitivity) or negatives
(specificity) for which the exact one-sided binomial test of the goal at level
`validate.sample_size.alpha` has power `validate.sample_size.power` at the anticipated performance
(`validation.power.exact_binomial_n`, the stable n: every larger n has that power too); the joint
power of the co-primary endpoints (disjoint cases: the product); the total at the intended-use
prevalence (`validate.sample_size.prevalence`, its source in `prevalence_source`) and the total of
an enriched design (`enrichment.positives_fraction`); the per-stratum minimums of the pre-specified
subgroups (params `validate.min_subgroup_positives`, `validate.min_subgroup_negatives`).

Buderer (1996), the precision of sensitivity and specificity to within ±`half_width` at the
planned `sensitivity`, `specificity` and prevalence, stays as a cross-check: the record's
`positives`, `negatives`, `total` and `design`.

Each goal's `justification` must name devices of `submission/data/predicate_performance.yml`.
Then record `validation.design` (`validation.design.design`: endpoints, performance goals,
analysis methods, CI level, bootstrap settings, operating-point rule, sample size). It reads no
result: the plan rendered from these records is locked before any test-split score or held-out
data exists.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from evidence import write_record
from evidence.cli import stage_main
from evidence.errors import ToolkitError
from evidence.params import ParamsError, section
from evidence.safeyaml import YamlRefused, load as load_yaml

from . import acceptance, power, stats
from .design import check_statistics, design as design_data
from .subgroups import CATEGORICAL, TESTED_VARIABLES
from .threshold import CI_LEVEL

RECORD_ID, DESIGN_ID = "validation.sample_size", "validation.design"
KEYS = ("sensitivity", "specificity", "prevalence", "half_width")
#: The published predicate performance the goals cite (hashed as the stage's code).
PREDICATES = Path(__file__).resolve().parent.parent / "submission" / "data" / "predicate_performance.yml"
#: Defaults of the power calculation (params validate.sample_size).
ALPHA, POWER, POSITIVES_FRACTION = 0.025, 0.80, 0.5
#: Whether `power` is that of all primary goals together (joint) or of each goal.
POWER_OF = "joint"
#: The proportion endpoints sized by the exact binomial test, and the cases each is measured on.
CASES = {"sensitivity": "positives", "specificity": "negatives"}
#: The subgroups the plan pre-specifies: the held-out set's header strata, then those of every split.
SUBGROUP_STRATA = (*(name for _, name in CATEGORICAL), *(v.replace("_", " ") for v in TESTED_VARIABLES))


class DesignError(ToolkitError, ValueError):
    """The pre-specified design cannot be computed from params; the message names the parameter."""


def check_params(p: dict) -> dict:
    """The planned design (ranges checked by evidence.params); the section must be there."""
    design = p.get("sample_size")
    if design is None:
        raise ParamsError("params validate.sample_size: missing; set sensitivity, specificity, "
                          "prevalence and half_width (e.g. 0.90, 0.90, 0.013, 0.05)")
    return {**{k: float(design[k]) for k in KEYS}, "ci_level": p.get("ci_level", CI_LEVEL)}


def known_predicates(path: Path = PREDICATES) -> dict:
    """The devices of the predicate performance facts file, by id."""
    try:
        facts = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except YamlRefused as e:
        raise DesignError(str(e)) from None
    devices = facts.get("devices") if isinstance(facts, dict) else None
    if not isinstance(devices, dict) or not devices:
        raise DesignError(f"{path}: expected a mapping `devices` of predicate ids")
    return devices


def check_justification(criteria: list[dict], devices: dict) -> None:
    """Every id a goal cites is a device of the facts file; raise DesignError naming it otherwise."""
    for i, c in enumerate(criteria):
        unknown = [x for x in c.get("justification", []) if x not in devices]
        if unknown:
            raise DesignError(
                f"params validate.acceptance[{i}].justification: {', '.join(map(repr, unknown))} "
                f"{'is' if len(unknown) == 1 else 'are'} not in {PREDICATES.name}; known ids: "
                f"{', '.join(devices)} (add the device to submission/data/predicate_performance.yml "
                "or cite one of these)")


def cited_performance(criteria: list[dict], devices: dict) -> list[dict]:
    """For each goal, the published estimates of its metric by the predicates it cites, the lowest,
    and whether the goal lies below every one of them."""
    out = []
    for i, c in enumerate(criteria):
        cited = []
        for x in c.get("justification", []):
            entry = devices[x].get(c["metric"]) if isinstance(devices[x], dict) else None
            est = entry.get("estimate") if isinstance(entry, dict) else None
            cited.append({"id": x, "estimate": float(est) if isinstance(est, (int, float)) else
                          stats.not_estimable(f"{x} publishes no {c['metric']}")})
        published = [e for e in cited if isinstance(e["estimate"], float)]
        lowest = min(published, key=lambda e: e["estimate"]) if published else None
        out.append({"index": i, "metric": c["metric"], "value": float(c["value"]), "cited": cited,
                    "lowest": dict(lowest) if lowest else stats.not_estimable(f"no cited predicate publishes {c['metric']}"),
                    "below_every_cited": bool(published) and all(float(c["value"]) < e["estimate"] for e in published)})
    return out


def _ceil(x: float) -> int:
    return math.ceil(x - 1e-9)


def _total(positives: int, negatives: int, positives_fraction: float) -> dict:
    """The fewest cases holding `positives` and `negatives` when a fraction of them are positive."""
    total = _ceil(max(positives / positives_fraction, negatives / (1 - positives_fraction)))
    expected_pos = total * positives_fraction
    return {"total": total, "positives_expected": float(expected_pos), "negatives_expected": float(total - expected_pos)}


def power_design(p: dict, criteria: list[dict]) -> dict:
    """`data.power`: the positives and negatives by exact binomial power, and the totals."""
    design = p["sample_size"]
    alpha, target = float(design.get("alpha", ALPHA)), float(design.get("power", POWER))
    power_of = design.get("power_of", POWER_OF)
    prevalence = float(design["prevalence"])
    fraction = float((design.get("enrichment") or {}).get("positives_fraction", POSITIVES_FRACTION))
    endpoints, not_sized, sized = [], [], []
    for i, c in enumerate(criteria):
        if not c.get("primary", True):
            continue
        if c["metric"] not in CASES or not acceptance.is_lower_bound_goal(c):
            not_sized.append({"index": i, "metric": c["metric"], "reason": (
                "a goal on the lower confidence bound of sensitivity or specificity is sized by the exact "
                "binomial test; this goal is not one" if c["metric"] in CASES else
                f"{c['metric']}: not sized by the exact binomial calculation (sensitivity and specificity are)")})
            continue
        sized.append((i, c))
    # joint: the study passes only when every primary goal is met, so the goals together must have the
    # power; on disjoint cases the joint power is the product, and each of k goals is sized for power^(1/k)
    per_goal = target ** (1 / len(sized)) if power_of == "joint" and sized else target
    for i, c in sized:
        if "anticipated" not in c:
            raise DesignError(f"params validate.acceptance[{i}]: the primary {c['metric']} goal needs `anticipated`, "
                              "the performance expected of the device, for the power calculation (e.g. 0.90)")
        try:
            n = power.exact_binomial_n(float(c["value"]), float(c["anticipated"]), alpha=alpha, target=per_goal)
        except stats.StatsError as e:
            raise DesignError(f"params validate.acceptance[{i}] with validate.sample_size alpha {alpha} and power "
                              f"{target} ({power_of}; {per_goal:.3f} for this goal): {e}") from None
        endpoints.append({"index": i, "metric": c["metric"], "cases": CASES[c["metric"]],
                          "method": c.get("method") or acceptance.METHODS[0],
                          "justification": list(c.get("justification", [])), **n})
    needed = {}
    for e in endpoints:   # several goals on one endpoint: the largest n serves them all
        needed[e["cases"]] = max(needed.get(e["cases"], 0), e["n"])
    for e in endpoints:   # the power of each goal at the cases the plan provides
        e["power_at_planned_n"] = power.power(needed[e["cases"]], e["goal"], e["anticipated"], alpha=alpha)
    joint = math.prod(e["power_at_planned_n"] for e in endpoints) if endpoints else None
    missing = [k for k in ("positives", "negatives") if k not in needed]
    out = {"test": "exact binomial, one-sided", "alpha": alpha, "target_power": target, "power_of": power_of,
           "per_goal_power": per_goal, "one_sided_level": 1 - alpha,
           "endpoints": endpoints, "not_sized": not_sized,
           "positives": needed.get("positives", stats.not_estimable("no primary lower-bound goal on sensitivity")),
           "negatives": needed.get("negatives", stats.not_estimable("no primary lower-bound goal on specificity")),
           "joint_power": (float(joint) if joint is not None
                           else stats.not_estimable("no primary goal sized by the exact binomial test")),
           "joint_power_rule": "product of the powers of the primary endpoints (disjoint cases: positives "
                               "for sensitivity, negatives for specificity)",
           "prevalence": prevalence, "prevalence_source": str(design.get("prevalence_source") or
                                                              "not stated (params validate.sample_size.prevalence_source)"),
           "enrichment": {"positives_fraction": fraction}}
    if missing:
        reason = f"no powered {' or '.join(missing)}: the totals need both"
        out["at_prevalence"] = stats.not_estimable(reason)
        out["enrichment"]["total"] = stats.not_estimable(reason)
    else:
        out["at_prevalence"] = _total(needed["positives"], needed["negatives"], prevalence)
        out["enrichment"].update(_total(needed["positives"], needed["negatives"], fraction))
    return out


def subgroup_minimums(params: dict) -> dict:
    """The per-stratum rule for the pre-specified subgroups."""
    mins = check_statistics(params)   # the per-stratum minimums, with the analysis defaults
    return {"strata": list(SUBGROUP_STRATA), "min_positives": mins["min_subgroup_positives"],
            "min_negatives": mins["min_subgroup_negatives"],
            "rule": "each stratum holds at least min_positives positives for its sensitivity and at least "
                    "min_negatives negatives for its specificity; below either, that estimate is reported "
                    "as not estimable with the count"}


def run(out_dir: str | Path, params: dict) -> dict[str, dict]:
    design = check_params(params)
    criteria = acceptance.check_criteria(params.get("acceptance"))
    devices = known_predicates()
    check_justification(criteria, devices)
    result = stats.buderer_sample_size(design["sensitivity"], design["specificity"], design["prevalence"],
                                       design["half_width"], level=design["ci_level"])
    data = {"design": design, **result, "power": power_design(params, criteria),
            "subgroups": subgroup_minimums(params), "justification": cited_performance(criteria, devices)}
    analysis = design_data(params, data)   # checks the whole section before anything is written
    written = {RECORD_ID: write_record(out_dir, RECORD_ID, data=data, params=params, synthetic=False)}
    written[DESIGN_ID] = write_record(out_dir, DESIGN_ID, data=analysis, params=params, synthetic=False)
    return written


def _summary(written: dict, args) -> str:
    d = written[RECORD_ID]["data"]
    pw, goals = d["power"], written[DESIGN_ID]["data"]["acceptance_criteria"]

    def show(v):
        return f"{v:,}" if isinstance(v, int) else "not estimable"
    sized = (f"{show(pw['positives'])} positives and {show(pw['negatives'])} negatives by exact binomial power"
             + (f" (joint power {pw['joint_power']:.3f})" if isinstance(pw["joint_power"], float) else "")
             + (f", {pw['at_prevalence']['total']:,} at prevalence {pw['prevalence']:g}, "
                f"{pw['enrichment']['total']:,} enriched" if "total" in pw["at_prevalence"] else ""))
    return (f"validation.sample_size: {sized}; Buderer cross-check {d['positives']:,} positives, {d['negatives']:,} "
            f"negatives, {d['total']:,} in all; design of {len(goals)} performance goals")


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m validation.sample_size", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "validate")), summary=_summary)


if __name__ == "__main__":
    sys.exit(main())
