"""The predetermined change control plan's acceptance criteria, written once into record `pccp.plan`.

    python -m validation.pccp_plan --out OUT --params PARAMS

Reads params section `pccp` (margins, subgroup margin, threshold bounds, confidence level, the
test set rule) and the plan's facts file `submission/data/pccp.yml` (checked against
`submission/pccp.schema.json`), and writes `pccp.plan`: the criteria as `make pccp-check` applies
them and the PCCP document prints them. `make pccp-check` reads the CLEARED run's record, so a
candidate is judged by the plan that was in force when the device was cleared.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from evidence import write_record
from evidence.cli import stage_main
from evidence.errors import ToolkitError
from evidence.params import section
from evidence.provenance import REPO_ROOT
from evidence.safeyaml import load_file

from . import paired

FACTS = REPO_ROOT / "submission" / "data" / "pccp.yml"
SCHEMA = REPO_ROOT / "submission" / "pccp.schema.json"
RECORD = "pccp.plan"
DEFAULTS = {"test_set": "same_locked", "ci_level": 0.95, "decision_interval": "both",
            "bootstrap_resamples": 2000, "bootstrap_seed": 0, "planning": {"discordance": 0.10, "power": 0.80},
            "margins": {"sensitivity": 0.05, "specificity": 0.05}, "subgroup_margin": 0.10,
            "min_subgroup_positives": 10, "min_subgroup_negatives": 10,
            "threshold": {"min": 0.01, "max": 0.99, "max_change": 0.10}}
#: The planned modification a candidate makes, by whether its model file (sha256) differs from the
#: cleared run's: the keys of `submission/data/pccp.yml` modifications.
RETRAINING, RETUNING = "retraining", "threshold"
#: What a re-trained model's threshold must share with the cleared run's (record
#: `validation.threshold`): chosen on the validation split by the same locked rule, target and bound.
SAME_RULE_FIELDS = ("rule", "split", "target_sensitivity", "target_bound", "estimable_from_data")
#: Those fields in words (the modification report names a differing one).
SAME_RULE_WORDS = {"rule": "rule", "split": "split", "target_sensitivity": "target sensitivity",
                   "target_bound": "what reaches the target", "estimable_from_data": "estimated from the data"}
#: The subgroup variables compared (those the validation tests for heterogeneity).
SUBGROUP_VARIABLES = ("sex", "age_band", "view")


class PlanError(ToolkitError, ValueError):
    """A PCCP facts file or params section that the plan cannot use."""


def facts(path: Path = FACTS) -> dict:
    """The facts file, checked against its schema."""
    import jsonschema

    data = load_file(path, PlanError) or {}
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(top level)"
        raise PlanError(f"{path}: {where}: {e.message}; fix it as {SCHEMA.name} requires")
    return data


def criteria(p: dict) -> dict:
    """The resolved plan: params section `pccp` over the defaults, checked for consistency."""
    plan = {**DEFAULTS, **p}
    plan["margins"] = {**DEFAULTS["margins"], **p.get("margins", {})}
    plan["threshold"] = {**DEFAULTS["threshold"], **p.get("threshold", {})}
    plan["planning"] = {**DEFAULTS["planning"], **p.get("planning", {})}
    if plan["decision_interval"] not in paired.DECISION_INTERVALS:
        raise PlanError(f"params pccp.decision_interval: {plan['decision_interval']!r} unknown; use one of "
                        f"{', '.join(paired.DECISION_INTERVALS)}")
    plan["sample_size"] = sample_size(plan)
    t = plan["threshold"]
    if not t["min"] < t["max"]:
        raise PlanError(f"params pccp.threshold: min {t['min']} must be below max {t['max']}")
    return plan


def sample_size(plan: dict) -> dict:
    """Test images of each class the protocol needs for its margins (`paired.required_pairs`, at the
    planning discordance and power): positives for sensitivity, negatives for specificity."""
    q = plan["planning"]
    return {metric: paired.required_pairs(plan["margins"][metric], q["discordance"], level=plan["ci_level"],
                                          power=q["power"])
            for metric in ("sensitivity", "specificity")}


#: The method, in words, by decision interval (record pccp.plan, the PCCP document).
METHODS = {
    "both": "paired difference of sensitivity and of specificity (candidate minus cleared) on the same images; "
            "the decision reads the lower of two lower bounds: Newcombe's hybrid score interval for paired "
            "proportions (per image) and the patient-cluster bootstrap percentile interval",
    "newcombe": "paired difference of sensitivity and of specificity (candidate minus cleared) on the same images; "
                "Newcombe's hybrid score interval for paired proportions (per image), the patient-cluster "
                "bootstrap reported beside it",
    "cluster_bootstrap": "paired difference of sensitivity and of specificity (candidate minus cleared) on the same "
                         "images; patient-cluster bootstrap percentile interval, Newcombe's per-image interval "
                         "reported beside it",
}


def run(out: str | Path, params: dict) -> dict:
    plan = criteria(params)
    f = facts()
    level = plan["ci_level"]
    data = {
        "test_set": plan["test_set"],
        "ci_level": level,
        "one_sided_alpha": round((1 - level) / 2, 10),
        "decision_interval": plan["decision_interval"],
        "bootstrap_resamples": plan["bootstrap_resamples"], "bootstrap_seed": plan["bootstrap_seed"],
        "planning": plan["planning"],
        "sample_size": plan["sample_size"],
        "sample_size_formula": "images of one class = discordance x (z(1 - alpha) + z(power))^2 / margin^2, "
                               "alpha one-sided (Connor 1987, at a true difference of zero)",
        "margins": plan["margins"],
        "subgroup_margin": plan["subgroup_margin"],
        "subgroup_variables": list(SUBGROUP_VARIABLES),
        "min_subgroup_positives": plan["min_subgroup_positives"],
        "min_subgroup_negatives": plan["min_subgroup_negatives"],
        "threshold": plan["threshold"],
        "threshold_rule": {RETUNING: "the candidate's threshold lies within min and max and differs from the "
                                     "cleared threshold by at most max_change (same model file)",
                           RETRAINING: "the candidate's threshold was chosen on its own validation split by the "
                                       "cleared run's rule, target and bound, and lies within min and max (a "
                                       "re-trained model's score scale differs, so the change is not bounded)",
                           "same_rule_fields": list(SAME_RULE_FIELDS)},
        "method": METHODS[plan["decision_interval"]],
        "modifications": [m["key"] for m in f["modifications"]],
    }
    return write_record(out, RECORD, data=data, params=params)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, prog="python -m validation.pccp_plan", doc=__doc__,
                      call=lambda a: run(a.out, section(a.params, "pccp")),
                      summary=lambda r, a: (f"pccp.plan: margins sensitivity {r['data']['margins']['sensitivity']}, "
                                            f"specificity {r['data']['margins']['specificity']}, subgroups "
                                            f"{r['data']['subgroup_margin']}, threshold {r['data']['threshold']}"))


if __name__ == "__main__":
    sys.exit(main())
