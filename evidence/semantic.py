"""Semantic audit: each record's own summaries recomputed from the files it describes, and its
params compared with the run's params stamp.

Hashes prove that files and records agree byte for byte; they do not prove that a record's numbers
describe its files (a forger can rewrite a file, recompute the hashes and keep the old summaries,
or the reverse). This module recomputes, with plain csv (no stage code):
- `cohort.manifest` `counts` from `cohort/manifest.csv`;
- `split.patients` `splits.<s>`, `rows_split` and `leakage` from `cohort/splits.csv` (with the
  manifest's labels); `eda.dataset` `counts` and `eda.quality` `n_images` from the manifest;
- every record that lists `predictions/<split>.csv` among its outs: `<split>.n_images`,
  `.n_patients`, `.n_positive`, `.score_mean` from that file;
- `training.run` `model_sha256` / `preprocessing_sha256` against its outs, and every record that
  states a `model_sha256` (predictions, workflow) against `training.run`;
- `workflow.dicom` and `heldout.intake` tallies (`n_files`, `counts`, `flagged`, `origins`) from
  their `files` lists, and `workflow.dicom` `threshold` against `validation.threshold`;
- `heldout.intake` `rejection`: the files not analyzed (rejected, error), by class and by reason
  category (each file once per category it lists), and each rate's estimate, from its `files` list;
- each record's `params` against `OUT/params/<section>.json` (the section from the stage table),
  key by key for the keys both hold (a record may store a subset, or add resolved defaults).
One failure line per mismatch: record, field, expected (recomputed), found (the record).
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from . import layout
from .errors import EvidenceError
from .manifest import ManifestError, read_manifest, read_splits
from .stages import stage_of

#: the score column is written with 8 significant digits: a mean over it differs from the mean of
#: the unrounded scores by at most 5e-9 relative to the largest score (<= 1); counts are exact.
SCORE_MEAN_TOLERANCE = 1e-7


def _rows(path: Path) -> list[dict[str, str]] | None:
    if not path.is_file():
        return None  # a missing file is reported by the hash audit
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _get(data: Any, field: str) -> Any:
    node = data
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(field)
        node = node[part]
    return node


def _compare(rid: str, data: dict, field: str, expected: Any, tol: float = 0.0, prefix: str = "data") -> list[str]:
    try:
        found = _get(data, field)
    except KeyError:
        return [f"record {rid}: field {prefix}.{field}: expected {expected!r} found missing field"]
    if isinstance(expected, float) or tol:
        ok = (isinstance(found, (int, float)) and not isinstance(found, bool)
              and math.isclose(found, expected, rel_tol=0, abs_tol=max(tol, 1e-12)))
    else:
        ok = found == expected and type(found) is type(expected)
    return [] if ok else [f"record {rid}: field {prefix}.{field}: expected {expected!r} found {found!r}"]


def _positive(row: dict[str, str], column: str) -> bool:
    return float(row[column] or 0) == 1


def _table(read, path: Path) -> list[dict] | str | None:
    """The rows of a manifest or split file read with its contract reader (`evidence.manifest`),
    None when the file is missing (the hash audit reports it), or the reader's error."""
    if not path.is_file():
        return None
    try:
        return read(path).to_dict("records")
    except ManifestError as e:
        return str(e)


def check_manifest(records: dict, run_dir: Path) -> list[str]:
    rows = _table(lambda p: read_manifest(p, ["patient_id", "pneumonia", "path"]), layout.manifest(run_dir))
    if rows is None:
        return []
    if isinstance(rows, str):
        return [f"record cohort.manifest: field outs[{layout.manifest('').as_posix()}]: {rows}"]
    patients = {r["patient_id"] for r in rows}
    pos_patients = {r["patient_id"] for r in rows if _positive(r, "pneumonia")}
    counts = {"images": len(rows), "patients": len(patients),
              "pneumonia_images": sum(_positive(r, "pneumonia") for r in rows),
              "pneumonia_patients": len(pos_patients),
              "images_with_pixels": sum(bool(r["path"]) for r in rows)}
    failures = []
    if "cohort.manifest" in records:
        data = records["cohort.manifest"]["data"]
        failures += [f for k, v in counts.items() for f in _compare("cohort.manifest", data, f"counts.{k}", v)]
    if "eda.dataset" in records:
        data = records["eda.dataset"]["data"]
        failures += [f for k in ("images", "patients", "images_with_pixels")
                     for f in _compare("eda.dataset", data, f"counts.{k}", counts[k])]
    if "eda.quality" in records:
        failures += _compare("eda.quality", records["eda.quality"]["data"], "n_images", counts["images"])
    if "split.patients" in records:
        failures += _check_splits(records["split.patients"]["data"], run_dir, rows)
    return failures


