"""The postmarket monitoring plan of the run: `python -m validation.monitoring_plan --out OUT --params PARAMS`.

Writes record `monitoring.plan`: the alert limits (params section `monitoring`) and the validation
baseline a production batch is compared with (`validation.monitor`), all taken from the test split
the locked plan judged:
- scores: `predictions/test.csv` (record `model.test_predictions`): baseline-quantile bins and their
  shares (PSI), the flag rate at the locked threshold (record `validation.threshold`); the scores
  themselves stay in that file, which the monitor reads for the Kolmogorov-Smirnov test;
- headers: view, sex and age from the cohort manifest's test-split rows, pixel spacing where the
  manifest has it; manufacturer is not in the manifest, so it has no baseline (reported, not judged);
- rejection: the share of test-split images outside the header checks' intended use (age, view), from
  the manifest and the run's header checks (record `workflow.dicom`): the rate without drift;
- image statistics: mean and standard deviation of the model input (the locked preprocessing) of
  every test-split image, computed here once, as no earlier record holds them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from evidence import Store, layout, write_record
from evidence.cli import stage_main
from evidence.errors import ToolkitError
from evidence.manifest import read_manifest
from evidence.params import section

from . import drift

RECORD = "monitoring.plan"
CATEGORICAL = ("view", "sex")
NUMERIC = ("age_years", "pixel_spacing")
IMAGE_STATISTICS = ("mean", "std")
DEFAULTS = {"min_batch_size": 20, "score_bins": 5, "feature_bins": 5, "psi_limit": 0.25,
            "categorical_psi_limit": 0.25, "ks_alpha": 0.01, "ci_level": 0.99, "rejection_rate_limit": 0.05}


class MonitoringError(ToolkitError, ValueError):
    """Bad input to monitoring; the message names the file or parameter and the fix."""


def limits(params: dict) -> dict:
    """The monitoring section with its defaults filled in."""
    return {**DEFAULTS, **(params or {})}


def image_statistics(images, spec) -> dict[str, np.ndarray]:
    """{mean, std} of each image's model input (`model.preprocess.preprocess_batch`, the locked spec)."""
    from model.preprocess import preprocess_batch

    means, stds = [], []
    for start in range(0, len(images), 32):
        batch = np.asarray(preprocess_batch(images[start:start + 32], spec), dtype=np.float64)
        flat = batch.reshape(len(batch), -1)
        means += list(flat.mean(axis=1))
        stds += list(flat.std(axis=1))
    return {"mean": np.asarray(means), "std": np.asarray(stds)}


def numeric_baseline(values, bins: int, source: str) -> dict:
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return {"available": False, "reason": f"no value in {source}", "source": source}
    edges = drift.quantile_edges(finite, bins)
    return {"available": True, "kind": "numeric", "source": source, "n": int(finite.size),
            "n_missing": int(v.size - finite.size), "edges": edges, "shares": drift.numeric_shares(finite, edges),
            "mean": float(finite.mean()), "sd": float(finite.std(ddof=1)) if finite.size > 1 else 0.0}


def categorical_baseline(values, source: str) -> dict:
    values = list(values)
    return {"available": True, "kind": "categorical", "source": source, "n": len(values),
            "shares": drift.categorical_shares(values)}


def intended_use_share(test: pd.DataFrame, rules: dict) -> dict:
    """The share of test-split images the header checks' intended-use rules (age range, missing age,
    allowed views) would reject, from the manifest's age and view: the rejection rate a batch drawn
    like the test split has without any drift."""
    age = pd.to_numeric(test["age_years"], errors="coerce").to_numpy(dtype=float)
    missing = ~np.isfinite(age)
    with np.errstate(invalid="ignore"):
        out_of_range = ~missing & ((age < float(rules["min_age_years"])) | (age > float(rules["max_age_years"])))
    age_rejected = out_of_range | (missing & (str(rules["missing_age"]) == "reject"))
    allowed = {str(v).upper() for v in rules["allowed_views"]}
    view_rejected = ~test["view"].fillna("").astype(str).str.upper().isin(allowed).to_numpy()
    either = age_rejected | view_rejected
    n = int(len(test))
    return {"n": n, "outside": int(either.sum()), "estimate": float(either.mean()) if n else 0.0,
            "by_reason": {"age": int(age_rejected.sum()), "view": int(view_rejected.sum())}}


def run(out: str | Path, params: dict) -> dict:
    from model.data import read_cohort, split_rows
    from model.images import load_pixels
    from model.infer import SPEC_FILE, WORKFLOW_RECORD, header_rules
    from model.preprocess import load_spec

    out, p = Path(out), limits(params)
    store = Store(out)
    threshold = float(store.value("validation.threshold", "threshold"))
    scores_file = layout.predictions(out, "test")
    scores = pd.read_csv(scores_file)
    s = scores["score"].to_numpy(dtype=float)
    flagged = int(np.sum(s >= threshold))
    score_edges = drift.quantile_edges(s, p["score_bins"])

    cohort, info = read_cohort(out)
    rows = split_rows(cohort, "test", need_both_classes=False)
    manifest = read_manifest(layout.manifest(out), ("image_id", *CATEGORICAL, *NUMERIC))
    test = rows[["image_id", "path"]].merge(manifest, on="image_id", how="left")
    where = "the cohort manifest's test-split rows (cohort/manifest.csv, cohort/splits.csv)"
    headers = {c: categorical_baseline(test[c], where) for c in CATEGORICAL}
    headers.update({c: numeric_baseline(pd.to_numeric(test[c], errors="coerce"), p["feature_bins"], where)
                    for c in NUMERIC})
    headers["manufacturer"] = {"available": False, "source": where,
                               "reason": "the cohort manifest carries no manufacturer"}
    rules, rules_source = header_rules(out)
    rejection = {**intended_use_share(test, rules), "source": f"{where}, against the header checks of {rules_source}"}
    spec = load_spec(out / SPEC_FILE)
    stats = image_statistics([load_pixels(path) for path in test["path"]], spec)
    image_source = ("computed by this stage from every test-split image through the locked preprocessing "
                    "(no earlier record holds image statistics)")
    data = {
        "limits": p,
        "threshold": threshold,
        "baseline": {
            "split": "test", "n_images": int(len(s)),
            "scores": {"source": layout.predictions("", "test").as_posix(), "n": int(len(s)), "edges": score_edges,
                       "shares": drift.numeric_shares(s, score_edges), "mean": float(s.mean())},
            "flag_rate": {"flagged": flagged, "n": int(len(s)), "estimate": flagged / len(s) if len(s) else 0.0,
                          "threshold": threshold},
            "headers": headers,
            "rejection": rejection,
            "image": {k: numeric_baseline(stats[k], p["feature_bins"], image_source) for k in IMAGE_STATISTICS},
        },
    }
    return write_record(out, RECORD, data=data, params=p,
                        deps=[scores_file, info["manifest"], info["splits"], out / SPEC_FILE],
                        dep_records=["model.test_predictions", "validation.threshold", "cohort.manifest",
                                     "split.patients", "training.run", WORKFLOW_RECORD])


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m validation.monitoring_plan", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "monitoring")),
        summary=lambda r, a: (f"monitoring plan: baseline of {r['data']['baseline']['n_images']} test-split images, "
                              f"flag rate {r['data']['baseline']['flag_rate']['estimate']:.3f}"))


if __name__ == "__main__":
    sys.exit(main())
