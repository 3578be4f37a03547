"""The protocol's judgement (validation.pccp.assess) and its refusal of another test set, on
constructed predictions: a candidate scoring like the cleared model passes, a degraded one fails
naming the criteria, a changed input check fails naming it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from validation import pccp
from validation.pccp_plan import criteria

PLAN = {**criteria({"bootstrap_resamples": 500}), "one_sided_alpha": 0.025}
PRINTS = {"intended_use": "a", "header_checks": "b", "preprocessing": "c", "model": "m"}


def _runs(seed=0, patients=300):
    rng = np.random.default_rng(seed)
    ids = np.repeat([f"p{i:04d}" for i in range(patients)], 2)
    label = np.repeat(rng.random(patients) < 0.5, 2).astype(int)
    score = np.clip(0.5 + 0.3 * (2 * label - 1) + rng.normal(0, 0.2, ids.size), 0, 1)
    frame = pd.DataFrame({"image_id": [f"i{i:05d}.png" for i in range(ids.size)], "patient_id": ids,
                          "label": label, "score": score})
    manifest = pd.DataFrame({"image_id": frame["image_id"], "sex": rng.choice(["M", "F"], ids.size),
                             "age_years": rng.uniform(20, 90, ids.size), "view": rng.choice(["AP", "PA"], ids.size)})
    return frame, manifest


def rule(threshold, **changes):
    """A run's validation.threshold data: the threshold and the rule that chose it."""
    return {"threshold": threshold, "rule": "target_sensitivity", "split": "val", "target_sensitivity": 0.9,
            "target_bound": "estimate", "estimable_from_data": True, **changes}


def _assess(candidate_scores, prints=None, thresholds=(0.5, 0.5)):
    cleared, manifest = _runs()
    candidate = cleared.assign(score=candidate_scores(cleared))
    data, _ = pccp.assess(cleared, candidate, manifest, PLAN,
                          {"cleared": rule(thresholds[0]), "candidate": rule(thresholds[1])},
                          {"cleared": PRINTS, "candidate": prints or PRINTS})
    return data


def test_a_candidate_scoring_like_the_cleared_model_is_within_the_plan():
    rng = np.random.default_rng(5)
    data = _assess(lambda f: np.clip(f["score"] + rng.normal(0, 0.02, len(f)), 0, 1), thresholds=(0.5, 0.49))
    assert data["within_plan"], data["failed"]
    sens = data["performance"]["sensitivity"]
    assert sens["ci_low"] > -PLAN["margins"]["sensitivity"] and sens["ci_low"] <= sens["estimate"] <= sens["ci_high"]


def test_a_degraded_candidate_fails_naming_the_criteria():
    rng = np.random.default_rng(6)
    data = _assess(lambda f: rng.random(len(f)))            # scores unrelated to the labels
    assert not data["within_plan"]
    assert "sensitivity non-inferiority" in data["failed"] and "specificity non-inferiority" in data["failed"]
    reasons = {c["name"]: c["reason"] for c in data["criteria"]}
    assert reasons["sensitivity non-inferiority"].startswith("worse by more than the margin: the difference ")
    assert any(name.startswith("subgroup ") for name in data["failed"])


def test_changed_input_checks_and_a_threshold_out_of_bounds_fail_by_name():
    data = _assess(lambda f: f["score"], prints={**PRINTS, "header_checks": "other"}, thresholds=(0.5, 0.75))
    assert set(data["failed"]) >= {"input checks unchanged", "operating threshold within the plan"}
    assert data["threshold"]["modification"] == "threshold" and data["threshold"]["within_change"] is False
    assert "intended use unchanged" not in data["failed"]


def test_a_small_test_set_fails_as_underpowered_not_as_inferior():
    """An identical candidate on 60 patients: the two models agree on every image, yet with fewer
    positives than the plan needs for its margin the check cannot show non-inferiority and says so."""
    cleared, manifest = _runs(patients=60)
    data, _ = pccp.assess(cleared, cleared, manifest, PLAN, {"cleared": rule(0.5), "candidate": rule(0.5)},
                          {"cleared": PRINTS, "candidate": PRINTS})
    sens = data["performance"]["sensitivity"]
    assert sens["candidate_only"] == sens["cleared_only"] == 0
    assert sens["cluster_bootstrap"]["ci_low"] == 0.0 and sens["ci_low"] < -PLAN["margins"]["sensitivity"]
    assert "sensitivity non-inferiority" in data["failed"]
    reason = next(c["reason"] for c in data["criteria"] if c["name"] == "sensitivity non-inferiority")
    assert reason.startswith(
        f"underpowered: {sens['n']} positives in the test set, fewer than the {PLAN['sample_size']['sensitivity']}")
    assert sens["adequate"] is False and sens["required"] == PLAN["sample_size"]["sensitivity"]