def _check_splits(data: dict, run_dir: Path, manifest: list[dict]) -> list[str]:
    rows = _table(read_splits, layout.splits(run_dir))
    if rows is None:
        return []
    if isinstance(rows, str):
        return [f"record split.patients: field outs[{layout.splits('').as_posix()}]: {rows}"]
    label = {r["image_id"]: _positive(r, "pneumonia") for r in manifest}
    rid, failures = "split.patients", []
    failures += _compare(rid, data, "rows_split", len(rows))
    by_patient: dict[str, set[str]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add(r["split"])
    leaked = sum(len(s) > 1 for s in by_patient.values())
    failures += _compare(rid, data, "leakage.patients_in_more_than_one_split", leaked)
    for split in sorted({r["split"] for r in rows} | set(data.get("splits", {}))):
        mine = [r for r in rows if r["split"] == split]
        pos = sum(label.get(r["image_id"], False) for r in mine)
        failures += _compare(rid, data, f"splits.{split}.images", len(mine))
        failures += _compare(rid, data, f"splits.{split}.patients", len({r["patient_id"] for r in mine}))
        failures += _compare(rid, data, f"splits.{split}.pneumonia_images", pos)
        if mine:
            failures += _compare(rid, data, f"splits.{split}.prevalence", pos / len(mine))
    return failures


def check_predictions(records: dict, run_dir: Path) -> list[str]:
    """Every record that lists a predictions file: the summary of that split from the file."""
    failures = []
    for split in layout.PREDICTED_SPLITS:
        rel = layout.predictions("", split).as_posix()
        path = layout.predictions(run_dir, split)
        for rid, record in records.items():
            if rel not in {o["path"] for o in record["outs"]} or split not in record["data"]:
                continue
            rows = _rows(path)
            if rows is None:
                continue
            try:
                scores = [float(r["score"]) for r in rows]
                summary = {"n_images": len(rows), "n_patients": len({r["patient_id"] for r in rows}),
                           "n_positive": sum(_positive(r, "label") for r in rows)}
            except (KeyError, ValueError) as e:
                failures.append(f"record {rid}: field outs[{rel}]: expected image_id, patient_id, label, score "
                                f"columns found an unreadable file ({e})")
                continue
            data = record["data"]
            failures += [f for k, v in summary.items() for f in _compare(rid, data, f"{split}.{k}", v)]
            if scores:
                failures += _compare(rid, data, f"{split}.score_mean", sum(scores) / len(scores), SCORE_MEAN_TOLERANCE)
    return failures


def check_model_hashes(records: dict) -> list[str]:
    train = records.get("training.run")
    if train is None:
        return []
    outs = {Path(o["path"]).name: o["sha256"] for o in train["outs"]}
    expected = {"model_sha256": outs.get(layout.model_file("").name),
                "preprocessing_sha256": outs.get(layout.preprocessing_spec("").name)}
    failures = []
    for rid, record in records.items():
        for field, sha in expected.items():
            if sha is not None and (rid == "training.run" or field in record["data"]):
                failures += _compare(rid, record["data"], field, sha)
    return failures


def check_tallies(records: dict) -> list[str]:
    failures = []
    for rid in ("workflow.dicom", "heldout.intake"):
        if rid not in records or not isinstance(records[rid]["data"].get("files"), list):
            continue
        data = records[rid]["data"]
        files = data["files"]
        statuses = Counter(f.get("status") for f in files)
        if "n_files" in data:
            failures += _compare(rid, data, "n_files", len(files))
        if rid == "heldout.intake":
            failures += _compare(rid, data, "n_labelled_files", len(files))
        for status in data.get("counts", {}):
            failures += _compare(rid, data, f"counts.{status}", statuses[status])
        if "flagged" in data:
            flagged = sum(f.get("status") == "accepted" and f.get("prediction") is True for f in files)
            failures += _compare(rid, data, "flagged", flagged)
        origins = Counter(f.get("origin") for f in files)
        for origin in data.get("origins", {}):
            failures += _compare(rid, data, f"origins.{origin}", origins[origin])
    if "workflow.dicom" in records and "validation.threshold" in records \
            and "threshold" in records["workflow.dicom"]["data"]:
        threshold = records["validation.threshold"]["data"].get("threshold")
        failures += _compare("workflow.dicom", records["workflow.dicom"]["data"], "threshold", threshold)
    return failures


def check_rejection(records: dict) -> list[str]:
    """`heldout.intake` `rejection` recomputed from the record's `files` list."""
    rid = "heldout.intake"
    record = records.get(rid)
    if record is None or not isinstance(record["data"].get("files"), list) \
            or not isinstance(record["data"].get("rejection"), dict):
        return []
    data, files = record["data"], record["data"]["files"]
    failures = []
    groups = {"rejection": files,
              "rejection.by_label.positives": [f for f in files if f.get("label") == 1],
              "rejection.by_label.negatives": [f for f in files if f.get("label") == 0]}
    for prefix, mine in groups.items():
        k = {"rejected": sum(f.get("status") == "rejected" for f in mine),
             "error": sum(f.get("status") == "error" for f in mine)}
        k["not_analyzed"] = k["rejected"] + k["error"]
        failures += _compare(rid, data, f"{prefix}.n", len(mine))
        for status, v in k.items():
            failures += _compare(rid, data, f"{prefix}.{status}", v)
            if mine:
                failures += _compare(rid, data, f"{prefix}.rate.{status}.estimate", v / len(mine), 1e-12)
    reasons = Counter(c for f in files for c in set(f.get("reason_categories") or []))
    stated = data["rejection"].get("by_reason") or {}
    for key in sorted(set(reasons) | set(stated)):
        failures += _compare(rid, data, f"rejection.by_reason.{key}.n_files", reasons[key])
        if files:
            failures += _compare(rid, data, f"rejection.by_reason.{key}.rate.estimate", reasons[key] / len(files), 1e-12)
    no_reason = [f.get("file") for f in files if f.get("status") != "accepted" and not f.get("reason_categories")]
    failures += [f"record {rid}: field data.files[{name}].reason_categories: expected at least one category "
                 "for a file not analyzed found none" for name in no_reason]
    return failures


def check_params(records: dict, out: Path) -> list[str]:
    """Each record's params, key by key, against the stamp of its stage's section. A string the
    record stores as a file's name (a weights file) matches the stamp's path to that file."""
    failures = []
    stamps: dict[str, dict | None] = {}
    for rid, record in records.items():
        try:
            section = stage_of(rid).params
        except EvidenceError:
            continue  # an unknown record: the completeness check reports it
        if section is None:
            continue
        if section not in stamps:
            path = layout.params_stamp(out, section)
            stamps[section] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        stamp = stamps[section]
        if stamp is None:
            continue
        for key, found in record["params"].items():
            if key not in stamp:
                continue
            expected = stamp[key]
            same = _canon(found) == _canon(expected) or (
                isinstance(found, str) and isinstance(expected, str) and Path(expected).name == found)
            if not same:
                failures.append(f"record {rid}: field params.{key}: expected {expected!r} "
                                f"(params/{section}.json) found {found!r}")
    return failures


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def check(run_dir: str | Path, records: dict[str, dict], out: str | Path | None = None) -> list[str]:
    """Failure lines for one folder's readable records (id -> record); `out` is the run folder
    whose params stamps apply (a held-out folder uses its run's)."""
    run_dir = Path(run_dir)
    out = run_dir if out is None else Path(out)
    return (check_manifest(records, run_dir) + check_predictions(records, run_dir) + check_model_hashes(records)
            + check_tallies(records) + check_rejection(records) + check_params(records, out))
