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

pytestmark = pytest.mark.verifies("SRS-039")


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


# ----------------------------------------------------------------------------- held-out folders

@pytest.fixture()
def held(tmp_path):
    """A run folder with a locked threshold and one held-out folder (synthetic results, no model)."""
    import numpy as np
    from validation_runs import heldout_frame, make_heldout

    out = tmp_path / "run"
    write_record(out, "validation.threshold", data={"threshold": 0.5})
    df = heldout_frame(np.random.default_rng(7))
    return out, make_heldout(out, df, threshold=0.5), df


def _rewrite_as_is(hout: Path, record_id: str) -> None:
    """Write a record again with its own data, so that its hashes follow the files as they are now."""
    from evidence.provenance import resolve_run_path

    rec = read_record(hout, record_id)
    write_record(hout, record_id, data=rec["data"], params=rec["params"], synthetic=rec["synthetic"],
                 deps=[resolve_run_path(d["path"], hout) for d in rec["deps"]["files"]],
                 outs=[resolve_run_path(o["path"], hout) for o in rec["outs"]],
                 dep_records=[r["id"] for r in rec["deps"]["records"]])


def _rehash_heldout(hout: Path) -> None:
    for rid in ("heldout.intake", "heldout.metrics", "heldout.subgroups", "heldout.acceptance"):
        _rewrite_as_is(hout, rid)


