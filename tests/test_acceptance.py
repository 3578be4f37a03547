"""Performance goals (validation.acceptance): every goal judged, the primary ones deciding, each stated
in words; the exact (Clopper-Pearson) estimate the default goals judge, against statsmodels."""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from validation import acceptance, evaluate

pytestmark = pytest.mark.verifies("SRS-024")

GOALS = [{"metric": "sensitivity", "bound": "ci_low", "op": ">", "value": 0.80, "method": "clopper-pearson",
          "anticipated": 0.90, "primary": True, "justification": ["K191556"]},
         {"metric": "specificity", "bound": "ci_low", "op": ">", "value": 0.80, "method": "clopper-pearson",
          "anticipated": 0.90, "primary": True},
         {"metric": "auc", "bound": "ci_low", "op": ">", "value": 0.85, "method": "delong", "primary": False}]


def _est(low, method, level=0.95):
    return {"estimate": low + 0.05, "ci_low": low, "ci_high": min(low + 0.1, 1.0), "ci_level": level,
            "method": method, "n": 120}


def _metrics(se_low, sp_low, auc_low):
    return {"sensitivity": {"clopper-pearson": _est(se_low, "clopper-pearson"), "wilson": _est(0.99, "wilson")},
            "specificity": {"clopper-pearson": _est(sp_low, "clopper-pearson")},
            "auc": {"delong": _est(auc_low, "delong")}}


@pytest.mark.parametrize("se, sp, auc, passed, all_passed", [
    (0.85, 0.83, 0.90, [True, True, True], True),
    (0.85, 0.83, 0.70, [True, True, False], True),     # a secondary goal missed does not decide
    (0.80, 0.83, 0.90, [False, True, True], False),    # "above": a bound equal to the goal misses it
    (0.85, 0.79, 0.99, [True, False, True], False),
])
def test_every_goal_judged_and_only_primary_goals_decide(se, sp, auc, passed, all_passed):
    got = acceptance.evaluate(GOALS, _metrics(se, sp, auc))
    assert [c["passed"] for c in got["criteria"]] == passed and got["all_passed"] is all_passed
    assert [c["primary"] for c in got["criteria"]] == [True, True, False]
    assert (got["n_primary"], got["n_secondary"], got["n_secondary_passed"]) == (2, 1, int(passed[2]))
    # the named method is judged, not the first one reported
    assert got["criteria"][0]["method"] == "clopper-pearson" and got["criteria"][0]["observed"] == se


def test_goals_read_in_words():
    got = acceptance.evaluate(GOALS, _metrics(0.85, 0.83, 0.9))
    assert [c["statement"] for c in got["criteria"]] == [
        "sensitivity: lower bound of the two-sided 95% exact (Clopper-Pearson) interval above 0.80",
        "specificity: lower bound of the two-sided 95% exact (Clopper-Pearson) interval above 0.80",
        "AUC: lower bound of the two-sided 95% DeLong interval above 0.85"]
    assert not any(t in c["statement"] for c in got["criteria"] for t in ("ci_low", ">", "clopper-pearson"))
    assert acceptance.describe({"metric": "ppv", "bound": "estimate", "op": ">=", "value": 0.125,
                                "method": "wilson"}) == "PPV: point estimate (Wilson score) at or above 0.125"
    assert acceptance.describe({"metric": "npv", "bound": "ci_high", "op": "<", "value": 0.5, "method": "bootstrap"},
                               0.9) == "NPV: upper bound of the two-sided 90% patient-cluster bootstrap interval below 0.50"


def test_old_criteria_without_the_new_fields_judge_as_before():
    """A criterion list from before performance goals: every entry primary, the bootstrap estimate by
    default; the held-out run calls evaluate(criteria, metrics) the same way."""
    assert list(inspect.signature(acceptance.evaluate).parameters) == ["criteria", "metrics"]
    old = [{"metric": "auc", "bound": "ci_low", "op": ">=", "value": 0.7}]
    got = acceptance.evaluate(old, {"auc": {"bootstrap": _est(0.72, "cluster-bootstrap-percentile"),
                                            "delong": _est(0.5, "delong")}})
    assert got["criteria"][0]["method"] == "bootstrap" and got["criteria"][0]["primary"] is True
    assert got["all_passed"] is True


def test_not_reported_or_not_estimable_fails_with_the_reason():
    got = acceptance.evaluate(GOALS, {"sensitivity": {"clopper-pearson": {"estimable": False, "reason": "n = 0"}},
                                      "auc": {"delong": _est(0.9, "delong")}})
    assert [c["passed"] for c in got["criteria"]] == [False, False, True]
    assert got["criteria"][0]["reason"] == "n = 0" and "not reported" in got["criteria"][1]["reason"]
    assert got["all_passed"] is False


@pytest.mark.parametrize("change, match", [
    (lambda g: g[0].update(method="exact"), r"acceptance\[0\]: method 'exact' unknown"),
    (lambda g: g[0].update(anticipated=0.75), r"acceptance\[0\]: anticipated 0.75 must exceed the goal 0.8"),
    (lambda g: g[1].update(anticipated=1.2), r"acceptance\[1\]: anticipated must be a number between 0 and 1"),
    (lambda g: g[0].update(primary="yes"), r"acceptance\[0\]: primary must be true or false"),
    (lambda g: g[2].update(justification="K191556"), r"acceptance\[2\]: justification must be a list"),
    (lambda g: [x.update(primary=False) for x in g], "no goal is primary"),
])
def test_bad_goals_name_the_entry(change, match):
    goals = [dict(g) for g in GOALS]
    change(goals)
    with pytest.raises(acceptance.CriteriaError, match=match):
        acceptance.check_criteria(goals)


def test_clopper_pearson_in_test_metrics_matches_statsmodels_and_is_judged():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(60, int), np.zeros(90, int)]
    s = np.clip(y * 0.35 + rng.random(150) * 0.65, 0, 1)
    df = pd.DataFrame({"label": y, "score": s, "patient_id": np.arange(150)})
    p = {**evaluate.STATISTICS, "bootstrap_resamples": 100}
    t = evaluate.test_metrics(df, 0.5, p)
    c = t["confusion"]
    for metric, (k, n) in {"sensitivity": (c["tp"], c["tp"] + c["fn"]),
                           "specificity": (c["tn"], c["tn"] + c["fp"])}.items():
        lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
        cp = t["metrics"][metric]["clopper-pearson"]
        assert (cp["ci_low"], cp["ci_high"], cp["n"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12), n)
        assert cp["method"] == "clopper-pearson" and cp["estimate"] == k / n
    got = acceptance.evaluate(GOALS, t["metrics"])
    assert got["criteria"][0]["observed"] == t["metrics"]["sensitivity"]["clopper-pearson"]["ci_low"]
