"""validation.evaluate: test metrics at the locked threshold, subgroups, calibration, benchmark, acceptance."""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from evidence import Store, read_record
from evidence.audit import audit
from validation import acceptance, benchmark, calibration, evaluate, threshold

from validation_runs import lock_and_score, make_run, params_file

RECORDS = ("validation.test", "validation.calibration", "validation.subgroups",
           "validation.benchmark", "validation.acceptance")


@pytest.fixture(scope="module")
def run(tmp_path_factory, repo_root=Path(__file__).resolve().parent.parent):
    tmp = tmp_path_factory.mktemp("eval")
    out = make_run(tmp, seed=3, n_test=200)
    params = params_file(tmp, repo_root, bootstrap_resamples=300, min_subgroup_positives=20,
                         min_subgroup_negatives=25)
    assert threshold.main(["--out", str(out), "--params", str(params)]) == 0
    lock_and_score(out, params)
    assert evaluate.main(["--out", str(out), "--params", str(params)]) == 0
    return out


def _walk(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)
    else:
        yield node


def test_refuses_without_locked_threshold(tmp_path, repo_root, capsys):
    out = make_run(tmp_path)
    assert evaluate.main(["--out", str(out), "--params", str(params_file(tmp_path, repo_root))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: record validation.threshold: not found") and err.count("\n") == 1
    assert sorted(p.name for p in (out / "evidence").glob("*.json")) == ["model.predictions.json"]
    assert not (out / "figures").exists()


def _one_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_refuses_without_a_plan_lock(tmp_path, repo_root, capsys):
    out = make_run(tmp_path)
    params = params_file(tmp_path, repo_root, bootstrap_resamples=100)
    assert threshold.main(["--out", str(out), "--params", str(params)]) == 0
    capsys.readouterr()
    assert evaluate.main(["--out", str(out), "--params", str(params)]) == 2
    assert "record validation.plan_lock: not found" in _one_line(capsys.readouterr().err)
    assert not (out / "evidence" / "validation.test.json").exists() and not (out / "figures").exists()


@pytest.mark.parametrize("tamper, message", [
    ("plan", "record validation.plan_lock: plan file submission/validation_plan.md: expected"),
    ("params", "params validate.min_subgroup_positives: differ from the values locked in record validation.plan_lock"),
    ("scores", "predictions/test.csv: sha256"),
])
def test_refuses_unless_the_trail_proves_the_locked_plan(tmp_path, repo_root, capsys, tamper, message):
    out = make_run(tmp_path)
    params = params_file(tmp_path, repo_root, bootstrap_resamples=100)
    assert threshold.main(["--out", str(out), "--params", str(params)]) == 0
    lock_and_score(out, params)
    if tamper == "plan":
        (out / "submission" / "validation_plan.md").write_text("# A plan edited after the lock\n")
    elif tamper == "params":
        params = params_file(tmp_path, repo_root, bootstrap_resamples=100, min_subgroup_positives=3)
    else:
        with (out / "predictions" / "test.csv").open("a") as f:
            f.write("t9999_000.png,t9999,1,0.99\n")
    capsys.readouterr()
    assert evaluate.main(["--out", str(out), "--params", str(params)]) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not (out / "evidence" / "validation.test.json").exists()


def test_evaluate_has_no_threshold_choosing_code_path():
    tree = ast.parse((Path(evaluate.__file__)).read_text())
    names = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(tree)
             if isinstance(n, (ast.Attribute, ast.Name))}
    assert "choose_threshold" not in names and "candidate_curve" not in names


def test_test_metrics_against_references(run):
    t = read_record(run, "validation.test")
    locked = read_record(run, "validation.threshold")["data"]["threshold"]
    d = t["data"]
    assert d["threshold"] == locked
    assert {r["id"] for r in t["deps"]["records"]} == {"validation.threshold", "model.test_predictions",
                                                        "validation.plan_lock"}
    lock = read_record(run, "validation.plan_lock")
    assert d["prespecified"]["plan_lock_sha256"] == lock["sha256"]
    assert d["prespecified"]["test_scores_sha256"] == read_record(run, "model.test_predictions")["sha256"]
    assert {f["path"] for f in t["deps"]["files"]} == {"predictions/test.csv", "cohort/manifest.csv"}
    assert {f["path"] for f in t["outs"]} == {"figures/roc_test.png", "figures/pr_test.png"}
    df = pd.read_csv(run / "predictions" / "test.csv")
    y, s = df["label"].to_numpy(), df["score"].to_numpy()
    pred = s >= locked
    tp, fn = int(np.sum(pred & (y == 1))), int(np.sum(~pred & (y == 1)))
    assert d["confusion"]["tp"] == tp and d["confusion"]["fn"] == fn
    w = d["metrics"]["sensitivity"]["wilson"]
    assert (w["ci_low"], w["ci_high"]) == pytest.approx(proportion_confint(tp, tp + fn, method="wilson"))
    assert d["metrics"]["auc"]["delong"]["estimate"] == pytest.approx(roc_auc_score(y, s))
    b = d["metrics"]["sensitivity"]["bootstrap"]
    assert b["method"] == "cluster-bootstrap-percentile" and b["n_resamples"] == 300
    assert b["n_patients"] == df["patient_id"].nunique()
    assert b["ci_low"] <= b["estimate"] <= b["ci_high"]
    assert [r["prevalence"] for r in d["ppv_npv_at_prevalence"]][:2] == [0.01, 0.013]
    for v in _walk(d):
        assert not (isinstance(v, float) and not math.isfinite(v))


def test_calibration_against_sklearn(run):
    rec = read_record(run, "validation.calibration")
    d = rec["data"]
    df = pd.read_csv(run / "predictions" / "test.csv")
    s, y = df["score"].to_numpy(), df["label"].to_numpy()
    assert d["brier_score"] == pytest.approx(brier_score_loss(y, s))
    assert sum(b["n"] for b in d["bins"]) == len(df)
    # the default: equal-count bins, edges at the deciles of the scores, [low, high), the last closed
    assert d["ece_bins"]["binning"] == "quantile" and d["ece_bins"]["requested"] == 10
    inner = np.quantile(s, np.arange(1, 10) / 10)
    assert [b["high"] for b in d["bins"][:-1]] == pytest.approx(list(inner))
    idx = np.array([sum(v >= e for e in inner) for v in s])
    assert [b["n"] for b in d["bins"]] == [int(np.sum(idx == k)) for k in range(10)]
    assert max(b["n"] for b in d["bins"]) - min(b["n"] for b in d["bins"]) <= 3  # equal counts up to ties
    ece = sum(np.sum(idx == k) / len(df) * abs(y[idx == k].mean() - s[idx == k].mean()) for k in range(10))
    assert d["ece"] == pytest.approx(ece) == d["ece_ci"]["estimate"]
    e = d["ece_ci"]
    assert e["method"] == "cluster-bootstrap-percentile" and e["unit"] == "patient" and e["n_resamples"] == 300
    assert e["n_clusters"] == df["patient_id"].nunique() and e["ci_low"] < e["ci_high"]
    c = d["concentration"]
    t = read_record(run, "validation.threshold")["data"]["threshold"]
    assert c["threshold"] == t and c["n_within_window"] == int(np.sum(np.abs(s - t) <= 0.05))
    assert c["share_within_window"] == pytest.approx(c["n_within_window"] / len(s))
    assert c["concentrated"] is (c["share_within_window"] >= 0.5 or c["all_in_threshold_tenth"])
    assert [o["path"] for o in rec["outs"]] == ["figures/reliability_test.png", "figures/scores_test.png"]


def test_uniform_calibration_bins_by_hand():
    rng = np.random.default_rng(5)
    y, s = rng.integers(0, 2, 300), np.round(rng.random(300), 3)
    d = calibration.calibration(y, s, n_bins=10, binning="uniform", n_resamples=50)
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(s, edges) - 1, 0, 9)
    ece = sum(np.sum(idx == k) / len(s) * abs(y[idx == k].mean() - s[idx == k].mean())
              for k in range(10) if np.any(idx == k))
    assert d["ece"] == pytest.approx(ece) and d["ece_bins"]["count"] == 10
    assert "concentration" not in d  # no threshold given


