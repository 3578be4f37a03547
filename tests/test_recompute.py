"""evidence.recompute: independent re-derivation of the test metrics; tamper detection."""
from __future__ import annotations

import shutil
import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from evidence import read_record, write_record
from evidence import recompute
from evidence.__main__ import main as audit_main
from validation import evaluate, threshold

from validation_runs import lock_and_score, make_run, params_file


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recompute")
    out = make_run(tmp, seed=4)
    params = params_file(tmp, Path(__file__).resolve().parent.parent, bootstrap_resamples=100,
                         threshold_rule="max_f1")            # a threshold with metrics strictly inside (0, 1)
    assert threshold.main(["--out", str(out), "--params", str(params)]) == 0
    lock_and_score(out, params)
    assert evaluate.main(["--out", str(out), "--params", str(params)]) == 0
    return out


@pytest.fixture()
def run(base_run, tmp_path):
    """A private copy of the evaluated run folder (tests tamper with it)."""
    return Path(shutil.copytree(base_run, tmp_path / "run"))


def _rewrite(out: Path, record_id: str, change) -> None:
    """Rewrite a record through the evidence layer (a consistent hash), with changed data."""
    rec = read_record(out, record_id)
    data = json.loads(json.dumps(rec["data"]))
    change(data)
    write_record(out, record_id, data=data, params=rec["params"],
                 dep_records=[r["id"] for r in rec["deps"]["records"]], synthetic=rec["synthetic"])


def test_clean_run_and_absent_run(run, tmp_path):
    assert recompute.check(run) == []
    assert recompute.check(tmp_path / "nothing") == []


def test_independent_auc_matches_sklearn():
    import numpy as np
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(int)
    s = np.round(rng.normal(y, 1), 1)
    assert recompute._mann_whitney_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_tampered_metric_is_named(run):
    _rewrite(run, "validation.test", lambda d: d["metrics"]["sensitivity"]["wilson"].update(estimate=0.99))
    lines = recompute.check(run)
    assert len(lines) == 1
    assert lines[0].startswith("record validation.test: field data.metrics.sensitivity.wilson.estimate: expected 0.")
    assert lines[0].endswith("found 0.99")


def test_metric_names_come_from_the_record_and_the_recomputation(run):
    def change(d):
        d["metrics"]["aucc"] = d["metrics"]["auc"]
        del d["metrics"]["npv"]
    _rewrite(run, "validation.test", change)
    lines = recompute.check(run)
    assert len(lines) == 2
    assert lines[0] == ("record validation.test: field data.metrics.aucc: expected one of sensitivity, specificity, "
                        "ppv, npv, accuracy, f1, auc found a metric the audit cannot recompute")
    assert lines[1].startswith("record validation.test: field data.metrics.npv: expected 0.")
    assert lines[1].endswith(" found missing field")


def test_tampered_confusion_and_threshold(run):
    _rewrite(run, "validation.test", lambda d: (d["confusion"].update(tp=d["confusion"]["tp"] + 1),
                                                d.update(threshold=d["threshold"] + 0.01)))
    lines = recompute.check(run)
    assert any("field data.confusion.tp" in x for x in lines)
    assert any("field data.threshold" in x and "(validation.threshold)" in x for x in lines)


def test_tampered_predictions_file(run, capsys):
    path = run / "predictions" / "test.csv"
    df = pd.read_csv(path)
    df.loc[df["label"] == 1, "score"] = 0.0
    df.to_csv(path, index=False)
    lines = recompute.check(run)
    assert any("metrics.auc.delong.estimate" in x for x in lines)
    assert audit_main(["audit", "--out", str(run), "--no-code-check"]) == 1
    assert "FAIL record validation.test: field data.metrics.auc" in capsys.readouterr().out


def test_missing_threshold_record(run):
    (run / "evidence" / "validation.threshold.json").unlink()
    assert recompute.check(run) == ["record validation.test: field data.threshold: expected a locked "
                                    "threshold in record validation.threshold found missing record"]
