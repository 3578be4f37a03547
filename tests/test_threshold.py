"""Threshold choice on validation only, locked in validation.threshold."""
from __future__ import annotations


import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import f1_score, roc_curve

from evidence import read_record
from validation import threshold as th

from validation_runs import make_run, params_file

pytestmark = pytest.mark.verifies("SRS-013")


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    return y, np.round(1 / (1 + np.exp(-rng.normal(2 * y - 1, 1.2))), 3)


def test_max_f1_matches_brute_force_sklearn():
    y, s = _data()
    t = th.choose_threshold(y, s, "max_f1")
    best = max(f1_score(y, (s >= c).astype(int)) for c in np.unique(s))
    assert f1_score(y, (s >= t).astype(int)) == pytest.approx(best)


def test_youden_matches_sklearn_roc_curve():
    y, s = _data(1)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    j = tpr - fpr
    assert th.choose_threshold(y, s, "youden") == pytest.approx(thr[np.argmax(j)])


def test_target_sensitivity_is_highest_threshold_reaching_target():
    y, s = _data(2)
    t = th.choose_threshold(y, s, "target_sensitivity", target_sensitivity=0.9)
    sens = lambda c: np.mean(s[y == 1] >= c)  # noqa: E731
    assert sens(t) >= 0.9
    assert all(sens(c) < 0.9 for c in np.unique(s) if c > t)


def test_bad_rule_and_one_class():
    with pytest.raises(ValueError, match="unknown"):
        th.choose_threshold([0, 1], [0.1, 0.9], "accuracy")
    with pytest.raises(ValueError, match="both classes"):
        th.choose_threshold([1, 1], [0.1, 0.9], "max_f1")


def test_cli_locks_threshold_from_val_only(tmp_path, repo_root):
    out = make_run(tmp_path)
    params = params_file(tmp_path, repo_root)
    assert th.main(["--out", str(out), "--params", str(params)]) == 0
    rec = read_record(out, "validation.threshold")
    assert [f["path"] for f in rec["deps"]["files"]] == ["predictions/val.csv"]
    assert [r["id"] for r in rec["deps"]["records"]] == ["model.predictions"]
    assert rec["synthetic"] is True
    import pandas as pd
    val = pd.read_csv(out / "predictions" / "val.csv")
    assert rec["data"]["rule"] == "target_sensitivity" and rec["data"]["target_bound"] == "estimate"
    assert rec["data"]["threshold"] == _brute_force_target(val["label"].to_numpy(), val["score"].to_numpy(), 0.9)
    assert rec["data"]["threshold"] in set(val["score"])
    v = rec["data"]["validation"]
    assert v["confusion"]["tp"] + v["confusion"]["fn"] == v["positives"] == int(val["label"].sum())
    # the test split does not move the threshold
    test = pd.read_csv(out / "predictions" / "test.csv")
    test["score"] = 1 - test["score"]
    test.to_csv(out / "predictions" / "test.csv", index=False)
    assert th.main(["--out", str(out), "--params", str(params)]) == 0
    assert read_record(out, "validation.threshold")["data"]["threshold"] == rec["data"]["threshold"]


