"""Threshold choice on validation only, locked in validation.threshold."""
from __future__ import annotations


import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_curve

from evidence import read_record
from validation import threshold as th

from validation_runs import make_run, params_file


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
    assert rec["data"]["threshold"] == th.choose_threshold(val["label"], val["score"], "max_f1")
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