def test_calibration_empty_bin_not_estimable():
    bins = calibration.reliability_bins([0, 1], [0.05, 0.95], 4)
    assert bins[1]["n"] == 0 and bins[1]["observed_rate"]["estimable"] is False


def test_subgroups(run):
    d = read_record(run, "validation.subgroups")["data"]
    g = d["groups"]
    assert set(g) == {"sex", "age_band", "age_out_of_scope", "view", "finding"}
    assert set(g["age_band"]) == {"18_40", "40_60", "60_80", "80_100"}
    assert set(g["age_out_of_scope"]) == {"under_min", "over_max", "unknown"}
    assert d["min_subgroup_positives"] == 20 and d["min_subgroup_negatives"] == 25
    df = pd.read_csv(run / "predictions" / "test.csv")
    assert sum(x["n"] for x in g["sex"].values()) == len(df)
    assert sum(x["n"] for x in list(g["age_band"].values()) + list(g["age_out_of_scope"].values())) == len(df)
    assert "Infiltration" in g["finding"] and "Pneumonia" not in g["finding"]
    for grp in [x for v in ("sex", "age_band", "age_out_of_scope", "view") for x in g[v].values()]:
        assert grp["n_positive"] + grp["n_negative"] == grp["n"]
        assert grp["n_positive"] == grp["confusion"]["tp"] + grp["confusion"]["fn"]
        assert stats_is_estimable(grp["sensitivity"]) == (grp["n_positive"] >= 20)
        assert stats_is_estimable(grp["specificity"]) == (grp["n_negative"] >= 25)
        if grp["n_positive"] < 20:
            assert grp["sensitivity"]["reason"].startswith(f"{grp['n_positive']} positive")
        else:
            assert grp["sensitivity"]["method"] == "wilson"
    small = g["sex"]["unknown"]
    assert small["estimable"] is False and "fewer than the pre-specified 20" in small["reason"]
    assert set(d["heterogeneity"]) == {"sex", "age_band", "view", "finding"}
    het = d["heterogeneity"]["sex"]["specificity"]
    assert het["method"] == "fisher-exact" and het["strata"] == ["M", "F"]
    assert "multiplicity" in d["heterogeneity_statement"]
    assert read_record(run, "validation.subgroups")["outs"][0]["path"] == "figures/forest_test.png"


