"""Test helpers: tiny synthetic run folders for the validation tests (predictions, manifest, upstream
records, and a locked plan under which the test split is scored)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from evidence import atomic, layout, write_record
from evidence.params import section
from evidence.prespecified import write_lock

FINDINGS = ["Infiltration", "Effusion", "Edema", "Atelectasis"]


def make_predictions(rng, n_patients: int, prefix: str, *, shift: float = 1.5) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        sick = rng.random() < 0.3
        for k in range(int(rng.integers(1, 4))):
            label = int(sick and rng.random() < 0.8)
            score = float(1 / (1 + np.exp(-(rng.normal(shift * label - 0.7, 1.0)))))
            rows.append({"image_id": f"{prefix}{p:04d}_{k:03d}.png", "patient_id": f"{prefix}{p:04d}",
                         "label": label, "score": round(score, 4)})
    return pd.DataFrame(rows)


def make_run(tmp: Path, *, seed: int = 0, n_val: int = 80, n_test: int = 120, write_upstream=True) -> Path:
    rng = np.random.default_rng(seed)
    out = Path(tmp) / "run"
    (out / "predictions").mkdir(parents=True)
    (out / "cohort").mkdir(parents=True)
    val = make_predictions(rng, n_val, "v")
    test = make_predictions(rng, n_test, "t")
    val.to_csv(out / "predictions" / "val.csv", index=False)
    test.to_csv(out / "predictions" / "test.csv", index=False)
    both = pd.concat([val, test])
    findings = []
    for lab in both["label"]:
        fs = [f for f in FINDINGS if rng.random() < 0.25] + (["Pneumonia"] if lab else [])
        findings.append("|".join(fs) if fs else "No Finding")
    manifest = pd.DataFrame({
        "image_id": both["image_id"], "path": "", "patient_id": both["patient_id"],
        "pneumonia": both["label"], "finding_labels": findings,
        "age_years": rng.choice([np.nan, 10, 30, 50, 70, 85], len(both)),
        "sex": rng.choice(["M", "F", ""], len(both), p=[0.48, 0.48, 0.04]),
        "view": rng.choice(["AP", "PA"], len(both)), "follow_up": 0, "source": "demo", "split": "",
        "orig_width": "", "orig_height": "", "pixel_spacing": "",
    })
    manifest.to_csv(out / "cohort" / "manifest.csv", index=False)
    if write_upstream:
        write_record(out, "model.predictions", synthetic=True, data={"files": ["predictions/val.csv"]},
                     outs=[out / "predictions" / "val.csv"])
    return out


def lock_plan(out: Path, params: Path, *, locked_by: str = "Test Engineer") -> dict:
    """The design from `params` (section validate), the change control plan (section pccp, locked
    with the plan), a one-file plan and its lock; returns the lock."""
    from validation.pccp_plan import run as pccp_plan
    from validation.sample_size import run as design

    design(out, section(params, "validate"))
    pccp_plan(out, section(params, "pccp"))
    plan = atomic.write_text(layout.submission(out) / "validation_plan.md", "# Clinical Validation Plan\n")
    write_record(out, "submission.plan", data={"document": "validation_plan"}, outs=[plan],
                 dep_records=["validation.design"])
    return write_lock(out, params={}, locked_by=locked_by, locked_by_source="--locked-by")


def lock_and_score(out: Path, params: Path) -> dict:
    """`lock_plan`, then the test-score record of `predictions/test.csv` as `make_run` wrote it."""
    lock = lock_plan(out, params)
    write_record(out, "model.test_predictions", data={"files": ["predictions/test.csv"]},
                 outs=[layout.predictions(out, "test")], dep_records=["model.predictions", "validation.plan_lock"])
    return lock


def params_file(tmp: Path, repo_root: Path, **overrides) -> Path:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["validate"].update(overrides)
    path = Path(tmp) / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def heldout_frame(rng, n: int = 60, *, n_rejected: int = 6, n_error: int = 2) -> pd.DataFrame:
    """Labelled held-out results as `validation.heldout.intake` returns them: accepted files with a
    score, rejected ones (one with two reasons of different categories, one with two of the same) and
    failed ones, without a score."""
    rows = []
    for i in range(n):
        label = int(rng.random() < 0.4)
        status, reasons, score = "accepted", [], float(1 / (1 + np.exp(-rng.normal(1.6 * label - 0.8, 1.0))))
        codes = []
        if i < n_rejected:
            status, score = "rejected", None
            reasons, codes = [(["view LL (from ViewPosition) is not one of AP, PA"], ["view_not_allowed"]),
                              (["view LL (from ViewPosition) is not one of AP, PA",
                                "PatientAge 10 years is outside the intended use 18-120 years"],
                               ["view_not_allowed", "age_out_of_range"]),
                              (["Rows 20 is outside the accepted range 64-8192",
                                "Columns 20 is outside the accepted range 64-8192"],
                               ["size_out_of_range", "size_out_of_range"]),
                              (["Modality CT is not one of DX, CR"], ["modality_not_allowed"])][i % 4]
        elif i < n_rejected + n_error:
            status, score = "error", None
            reasons, codes = ["not a DICOM file: no 'DICM' marker after the 128-byte preamble"], ["not_dicom"]
        rows.append({"file": f"site/f{i:03d}.dcm", "patient_id": f"P{i // 2:03d}", "label": label, "status": status,
                     "reasons": reasons, "codes": codes, "warnings": [], "score": score})
    return pd.DataFrame(rows)


def make_heldout(out: Path, df: pd.DataFrame, *, threshold: float = 0.5, name: str = "set-0123456789ab",
                 resamples: int = 100) -> Path:
    """A held-out folder `OUT/heldout/<name>` holding the five `validation.heldout` records, written
    from `df` (`heldout_frame`) by the functions the held-out run uses; no DICOM, no model."""
    from validation import heldout
    from validation.design import check_statistics

    hout = layout.heldout(out, name)
    p = check_statistics({"bootstrap_resamples": resamples})
    files = [{"file": r["file"], "label": int(r["label"]), "status": r["status"], "reasons": list(r["reasons"]),
              "codes": list(r["codes"]), "reason_categories": heldout.reason_categories(r["status"], r["codes"])} for r in df.to_dict("records")]
    accepted = df[df["status"] == "accepted"].copy()
    accepted["score"] = accepted["score"].astype(float)
    metrics = heldout.metrics_data(accepted, threshold, p, [])
    metrics["all_enrolled"] = heldout.all_enrolled_data(df, threshold, p["ci_level"])
    counts = {s: sum(f["status"] == s for f in files) for s in ("accepted", "rejected", "error")}
    write_record(hout, "heldout.plan_lock", data={"plan_record": "validation.plan_lock"}, synthetic=True)
    predictions = heldout.write_predictions(hout, df, threshold)
    write_record(hout, "heldout.intake", synthetic=True, outs=[predictions], dep_records=["heldout.plan_lock"],
                 data={"n_labelled_files": len(files), "counts": counts, "files": files, "threshold": threshold,
                       "rejection": heldout.rejection_data(files, p["ci_level"])})
    write_record(hout, "heldout.metrics", data=metrics, deps=[predictions], dep_records=["heldout.intake"], synthetic=True)
    write_record(hout, "heldout.subgroups", data={"groups": {}}, dep_records=["heldout.intake"], synthetic=True)
    write_record(hout, "heldout.acceptance", data={"all_passed": True},
                 dep_records=["heldout.plan_lock", "heldout.metrics"], synthetic=True)
    return hout
