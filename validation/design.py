"""The pre-specified analysis, fixed from params `validate` before any test-split score exists.

`check_params` resolves the section (defaults filled in) for the stages that analyse the test
split; `design` turns it into the `validation.design` record's data: endpoints, the operating-point
rule, the performance goals (acceptance criteria, each with the estimate it judges), interval and
bootstrap methods, CI level, calibration and subgroup settings, and the held-out sample size (by
power; Buderer as a cross-check). The validation plan is rendered from that record (with the
threshold, EDA and training records) and locked.
"""
from __future__ import annotations

from . import acceptance
from . import calibration, stats, subgroups
from .subgroups import AGE_BANDS
from .threshold import CI_LEVEL, check_params as check_threshold_params

STATISTICS = {"ci_level": CI_LEVEL, "bootstrap_resamples": 2000, "bootstrap_seed": 0,
              "bootstrap_method": "percentile", "prevalences": [0.013],
              "min_subgroup_positives": 10, "min_subgroup_negatives": 10}
CALIBRATION_BINS = 10
CALIBRATION_BINNING = "quantile"
PRIMARY = ("sensitivity", "specificity")
SECONDARY = ("auc", "ppv", "npv", "f1", "calibration", "subgroups")


#: The pre-specified handling of labelled files that were not analyzed (rejected or error), for the
#: all-enrolled sensitivity and specificity reported beside the per-protocol figures.
ALL_ENROLLED_RULE = {
    "population": "every labeled file of the held-out set, analyzed or not",
    "not_analyzed_positive": "false negative (a miss: no notification was raised)",
    "not_analyzed_negative": "true negative (no notification was raised, as is right for a negative)",
    "rationale": "a file the device rejects or fails on raises no flag, so it is read in the standard "
                 "queue without priority; counting it as not flagged measures what the triage delivers "
                 "to the enrolled population",
}

#: The method of the rejection-rate intervals (exact: small counts are expected).
REJECTION_CI_METHOD = "clopper-pearson"


def check_statistics(p: dict) -> dict:
    """The interval, bootstrap, prevalence and subgroup parameters (STATISTICS keys, checked by
    evidence.params), with those defaults; shared with `validation.heldout`."""
    out = {key: p.get(key, default) for key, default in STATISTICS.items()}
    out["prevalences"] = [float(v) for v in out["prevalences"]]
    out["predictive_value_prevalences"] = predictive_value_prevalences(p)
    intended = (p.get("sample_size") or {}).get("prevalence")
    out["intended_use_prevalence"] = None if intended is None else float(intended)
    return out


def predictive_value_prevalences(p: dict) -> list[float]:
    """The prevalences at which PPV and NPV are reported: params `prevalences` and, where the
    section has one, the intended-use prevalence of the sample size (`sample_size.prevalence`,
    read from there, not copied), sorted, each once."""
    values = [float(v) for v in p.get("prevalences", STATISTICS["prevalences"])]
    intended = (p.get("sample_size") or {}).get("prevalence")
    if intended is not None:
        values.append(float(intended))
    return sorted(set(values))


def check_params(p: dict) -> dict:
    out = check_threshold_params(p)
    out.update(check_statistics(p))
    out.update(calibration_bins=p.get("calibration_bins", CALIBRATION_BINS),
               calibration_binning=p.get("calibration_binning", CALIBRATION_BINNING),
               acceptance=acceptance.check_criteria(p.get("acceptance")))
    return out


def locked_criteria(criteria: list[dict]) -> list[dict]:
    """Each performance goal with the estimate it judges named (`method`; by default the first of
    `acceptance.METHODS`, which every test metric reports), so that a held-out run judges the same;
    `primary`, `anticipated` and `justification` as given."""
    keys, optional = ("metric", "bound", "op", "value"), ("primary", "anticipated", "justification")
    return [{**{k: c[k] for k in keys}, "value": float(c["value"]), "method": c.get("method") or acceptance.METHODS[0],
             **{k: c[k] for k in optional if k in c}} for c in criteria]