def stats_is_estimable(v) -> bool:
    return not (isinstance(v, dict) and v.get("estimable") is False)


def test_benchmark_and_acceptance(run):
    b = read_record(run, "validation.benchmark")["data"]
    assert b["published"]["values"]["radiologist_average"]["estimate"] == 0.387
    assert b["published"]["values"]["chexnet"]["ci_high"] == 0.481
    assert "1711.05225" in b["published"]["citation"] and b["comparable"] is False
    t = Store(run).data("validation.test")
    assert b["ours"]["f1"] == t["metrics"]["f1"]["bootstrap"]
    a = read_record(run, "validation.acceptance")["data"]
    assert len(a["criteria"]) == 3
    for c in a["criteria"]:
        est = t["metrics"][c["metric"]][c["method"]]
        assert c["observed"] == est[c["bound"]] and c["passed"] == acceptance.OPS[c["op"]](est[c["bound"]], c["value"])
    assert a["all_passed"] == all(c["passed"] for c in a["criteria"] if c["primary"])
    assert [c["primary"] for c in a["criteria"]] == [True, True, False]   # params.yaml: AUC a secondary goal
    conf = t["confusion"]
    exact = proportion_confint(conf["tp"], conf["tp"] + conf["fn"], alpha=0.05, method="beta")
    assert t["metrics"]["sensitivity"]["clopper-pearson"]["ci_low"] == pytest.approx(exact[0], abs=1e-12)


def test_benchmark_reference_standard_follows_the_cohort_source(run):
    b = read_record(run, "validation.benchmark")
    assert b["data"]["ours"]["reference_standard"] == benchmark.REFERENCE_STANDARDS["demo"]
    assert "420 ChestX-ray14 images" in b["data"]["comparability"]
    assert "synthetic demo cohort" in b["data"]["comparability"] and "NIH" not in b["data"]["comparability"]
    assert [f["path"] for f in b["deps"]["files"]] == ["cohort/manifest.csv"]
    nih = benchmark.benchmark({}, test_n=10, test_positives=2, source_kinds=["nih", "nih"])
    assert "text-mined" in nih["ours"]["reference_standard"] and "text-mined" in nih["comparability"]
    with pytest.raises(ValueError, match="expected one of nih, demo, folder"):
        benchmark.benchmark({}, test_n=10, test_positives=2, source_kinds=["other"])