def test_another_test_set_or_a_leaked_test_patient_is_refused_with_the_difference():
    cleared, _ = _runs()
    splits = pd.DataFrame({"image_id": ["x"], "patient_id": ["other"], "split": ["train"]})
    with pytest.raises(pccp.PccpError, match="1 image\\(s\\) only in the cleared"):
        pccp.same_test_set(cleared, cleared.iloc[1:], splits)
    relabelled = cleared.assign(label=1 - cleared["label"])
    with pytest.raises(pccp.PccpError, match="another label"):
        pccp.same_test_set(cleared, relabelled, splits)
    leaked = pd.DataFrame({"image_id": ["x"], "patient_id": [cleared["patient_id"].iloc[0]], "split": ["train"]})
    with pytest.raises(pccp.PccpError, match="patient\\(s\\) of the locked test"):
        pccp.same_test_set(cleared, cleared, leaked)


BOUNDS = PLAN["threshold"]


def test_threshold_retuning_of_the_same_model_is_bounded_by_the_largest_change():
    step = BOUNDS["max_change"]
    near = pccp.threshold_criterion(rule(0.5), rule(0.5 + 0.9 * step), BOUNDS, model_changed=False)
    assert near["modification"] == "threshold" and near["passed"] and near["reason"] == ""
    far = pccp.threshold_criterion(rule(0.5), rule(0.5 + 1.1 * step), BOUNDS, model_changed=False)
    assert not far["passed"] and far["within_range"] and not far["within_change"]
    assert far["reason"].startswith("the re-tuned threshold moves by +")
    low = pccp.threshold_criterion(rule(BOUNDS["min"] + 0.01), rule(BOUNDS["min"] / 2), BOUNDS, model_changed=False)
    assert not low["passed"] and not low["within_range"] and low["within_change"]
    assert "outside" in low["reason"]


def test_a_retrained_model_is_judged_by_its_rule_not_by_its_distance_from_the_cleared_threshold():
    """The cleared 0.108 and a retrained 0.968 (the scores of another model are on another scale):
    within the plan when the same locked rule chose it; a changed rule, target or bound fails by name."""
    far = pccp.threshold_criterion(rule(0.108), rule(0.968), BOUNDS, model_changed=True)
    assert far["modification"] == "retraining" and far["same_rule"] and far["passed"], far["reason"]
    assert abs(far["change"]) > BOUNDS["max_change"] and "within_change" not in far
    for field, value, words in (("rule", "max_f1", "rule max f1 (cleared target sensitivity)"),
                                ("target_sensitivity", 0.8, "target sensitivity 0.8 (cleared 0.9)"),
                                ("target_bound", "ci_low", "what reaches the target ci low (cleared estimate)"),
                                ("split", "test", "split test (cleared val)"),
                                ("estimable_from_data", False, "estimated from the data False (cleared True)")):
        other = pccp.threshold_criterion(rule(0.108), rule(0.2, **{field: value}), BOUNDS, model_changed=True)
        assert not other["passed"] and not other["same_rule"] and other["within_range"]
        assert other["reason"] == f"the re-trained model's threshold was not chosen by the cleared run's locked rule: {words}"
        assert other["rule"][field] == {"cleared": rule(0)[field], "candidate": value}
    saturated = pccp.threshold_criterion(rule(0.108), rule(0.9995), BOUNDS, model_changed=True)
    assert not saturated["passed"] and saturated["same_rule"] and not saturated["within_range"]


def test_the_assessment_names_the_modification_from_the_model_files():
    data = _assess(lambda f: f["score"], prints={**PRINTS, "model": "another"}, thresholds=(0.5, 0.75))
    assert data["threshold"]["modification"] == "retraining" and data["threshold"]["passed"]
    assert "operating threshold within the plan" not in data["failed"]


def test_the_code_defaults_are_params_yaml_and_obey_the_schema():
    """The criteria a params file leaves out are the shipped params.yaml's, not a second set."""
    import yaml

    from evidence.params import check
    from validation.pccp_plan import DEFAULTS

    check({"pccp": DEFAULTS})
    repo = Path(__file__).resolve().parent.parent
    assert yaml.safe_load((repo / "params.yaml").read_text())["pccp"] == DEFAULTS