def test_heldout_metrics_recomputed_from_the_predictions_file(held):
    import numpy as np
    from statsmodels.stats.proportion import proportion_confint

    out, hout, df = held
    assert recompute.check(out) == []
    assert recompute.check(hout) == []        # the held-out folder given itself
    pred = pd.read_csv(hout / "predictions.csv", dtype=str, keep_default_na=False)
    assert list(pred.columns) == ["file", "patient_id", "label", "status", "reasons", "score", "flagged"]
    assert list(pred["file"]) == list(df["file"])                  # one row per labelled file, rejected ones included
    analyzed = pred["status"] == "accepted"
    assert (pred.loc[~analyzed, "score"] == "").all() and (pred.loc[~analyzed, "flagged"] == "0").all()
    assert pred.loc[1, "reasons"] == "view LL (from ViewPosition) is not one of AP, PA; PatientAge 10 years is " \
                                     "outside the intended use 18-120 years"
    # the scores are written at full precision: the file gives back the very floats scored
    assert [float(x) for x in pred.loc[analyzed, "score"]] == list(df.loc[df["status"] == "accepted", "score"])

    m = read_record(hout, "heldout.metrics")["data"]
    y, s = pred.loc[analyzed, "label"].astype(int), pred.loc[analyzed, "score"].astype(float)
    assert m["metrics"]["auc"]["delong"]["estimate"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # all enrolled: a positive not analyzed is a miss, a negative not analyzed a true negative
    label, flagged = pred["label"].astype(int).to_numpy(), pred["flagged"].astype(int).to_numpy()
    tp, npos = int(np.sum((flagged == 1) & (label == 1))), int(np.sum(label == 1))
    tn, nneg = int(np.sum((flagged == 0) & (label == 0))), int(np.sum(label == 0))
    ae = m["all_enrolled"]
    assert ae["counts"]["positives_not_analyzed"] == int(np.sum(~analyzed.to_numpy() & (label == 1))) > 0
    assert ae["confusion"]["tn"] == m["confusion"]["tn"] + ae["counts"]["negatives_not_analyzed"]
    assert ae["confusion"]["fn"] == m["confusion"]["fn"] + ae["counts"]["positives_not_analyzed"]
    for metric, k, n in (("sensitivity", tp, npos), ("specificity", tn, nneg)):
        for method, sm in (("wilson", "wilson"), ("clopper-pearson", "beta")):
            e = ae["metrics"][metric][method]
            lo, hi = proportion_confint(k, n, alpha=0.05, method=sm)
            assert (e["estimate"], e["ci_low"], e["ci_high"], e["n"]) == pytest.approx((k / n, lo, hi, n), abs=1e-12)
    pp = ae["per_protocol"]["metrics"]["sensitivity"]["wilson"]
    assert pp["estimate"] == pytest.approx(m["metrics"]["sensitivity"]["wilson"]["estimate"])
    assert pp["ci_low"] == pytest.approx(m["metrics"]["sensitivity"]["wilson"]["ci_low"])


def test_a_tampered_heldout_score_rehashed_is_caught_by_the_recompute_only(held, capsys):
    from evidence.audit import audit_run

    out, hout, _ = held
    path = hout / "predictions.csv"
    pred = pd.read_csv(path, dtype=str, keep_default_na=False)
    flagged_pos = pred[(pred["flagged"] == "1") & (pred["label"] == "1")]
    lowest = flagged_pos["score"].astype(float).idxmin()
    pred.loc[lowest, "score"] = "0.999999"                     # still flagged: only the AUC moves
    pred.to_csv(path, index=False, lineterminator="\n")
    _rehash_heldout(hout)
    failures, n = audit_run(hout, check_code=False, out=out)
    assert failures == [] and n == 5                            # every hash and summary agrees
    lines = recompute.check(out)
    assert len(lines) == 2 and all(x.startswith(f"[{hout.name}] record heldout.metrics: field data.metrics.auc.")
                                   for x in lines)
    assert "auc.delong.estimate: expected " in lines[0] + lines[1]
    assert audit_main(["audit", "--out", str(out), "--no-code-check", "--inputs", "never"]) == 1
    assert f"FAIL [{hout.name}] record heldout.metrics: field data.metrics.auc.delong.estimate: expected" \
        in capsys.readouterr().out


def test_a_heldout_row_flagged_against_its_score_and_a_changed_file_list_are_named(held):
    out, hout, _ = held
    path = hout / "predictions.csv"
    pred = pd.read_csv(path, dtype=str, keep_default_na=False)
    row = pred.index[pred["status"] == "accepted"][0]
    pred.loc[row, "flagged"] = "1" if pred.loc[row, "flagged"] == "0" else "0"
    pred = pred.drop(index=[0])                                  # a rejected file dropped from the file
    pred.to_csv(path, index=False, lineterminator="\n")
    lines = recompute.check_heldout(hout, 0.5)
    assert any(f"line {row + 1} ({pred.loc[row, 'file']}): expected flagged" in x for x in lines)
    assert any(x.startswith("record heldout.intake: field data.files[0]: expected the row of predictions.csv")
               for x in lines)
    assert any(x.startswith("record heldout.intake: field data.rejection.rejected: expected ") for x in lines)


def test_a_tampered_rejection_rate_and_all_enrolled_figure_are_named(held):
    out, hout, _ = held
    _rewrite(hout, "heldout.intake", lambda d: d["rejection"]["rate"]["not_analyzed"].update(estimate=0.01))
    _rewrite(hout, "heldout.metrics",
             lambda d: d["all_enrolled"]["metrics"]["sensitivity"]["clopper-pearson"].update(estimate=0.99))
    lines = recompute.check_heldout(hout, 0.5)
    assert len(lines) == 2
    assert lines[0].startswith("record heldout.metrics: field data.all_enrolled.metrics.sensitivity."
                               "clopper-pearson.estimate: expected ") and lines[0].endswith("found 0.99")
    assert lines[1].startswith("record heldout.intake: field data.rejection.rate.not_analyzed.estimate: "
                               "expected 0.1333") and lines[1].endswith("found 0.01")


def test_heldout_threshold_must_be_the_run_threshold(held):
    out, hout, _ = held
    write_record(out, "validation.threshold", data={"threshold": 0.6})
    assert recompute.check(out) == [f"[{hout.name}] record heldout.intake: field data.threshold: expected 0.6 "
                                    "(validation.threshold of the run) found 0.5"]