def performance_goals(criteria: list[dict], ci_level: float) -> list[dict]:
    """The locked goals as the plan states them: in words, primary or secondary, with their sources."""
    return [{"metric": c["metric"], "statement": acceptance.describe(c, ci_level),
             "role": "primary" if c.get("primary", True) else "secondary",
             "justification": list(c.get("justification", [])),
             **({"anticipated": float(c["anticipated"])} if "anticipated" in c else {})} for c in criteria]


def planned_size(sample_size: dict) -> dict:
    """The plan's sample size: positives and negatives by exact binomial power and the totals."""
    pw = sample_size["power"]
    return {"method": "exact-binomial-power", "positives": pw["positives"], "negatives": pw["negatives"],
            "joint_power": pw["joint_power"], "prevalence": pw["prevalence"],
            "total_at_prevalence": pw["at_prevalence"].get("total", pw["at_prevalence"]),
            "total_enriched": pw["enrichment"]["total"],
            "buderer_cross_check": {k: sample_size[k] for k in ("positives", "negatives", "total")}}


def subgroup_plan(p: dict) -> dict:
    """The pre-specified subgroup analysis (`analysis.subgroups` of `validation.design`)."""
    return {"ci_method": "wilson", "min_subgroup_positives": p["min_subgroup_positives"],
            "min_subgroup_negatives": p["min_subgroup_negatives"],
            "age_bands": [{"key": k, "label": lab} for k, lab, _, _ in AGE_BANDS],
            "age_out_of_scope": [{"key": k, "label": lab} for k, lab in subgroups.AGE_OUT_OF_SCOPE],
            "heterogeneity": {"methods": dict(sorted(stats.HOMOGENEITY_METHODS.items())),
                              "rule": "Fisher's exact test for two strata, Pearson chi-square for three or more",
                              "variables": list(subgroups.TESTED_VARIABLES) + ["finding"],
                              "statement": subgroups.HETEROGENEITY_STATEMENT}}


def calibration_plan(p: dict) -> dict:
    """The pre-specified calibration analysis (`analysis.calibration` of `validation.design`)."""
    return {"bins": p["calibration_bins"], "binning": p["calibration_binning"],
            "scheme": calibration.SCHEMES[p["calibration_binning"]],
            "ece_interval": {"method": "cluster-bootstrap-percentile", "unit": "patient", "bin_edges": "fixed"},
            "concentration_window": calibration.CONCENTRATION_WINDOW,
            "concentration_share": calibration.CONCENTRATION_SHARE}


def design(params: dict, sample_size: dict) -> dict:
    """The `validation.design` data from the `validate` section and the sample-size data."""
    p = check_params(params)
    rule = {"rule": p["threshold_rule"], "split": "val", "decision": "positive when score >= threshold"}
    if p["threshold_rule"] == "target_sensitivity":
        rule.update(target_sensitivity=float(p["target_sensitivity"]), target_bound=p["target_bound"])
    return {
        "endpoints": {"primary": list(PRIMARY), "secondary": list(SECONDARY)},
        "operating_point": rule,
        "acceptance_criteria": locked_criteria(p["acceptance"]),
        "performance_goals": performance_goals(locked_criteria(p["acceptance"]), p["ci_level"]),
        "ci_level": p["ci_level"],
        "analysis": {"proportions": "wilson", "auc": "delong",
                     "clustering": f"cluster-bootstrap-{p['bootstrap_method']}",
                     "calibration_bins": p["calibration_bins"], "prevalences": p["prevalences"],
                     "predictive_value_prevalences": p["predictive_value_prevalences"],
                     "calibration": calibration_plan(p),
                     "subgroups": subgroup_plan(p)},
        "bootstrap": {"unit": "patient", "n_resamples": p["bootstrap_resamples"], "seed": p["bootstrap_seed"],
                      "method": p["bootstrap_method"]},
        "sample_size": planned_size(sample_size),
        "inputs_not_analyzed": {"rejection_rate": {"method": REJECTION_CI_METHOD, "by": ["class", "reason"]},
                                "primary_analysis": "per protocol: the files the device analyzed",
                                "all_enrolled": ALL_ENROLLED_RULE},
    }
