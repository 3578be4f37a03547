"""The DICOM workflow check: header checks and inference on the workflow files, as evidence.

    python -m model.workflow --out OUT --params PARAMS

Workflow files: DICOMs written here of a few test images of the cohort (`OUT/workflow/dicom/`;
marked synthetic when the cohort is) and negative controls (copies of the first with one header
value outside the intended use), the cohort data folder's `dicom/*.dcm` when it has one,
and every file below `workflow.dicom_dirs`. Writes clinician PNGs to `OUT/workflow/` and the
record `workflow.dicom` last.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from evidence import EvidenceError, Store, layout, write_record
from evidence.params import section
from evidence.provenance import relative_to_run
from evidence.cli import stage_main
from evidence.errors import ToolkitError
from evidence.manifest import read_manifest, read_splits

from . import dicom
from .infer import STATUSES, classify, expand, load_device, summary

RECORD = "workflow.dicom"
DEFAULT_DEMO_COUNT = 4


class WorkflowError(ToolkitError, ValueError):
    pass


def not_classified(status: str) -> dict:
    return {"estimable": False, "reason": f"not classified: {status} at intake"}


def pick_demo_images(out: Path, count: int) -> pd.DataFrame:
    """Up to `count` cohort images with a file, test split first, both labels when possible."""
    manifest = layout.manifest(out)
    if count <= 0 or not manifest.is_file():
        return pd.DataFrame()
    table = read_manifest(manifest, ("path", "patient_id", "pneumonia", "age_years", "sex", "view", "finding_labels"))
    table = table[table["path"] != ""]
    splits = layout.splits(out)   # the test split, not its scores: they exist only after the plan is locked
    if splits.is_file():
        ids = set(read_splits(splits).query("split == 'test'")["image_id"])
        preferred = table[table["image_id"].isin(ids)]
        table = preferred if len(preferred) else table
    table = table.sort_values("image_id")
    by_label = [table[table["pneumonia"] == k] for k in (1, 0)]
    picks = pd.concat([g.head((count + 1) // 2) for g in by_label]).head(count)
    if len(picks) < count:
        picks = pd.concat([picks, table[~table["image_id"].isin(picks["image_id"])].head(count - len(picks))])
    return picks


def write_demo_dicoms(out: Path, picks: pd.DataFrame, synthetic: bool) -> list[Path]:
    """One DX DICOM per picked image, header from the manifest row (age, sex, view)."""
    from .images import load_pixels

    folder = layout.workflow_dicom(out)
    written = []
    for row in picks.itertuples(index=False):
        pixels = np.clip(np.rint(load_pixels(row.path)), 0, 255).astype(np.uint8)
        age = getattr(row, "age_years", None)
        view = getattr(row, "view", None)
        sex = getattr(row, "sex", None)
        ds = dicom.build_dataset(
            pixels, modality="DX", body_part="CHEST",
            view=view if isinstance(view, str) and view else None,
            age=dicom.age_string(float(age)) if age is not None and pd.notna(age) else None,
            sex=sex if isinstance(sex, str) and sex else None,
            patient_id=str(row.patient_id), study_description=str(getattr(row, "finding_labels", "") or ""),
            comments="SYNTHETIC demonstration image" if synthetic else f"from cohort image {row.image_id}")
        written.append(dicom.save(ds, folder / f"{Path(str(row.image_id)).stem}.dcm"))
    return written


#: Out-of-scope copies of the first demo image: (name, header change, check expected to reject it).
CONTROLS = (
    ("control_modality_ct", {"Modality": "CT"}, "Modality"),
    ("control_body_part_skull", {"BodyPartExamined": "SKULL"}, "BodyPartExamined"),
    ("control_view_lateral", {"ViewPosition": "LL"}, "view"),
    ("control_age_child", {"PatientAge": "010Y"}, "PatientAge"),
)


def write_controls(out: Path, source: Path) -> list[tuple[Path, str]]:
    """Negative controls: each a copy of `source` with one header value outside the intended use."""
    import copy

    import pydicom

    original = pydicom.dcmread(source)
    written = []
    for name, change, check in CONTROLS:
        ds = copy.deepcopy(original)
        for keyword, value in change.items():
            setattr(ds, keyword, value)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        written.append((dicom.save(ds, layout.workflow_dicom(out) / f"{name}.dcm"), check))
    return written


def workflow_files(out: Path, params: dict, store: Store) -> list[tuple[Path, str]]:
    """(file, origin) for every workflow file; origin is demo, control, data_dir or dicom_dirs."""
    synthetic = bool(store.get("cohort.manifest")["synthetic"])
    count = int(params.get("demo_dicom_count", DEFAULT_DEMO_COUNT))
    files = [(p, "demo") for p in write_demo_dicoms(out, pick_demo_images(out, count), synthetic)]
    if files and params.get("header_controls", True):
        files += [(p, "control") for p, _ in write_controls(out, files[0][0])]
    try:
        data_dir = store.value("cohort.manifest", "source.data_dir")
    except EvidenceError:
        data_dir = None
    if data_dir and (Path(data_dir) / "dicom").is_dir():
        files += [(p, "data_dir") for p in sorted((Path(data_dir) / "dicom").glob("*.dcm"))]
    for folder in params.get("dicom_dirs") or []:
        if not Path(folder).exists():
            raise WorkflowError(f"params workflow.dicom_dirs: {folder} does not exist (fix the path or remove it)")
        files += [(p, "dicom_dirs") for p in expand([folder])]
    return files


ORIGINS = ("demo", "control", "data_dir", "dicom_dirs")


def controls_summary(entries: list[dict]) -> dict:
    """Whether every negative control was rejected by the check it targets."""
    expected = {f"{name}.dcm": check for name, _, check in CONTROLS}
    rows = []
    for e in entries:
        if e["origin"] != "control":
            continue
        check = expected[Path(e["file"]).name]
        ok = e["status"] == dicom.REJECTED and any(r.startswith(check) for r in e["reasons"])
        rows.append({"file": e["file"], "targets": check, "rejected_as_expected": ok})
    return {"n": len(rows), "all_rejected_as_expected": all(r["rejected_as_expected"] for r in rows),
            "files": rows}


def run(out: str | Path, params: dict) -> dict:
    out = Path(out)
    rules = dicom.rules_from(params)
    device = load_device(out, rules=rules)
    store = Store(out)
    files = workflow_files(out, params, store)
    if not files:
        raise WorkflowError("no workflow files: no cohort images, no <data_dir>/dicom and no "
                            "workflow.dicom_dirs (set params workflow.dicom_dirs or demo_dicom_count)")
    origins = dict(files)
    previous = layout.record(out, RECORD)  # a rerun replaces the clinician images listed before (names hash paths)
    for entry in json.loads(previous.read_text(encoding="utf-8")).get("outs", []) if previous.is_file() else []:
        if Path(entry["path"]).parts[:1] == (layout.workflow("").name,) and ".." not in Path(entry["path"]).parts:
            (out / entry["path"]).unlink(missing_ok=True)
    rows = list(classify([f for f, _ in files], device, image_dir=layout.workflow(out)))
    synthetic = bool(store.get("cohort.manifest")["synthetic"])
    entries, outs = [], []
    for r in rows:
        origin = origins[Path(r["file"])]
        accepted = r["probability"] is not None
        entries.append({
            "file": relative_to_run(r["file"], out), "origin": origin,
            "synthetic": synthetic and origin in ("demo", "control"),
            "status": r["status"], "accepted": r["status"] == dicom.ACCEPTED,
            "reason": "; ".join(r["reasons"]) or "all header checks passed",
            "reasons": r["reasons"], "warnings": r["warnings"],
            "study_description": r["study_description"] or "not given",
            "modality": r["modality"], "body_part": r["body_part"], "view": r["view"],
            "view_source": r["view_source"], "age": r["age"], "sex": r["sex"],
            "probability": r["probability"] if accepted else not_classified(r["status"]),
            "prediction": r["prediction"] if accepted else not_classified(r["status"]),
            "clinician_image": relative_to_run(r["clinician_image"], out) if r["clinician_image"] else None,
        })
        if r["clinician_image"]:
            outs.append(r["clinician_image"])
    tally = summary(rows)
    counts = {s: tally[s] for s in STATUSES}
    data = {
        "files": entries,
        "n_files": len(entries),
        "counts": counts,
        **counts,
        "flagged": tally["flagged"],
        "checks": {k: rules[k] for k in dicom.DEFAULT_RULES},
        "threshold": device.threshold,
        "model_sha256": device.model_sha256,
        "origins": {o: sum(e["origin"] == o for e in entries) for o in ORIGINS},
        "controls": controls_summary(entries),
    }
    return write_record(out, RECORD, data=data, params={**params, **rules},
                        deps=[f for f, _ in files], outs=outs,
                        dep_records=["training.run", "validation.threshold", "cohort.manifest"])


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m model.workflow", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "workflow")),
        summary=lambda record, a: (f"workflow.dicom: {record['data']['n_files']} files: "
                                   "{accepted} accepted, {rejected} rejected, {error} error".format(
                                       **record["data"]["counts"])))


if __name__ == "__main__":
    sys.exit(main())
