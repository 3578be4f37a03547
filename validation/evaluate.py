"""Evaluate the test split at the threshold locked in `validation.threshold`, under the locked plan.

    python -m validation.evaluate --out OUT --params PARAMS

Writes validation.test, validation.calibration, validation.subgroups, validation.benchmark and
validation.acceptance (figures first, records last). The threshold is read from its record;
this module never chooses one. It refuses to run without that record, without a plan lock
(`validation.plan_lock`) whose plan files still match their hashes, with test scores
(`model.test_predictions`) that do not come after that lock, or with `validate` parameters other
than those the lock fixes. `validation.test` and `validation.acceptance` carry the proof as
`data.prespecified` (`evidence.prespecified.proof`); the submission says "pre-specified" from it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from evidence import EvidenceError, MissingRecord, Store, layout, sha256_file, write_record
from evidence.prespecified import LOCK, SCORES, NotPrespecified, proof
from evidence.params import section
from evidence.cli import stage_main
from evidence.manifest import read_manifest

from . import acceptance, benchmark, calibration, figures, stats, subgroups
from .predictions import InputError, read_predictions
from .design import STATISTICS, check_params  # noqa: F401 (STATISTICS: the defaults, known here by the params tests)
from .threshold import operating_point

DEPS = ["validation.threshold", SCORES, LOCK]
#: The manifest columns of the subgroups (sex, age, view, findings) and the reference standard (source).
MANIFEST_COLUMNS = ("sex", "age_years", "view", "finding_labels", "source")


def locked_threshold(out_dir: Path) -> float:
    """The threshold from the `validation.threshold` record (raises MissingRecord when absent)."""
    try:
        t = Store(out_dir).value("validation.threshold", "threshold")
    except MissingRecord:
        raise MissingRecord(
            f"record validation.threshold: not found under {out_dir}/evidence; the test split is "
            "evaluated only at a threshold locked on validation: run `python -m validation.threshold` first"
        ) from None
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise EvidenceError(f"record validation.threshold: field data.threshold: expected a number found {t!r}")
    return float(t)


def locked_plan(out_dir: Path, params: dict) -> tuple[dict, dict]:
    """(`data.prespecified`, the lock): the plan lock proven by the trail, its `validate` parameters
    equal to `params` and the test-score file the one `model.test_predictions` wrote."""
    claim = proof(out_dir)
    store = Store(out_dir)
    lock = store.get(LOCK)
    locked = lock["data"]["params"]
    changed = sorted(k for k in set(locked) | set(params) if locked.get(k) != params.get(k))
    if changed:
        raise NotPrespecified(f"params validate.{', validate.'.join(changed)}: differ from the values locked in "
                              f"record {LOCK}; evaluate with the locked params, or lock the plan again "
                              "(make plan) and rescore the test split (make submission)")
    path = layout.predictions(out_dir, "test")
    wrote = {o["path"]: o["sha256"] for o in store.get(SCORES)["outs"]}
    rel = layout.predictions("", "test").as_posix()
    found = sha256_file(path) if path.is_file() else "missing file"
    if wrote.get(rel) != found:
        raise NotPrespecified(f"{path}: sha256 {found} differs from {wrote.get(rel)} written by record {SCORES}; "
                              "rescore the test split (python -m model.score_test)")
    return claim, lock


def test_metrics(df, threshold: float, p: dict) -> dict:
    """The `validation.test` data: the operating point with bootstrap, DeLong and prevalence parts."""
    y, s, pid = df["label"].to_numpy(), df["score"].to_numpy(), df["patient_id"].to_numpy()
    level = p["ci_level"]
    op = operating_point(y, s, pid, threshold, level=level)
    conf = op["confusion"]
    boot = stats.bootstrap_metrics(y, s, pid, threshold, metrics=stats.ALL_METRICS,
                                   n_resamples=p["bootstrap_resamples"], level=level,
                                   method=p["bootstrap_method"], seed=p["bootstrap_seed"])
    metrics = {m: {"wilson": op["metrics"][m], "bootstrap": boot[m]} for m in stats.PROPORTION_METRICS}
    for m in stats.PROPORTION_METRICS:   # the exact interval the performance goals are judged on
        metrics[m]["clopper-pearson"] = stats.proportion_ci(*stats.metric_fraction(m, **conf),
                                                            method="clopper-pearson", level=level)
    metrics["f1"] = {"bootstrap": boot["f1"]}
    metrics["auc"] = {"delong": stats.delong_auc_ci(y, s, level=level), "bootstrap": boot["auc"]}
    intended = p.get("intended_use_prevalence")
    at_prev = []
    for q in p.get("predictive_value_prevalences") or sorted({float(v) for v in p["prevalences"]}):
        row = stats.predictive_values_ci(**conf, prevalence=q, level=level)
        at_prev.append({"prevalence": q, "intended_use": q == intended,
                        "ppv": row["ppv"]["estimate"] if stats.is_estimable(row["ppv"]) else row["ppv"],
                        "npv": row["npv"]["estimate"] if stats.is_estimable(row["npv"]) else row["npv"],
                        "ppv_interval": row["ppv"], "npv_interval": row["npv"]})
    degenerate = {m: boot[m].get("n_degenerate", None) for m in stats.ALL_METRICS if stats.is_estimable(boot[m])}
    n, n_pos = op["n"], op["positives"]
    return {
        "threshold": threshold,
        "decision": "positive when score >= threshold",
        "split": "test",
        "counts": {"n": n, "n_patients": op["n_patients"], "positives": n_pos,
                   "negatives": n - n_pos, "prevalence": float(n_pos / n)},
        "confusion": conf,
        "metrics": metrics,
        "bootstrap": {"unit": "patient", "n_resamples": p["bootstrap_resamples"], "seed": p["bootstrap_seed"],
                      "method": p["bootstrap_method"], "ci_level": level, "n_degenerate": degenerate},
        "ppv_npv_at_prevalence": at_prev,
    }


def _forest_rows(groups: dict) -> list[tuple[str, dict, dict]]:
    rows = []
    for var in ("sex", "age_band", "age_out_of_scope", "view"):
        for g in groups[var].values():
            name = "age" if var == "age_out_of_scope" else var
            rows.append((f"{name}: {g['label']}", g["sensitivity"], g["specificity"]))
    for name, pair in groups["finding"].items():
        g = pair["with"]
        rows.append((f"finding: {g['label']}", g["sensitivity"], g["specificity"]))
    return rows


def run(out_dir: str | Path, params: dict) -> dict[str, dict]:
    out_dir = Path(out_dir)
    p = check_params(params)
    threshold = locked_threshold(out_dir)
    claim, lock = locked_plan(out_dir, params)
    test_path, manifest_path = layout.predictions(out_dir, "test"), layout.manifest(out_dir)
    df = read_predictions(test_path)
    manifest = read_manifest(manifest_path, MANIFEST_COLUMNS)
    merged = df.merge(manifest, on="image_id", how="left", indicator=True)
    missing = merged["_merge"] != "both"
    if missing.any():
        first = merged.loc[missing, "image_id"].iloc[0]
        raise InputError(f"{test_path}: {int(missing.sum())} image(s) not in {manifest_path}, first {first!r}; "
                         "predictions and manifest must come from the same run")
    y, s = df["label"].to_numpy(), df["score"].to_numpy()

    test = test_metrics(df, threshold, p)
    calib = calibration.calibration(y, s, n_bins=p["calibration_bins"], binning=p["calibration_binning"],
                                    threshold=threshold, patient_ids=df["patient_id"].to_numpy(),
                                    n_resamples=p["bootstrap_resamples"], level=p["ci_level"],
                                    seed=p["bootstrap_seed"])
    groups = subgroups.subgroups(merged, threshold, min_positives=p["min_subgroup_positives"],
                                 min_negatives=p["min_subgroup_negatives"], level=p["ci_level"])
    bench = benchmark.benchmark(test["metrics"]["f1"]["bootstrap"], test_n=len(y), test_positives=int(y.sum()),
                                source_kinds=manifest["source"])
    verdict = acceptance.evaluate(lock["data"]["acceptance_criteria"], test["metrics"])

    fig = layout.figures(out_dir)
    wilson = {k: test["metrics"][k]["wilson"] for k in ("sensitivity", "specificity", "ppv")}
    roc_point = {k: (w["estimate"] if stats.is_estimable(w) else None) for k, w in wilson.items()}
    auc = test["metrics"]["auc"]["delong"]
    test_figs = []
    if roc_point["sensitivity"] is not None and roc_point["specificity"] is not None:
        test_figs = figures.roc_pr(y, s, threshold, roc_point, fig / "roc_test.png", fig / "pr_test.png",
                                   auc=auc.get("estimate"))
    calib_figs = [figures.reliability(calib["bins"], fig / "reliability_test.png"),
                  figures.score_histogram(y, s, threshold, fig / "scores_test.png",
                                          window=calib["concentration"]["window"])]
    forest_fig = figures.forest(_forest_rows(groups), fig / "forest_test.png", level=p["ci_level"])

    inputs = [test_path, manifest_path]
    common = dict(params=params)
    written = {}
    written["validation.test"] = write_record(out_dir, "validation.test", data={**test, "prespecified": claim},
                                              deps=inputs,
                                              dep_records=DEPS, outs=test_figs, **common)
    written["validation.calibration"] = write_record(
        out_dir, "validation.calibration", data=calib, deps=inputs, dep_records=DEPS, outs=calib_figs, **common)
    written["validation.subgroups"] = write_record(
        out_dir, "validation.subgroups",
        data={"threshold": threshold, "min_subgroup_positives": p["min_subgroup_positives"],
              "min_subgroup_negatives": p["min_subgroup_negatives"], "ci_method": "wilson",
              "ci_level": p["ci_level"], "age_bands": [{"key": k, "label": lab} for k, lab, _, _ in subgroups.AGE_BANDS],
              "groups": groups, "heterogeneity": subgroups.heterogeneity(groups),
              "heterogeneity_statement": subgroups.HETEROGENEITY_STATEMENT},
        deps=inputs, dep_records=DEPS, outs=[forest_fig], **common)
    written["validation.benchmark"] = write_record(
        out_dir, "validation.benchmark", data=bench, deps=[manifest_path],
        dep_records=["validation.test"], **common)
    written["validation.acceptance"] = write_record(
        out_dir, "validation.acceptance", data={**verdict, "prespecified": claim},
        dep_records=["validation.test", LOCK], **common)
    return written


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m validation.evaluate", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "validate")), summary=_summary)


def _summary(written: dict, args) -> str:
    t, a = written["validation.test"]["data"], written["validation.acceptance"]["data"]
    return (f"validation.evaluate: threshold {t['threshold']:.6g}, n {t['counts']['n']}, "
            f"{'every primary goal met' if a['all_passed'] else 'NOT every primary goal met'}")


if __name__ == "__main__":
    sys.exit(main())
