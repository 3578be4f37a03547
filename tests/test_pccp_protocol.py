"""The protocol's judgement (validation.pccp.assess) and its refusal of another test set, on
constructed predictions: a candidate scoring like the cleared model passes, a degraded one fails
naming the criteria, a changed input check fails naming it."""
from __future__ import annotations

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


def _assess(candidate_scores, prints=None, thresholds=(0.5, 0.5)):
    cleared, manifest = _runs()
    candidate = cleared.assign(score=candidate_scores(cleared))
    data, _ = pccp.assess(cleared, candidate, manifest, PLAN, dict(zip(("cleared", "candidate"), thresholds)),
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
    assert set(data["failed"]) >= {"input checks unchanged", "threshold within bounds"}
    assert "intended use unchanged" not in data["failed"]


def test_a_small_test_set_fails_as_underpowered_not_as_inferior():
    """An identical candidate on 60 patients: the two models agree on every image, yet with fewer
    positives than the plan needs for its margin the check cannot show non-inferiority and says so."""
    cleared, manifest = _runs(patients=60)
    data, _ = pccp.assess(cleared, cleared, manifest, PLAN, {"cleared": 0.5, "candidate": 0.5},
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