def test_audit_passes_on_the_run(run):
    failures, n = audit(run, check_code=False, complete=False)
    assert failures == [] and n == 13   # the pccp.plan the lock hashes among them


def test_acceptance_evaluate_unit():
    est = {"estimate": 0.8, "ci_low": 0.7, "ci_high": 0.9, "ci_level": 0.95, "method": "wilson", "n": 50}
    crit = [{"metric": "sensitivity", "bound": "ci_low", "op": ">=", "value": 0.7},
            {"metric": "auc", "bound": "estimate", "op": ">", "value": 0.5},
            {"metric": "specificity", "bound": "ci_low", "op": ">=", "value": 0.5, "method": "wilson"}]
    got = acceptance.evaluate(crit, {"sensitivity": est, "auc": {"delong": est},
                                     "specificity": {"bootstrap": est}})
    assert [c["passed"] for c in got["criteria"]] == [True, True, False]
    assert got["criteria"][2]["observed"] is None and "not reported" in got["criteria"][2]["reason"]
    assert got["all_passed"] is False
    with pytest.raises(acceptance.CriteriaError, match=r"acceptance\[0\]: op"):
        acceptance.evaluate([{"metric": "auc", "bound": "ci_low", "op": "=>", "value": 0.7}], {})


def test_manifest_mismatch_is_an_error(tmp_path, repo_root, capsys):
    out = make_run(tmp_path)
    params = params_file(tmp_path, repo_root, bootstrap_resamples=100)
    assert threshold.main(["--out", str(out), "--params", str(params)]) == 0
    lock_and_score(out, params)
    m = pd.read_csv(out / "cohort" / "manifest.csv")
    m[~m["image_id"].str.startswith("t0000")].to_csv(out / "cohort" / "manifest.csv", index=False)
    assert evaluate.main(["--out", str(out), "--params", str(params)]) == 2
    assert "not in" in capsys.readouterr().err
    assert not (out / "evidence" / "validation.test.json").exists()


def test_one_class_subgroup_is_not_estimable_never_nan():
    from validation.subgroups import group_metrics
    g = group_metrics(np.zeros(30, dtype=int), np.zeros(30), 0.5, label="x", min_positives=10,
                      min_negatives=10, level=0.95)
    assert g["estimable"] is False and g["sensitivity"]["reason"] == "0 positives, fewer than the pre-specified 10"
    assert g["specificity"]["estimate"] == 1.0 and (g["n_positive"], g["n_negative"]) == (0, 30)
    json.dumps(g, allow_nan=False)


def test_every_auc_interval_is_not_estimable_with_one_positive_or_one_negative():
    """The issue's run: one positive still got an interval ([0.120, 1.0]) from the bootstrap."""
    rng = np.random.default_rng(0)
    p = {"ci_level": 0.95, "bootstrap_resamples": 400, "bootstrap_method": "percentile", "bootstrap_seed": 0,
         "prevalences": [0.05]}
    for labels in ([1] + [0] * 59, [0] + [1] * 59):
        df = pd.DataFrame({"label": labels, "score": rng.random(60), "patient_id": [f"p{i // 2}" for i in range(60)]})
        auc = evaluate.test_metrics(df, 0.5, p)["metrics"]["auc"]
        assert set(auc) == {"delong", "bootstrap"}
        for est in auc.values():
            assert est["estimable"] is False and "at least two positives and two negatives" in est["reason"]


def test_figure_curve_matches_sklearn_roc():
    from sklearn.metrics import roc_curve
    from validation.figures import _curve
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 2)
    fpr, tpr, prec = _curve(y, s)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr, ref_fpr[1:]) and np.allclose(tpr, ref_tpr[1:])
    assert np.all((prec > 0) & (prec <= 1))