@pytest.mark.parametrize("mutate,message", [
    (lambda df: df.drop(columns=["score"]), "missing column"),
    (lambda df: df.assign(label=df["label"].astype(object).where(df.index != 3, "yes")), "row 5: label"),
    (lambda df: df.assign(score=df["score"].astype(object).where(df.index != 0, "nan")), "row 2: score"),
    (lambda df: df.assign(label=0), "only one class"),
])
def test_cli_bad_val_file_errors_without_record(tmp_path, repo_root, capsys, mutate, message):
    import pandas as pd
    out = make_run(tmp_path)
    path = out / "predictions" / "val.csv"
    mutate(pd.read_csv(path)).to_csv(path, index=False)
    assert th.main(["--out", str(out), "--params", str(params_file(tmp_path, repo_root))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (out / "evidence" / "validation.threshold.json").exists()


def test_cli_bad_param(tmp_path, repo_root, capsys):
    out = make_run(tmp_path)
    params = params_file(tmp_path, repo_root, threshold_rule="best")
    assert th.main(["--out", str(out), "--params", str(params)]) == 2
    assert "validate.threshold_rule" in capsys.readouterr().err


def test_cli_requires_upstream_record(tmp_path, repo_root, capsys):
    out = make_run(tmp_path, write_upstream=False)
    assert th.main(["--out", str(out), "--params", str(params_file(tmp_path, repo_root))]) == 2
    assert "model.predictions" in capsys.readouterr().err
    assert not (out / "evidence" / "validation.threshold.json").exists()


def _wilson_low(k, n, level=0.95):
    """Wilson (1927) score lower bound, written out: (p + z^2/2n - z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    z = norm.ppf(1 - (1 - level) / 2)
    p = k / n
    return (p + z * z / (2 * n) - z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def _brute_force_target(y, s, target, bound="estimate"):
    """Over every observed score c (rule score >= c): the highest c whose sensitivity (or its Wilson
    lower bound) reaches the target; None when none does."""
    n_pos = int(y.sum())
    ok = []
    for c in np.unique(s):
        tp = int(((s >= c) & (y == 1)).sum())
        value = tp / n_pos if bound == "estimate" else _wilson_low(tp, n_pos)
        if value >= target - 1e-12:
            ok.append(c)
    return float(max(ok)) if ok else None


@pytest.mark.parametrize("seed, target", [(2, 0.9), (3, 0.8), (4, 0.95), (5, 1.0)])
def test_target_sensitivity_estimate_matches_sklearn_roc_curve(seed, target):
    y, s = _data(seed)
    t = th.choose_threshold(y, s, "target_sensitivity", target_sensitivity=target, target_bound="estimate")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)     # thresholds in decreasing order
    first = int(np.flatnonzero(tpr >= target - 1e-12)[0])
    assert t == pytest.approx(thr[first]) == _brute_force_target(y, s, target)
    # the best specificity among the thresholds reaching the target
    reaching = [c for c in np.unique(s) if np.mean(s[y == 1] >= c) >= target]
    assert np.mean(s[y == 0] < t) == max(np.mean(s[y == 0] < c) for c in reaching)


@pytest.mark.parametrize("target", [0.8, 0.85, 0.9])
def test_target_sensitivity_lower_bound_matches_brute_force(target):
    y, s = _data(6, n=2000)
    t = th.choose_threshold(y, s, "target_sensitivity", target_sensitivity=target, target_bound="ci_low")
    assert t == _brute_force_target(y, s, target, "ci_low")
    # stricter than the estimate: a lower threshold (more flagged), and its bound does reach the target
    assert t < th.choose_threshold(y, s, "target_sensitivity", target_sensitivity=target)
    n_pos = int(y.sum())
    assert _wilson_low(int((s[y == 1] >= t).sum()), n_pos) >= target
    above = np.unique(s)[np.unique(s) > t][0]
    assert _wilson_low(int((s[y == 1] >= above).sum()), n_pos) < target


def test_target_sensitivity_with_tied_scores_worked_by_hand():
    """Ten positives, four negatives; one negative ties a positive at 0.5. Nine of ten positives
    (sensitivity 0.9) need the threshold 0.5, which also flags the tied negative: specificity 3/4."""
    pos = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5, 0.3]
    neg = [0.5, 0.4, 0.2, 0.1]
    y, s = np.array([1] * 10 + [0] * 4), np.array(pos + neg)
    assert th.choose_threshold(y, s, "target_sensitivity", target_sensitivity=0.9) == 0.5
    assert th.choose_threshold(y, s, "target_sensitivity", target_sensitivity=0.8) == 0.6
    assert th.choose_threshold(y, s, "target_sensitivity", target_sensitivity=0.91) == 0.3
    point = th.operating_point(y, s, list(range(14)), 0.5, level=0.95)
    assert point["confusion"] == {"tp": 9, "fp": 1, "tn": 3, "fn": 1}
    assert point["metrics"]["specificity"]["estimate"] == 0.75
    # many ties: the chosen threshold is an observed score and no higher observed score reaches the target
    y2, s2 = _data(7)
    s2 = np.round(s2, 1)
    t = th.choose_threshold(y2, s2, "target_sensitivity", target_sensitivity=0.9)
    assert t in set(s2) and t == _brute_force_target(y2, s2, 0.9)


def test_lower_bound_target_beyond_reach_is_a_clear_error():
    """All positives detected: the Wilson lower bound is n / (n + z^2), which reaches 0.90 from
    n = 35 (34 / (34 + 1.96^2) < 0.90)."""
    z2 = norm.ppf(0.975) ** 2
    assert 34 / (34 + z2) < 0.9 <= 35 / (35 + z2)
    for n_pos, ok in ((34, False), (35, True)):
        y = np.array([1] * n_pos + [0] * 40)
        s = np.r_[np.linspace(0.6, 0.99, n_pos), np.linspace(0.01, 0.5, 40)]
        if ok:
            assert th.choose_threshold(y, s, "target_sensitivity", target_sensitivity=0.9,
                                       target_bound="ci_low") == pytest.approx(0.6)
            continue
        with pytest.raises(th.ThresholdError) as e:
            th.choose_threshold(y, s, "target_sensitivity", target_sensitivity=0.9, target_bound="ci_low")
        msg = str(e.value)
        assert "with 34 validation positives" in msg and "at least 35 validation positives" in msg
        assert f"{34 / (34 + z2):.3f}" in msg and "target_bound: estimate" in msg
    with pytest.raises(th.ThresholdError, match="no number of positives"):
        th.choose_threshold(np.array([1] * 50 + [0] * 5), np.linspace(0, 1, 55), "target_sensitivity",
                            target_sensitivity=1.0, target_bound="ci_low")
    with pytest.raises(ValueError, match="target_bound 'upper' unknown"):
        th.choose_threshold([0, 1], [0.1, 0.9], "target_sensitivity", target_sensitivity=0.9, target_bound="upper")


def _split_record(out, adequate: bool):
    from evidence import write_record

    adequacy = {"unit": "images", "positives": 30 if adequate else 2, "negatives": 150, "positive_patients": 30,
                "negative_patients": 120, "min_positives": 20, "min_negatives": 20,
                "allow_inadequate": not adequate, "adequate": adequate}
    if not adequate:
        adequacy["reason"] = "below the minimum; allowed"
    write_record(out, "split.patients", data={"validation_adequacy": adequacy}, synthetic=True)


def test_cli_records_rationale_and_estimability(tmp_path, repo_root, capsys):
    out = make_run(tmp_path)
    _split_record(out, adequate=True)
    params = params_file(tmp_path, repo_root, target_bound="ci_low", target_sensitivity=0.8)
    assert th.main(["--out", str(out), "--params", str(params)]) == 0
    d = read_record(out, "validation.threshold")["data"]
    assert d["estimable_from_data"] is True and "not_estimable_reason" not in d
    r = d["rationale"]
    assert r["rule"] == "target_sensitivity" and "triage" in r["why"] and "false flag" in r["why"]
    assert (r["target"], r["bound"], r["n_positives"]) == (0.8, "ci_low", d["validation"]["positives"])
    assert r["achieved"] == d["validation"]["metrics"]["sensitivity"]["ci_low"] >= 0.8
    assert "lower bound" in r["met_by"]
    assert d["validation_adequacy"]["adequate"] is True

    _split_record(out, adequate=False)
    assert th.main(["--out", str(out), "--params", str(params_file(tmp_path, repo_root))]) == 0
    assert "not estimable from the data" in capsys.readouterr().out.splitlines()[-1]
    rec = read_record(out, "validation.threshold")
    d = rec["data"]
    assert {r["id"] for r in rec["deps"]["records"]} == {"model.predictions", "split.patients"}
    assert d["estimable_from_data"] is False and d["rationale"]["estimable_from_data"] is False
    assert "2 pneumonia" in d["not_estimable_reason"] and "not estimable from the data" in d["not_estimable_reason"]
    import pandas as pd
    val = pd.read_csv(out / "predictions" / "val.csv")               # the rule is still applied
    assert d["threshold"] == _brute_force_target(val["label"].to_numpy(), val["score"].to_numpy(), 0.9)
    assert d["rationale"]["met_by"] == "the validation sensitivity estimate"


@pytest.mark.parametrize("rule", ["max_f1", "youden"])
def test_other_rules_keep_their_rationale(tmp_path, repo_root, rule):
    out = make_run(tmp_path)
    assert th.main(["--out", str(out), "--params", str(params_file(tmp_path, repo_root, threshold_rule=rule))]) == 0
    d = read_record(out, "validation.threshold")["data"]
    assert d["rule"] == rule and "not a triage rule" in d["rationale"]["why"]
    assert "target" not in d["rationale"] and "target_bound" not in d
    assert d["validation_adequacy"]["recorded"] is False


def test_cli_lower_bound_out_of_reach_stops_without_record(tmp_path, repo_root, capsys):
    out = make_run(tmp_path, n_val=20)                                # a handful of validation positives
    params = params_file(tmp_path, repo_root, target_bound="ci_low", target_sensitivity=0.95)
    assert th.main(["--out", str(out), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no validation threshold reaches") and "\n" not in err
    assert not (out / "evidence" / "validation.threshold.json").exists()
