"""Held-out revalidation: the locked model, threshold and plan rerun on a new clinical DICOM set.

    python -m validation.heldout --out OUT --heldout DIR --params PARAMS
    python -m validation.heldout ... --shard K/N   (each K = 1..N), then ... --merge N   (validation/shards.py)

DIR holds DICOM files at any depth and `labels.csv` (`file` relative to DIR, `label` 0/1,
optional `patient_id`, optional reader columns `reader*` with 0/1 reads). Order of work:

1. lock the plan: the `validation.plan_lock` record of OUT (the same lock the test split was scored
   under) and a re-hash of each plan file it lists; refuse when they differ; write
   `heldout.plan_lock`, this run's record of that check, BEFORE the held-out set is read;
2. load the locked device (model and preprocessing spec sha256 checked against `training.run`,
   threshold from `validation.threshold`, header checks from `model.infer.header_rules`: the run's
   `workflow.dicom` record when present, else the `workflow` section of PARAMS);
3. read labels.csv, run the device's header checks and inference on every file;
4. write `predictions.csv` (one row per labelled file: `file, patient_id, label, status, reasons,
   score, flagged`; a file that was not analyzed has an empty score and flagged 0), then
   `heldout.intake` (which lists it among its outs), `heldout.metrics` (which depends on it),
   `heldout.subgroups`, `heldout.acceptance` (records last), then render `heldout_report`.

Inputs and failures are results, not exclusions (`heldout.intake` `rejection`): the rate of labelled
files rejected by the header checks, of files that failed (status error), and of both, each with an
exact Clopper-Pearson interval over the labelled files, overall, by class and by reason category (a
file with several reasons counts once in each of its categories, so the categories may sum to more
than the files). Performance is reported twice (`heldout.metrics`): per protocol (the accepted files,
as the plan's criteria are judged) and `all_enrolled`, every labelled file under the rule fixed here
(`ALL_ENROLLED_RULE`): a file that was not analyzed raised no flag, so a rejected or failed positive is
a miss (false negative) and a rejected or failed negative counts as a correct not-flagged result
(true negative), as a study without a notification stays in the standard reading queue.

Everything is written into a hidden folder in OUT/heldout and renamed at the end to
`OUT/heldout/<DIR name>-<first 12 hex of the set's content hash>/` (`folder_name`): a failed run
leaves no record and no folder, and a set already run (same files, same labels.csv) exits 2
without touching its folder.

Statistics come from `validation.evaluate`/`validation.subgroups` (same methods as validation).
Parameters: section `heldout` (ci_level, bootstrap_resamples, bootstrap_seed, bootstrap_method,
prevalences, min_subgroup_positives, min_subgroup_negatives); while params.yaml has no such section,
section `validate`.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from evidence import EvidenceError, Store, atomic, canonical_json, console, layout, record_path, sha256_file, write_record
from evidence.canonical import sha256_bytes
from evidence.prespecified import LOCK, plan_file_failures
from evidence.params import load_all
from evidence.provenance import resolve_run_path
from evidence.cli import stage_main
from evidence.errors import ToolkitError

from .design import ALL_ENROLLED_RULE, REJECTION_CI_METHOD

REPORT = "heldout_report"


#: Reason categories of a file not analyzed: (key, label). A reason's category is the group its
#: code has in `model.dicom.REASONS` (reports group by code, not by message text). A code in no
#: category here is `other` (status rejected) or `unreadable` (status error: not readable as DICOM).
REASON_CATEGORIES = (
    ("modality", "modality missing or outside the intended use"),
    ("body_part", "body part missing or outside the intended use"),
    ("view", "view missing or outside the intended use"),
    ("age", "patient age missing, unreadable or outside the intended use"),
    ("image_format", "image format not supported (pixel data, frames, photometric interpretation, size, "
                     "aspect ratio, bit depth, pixel or byte budget, or transfer syntax)"),
    ("blank_image", "blank or near-constant image"),
    ("header_unreadable", "header could not be checked"),
    ("decode_error", "pixel data could not be decoded"),
    ("model_error", "the model returned no probability"),
)
OTHER_REASONS = {"rejected": ("other", "another reason"),
                 "error": ("unreadable", "file could not be read as DICOM")}


class HeldoutError(ToolkitError, ValueError):
    """Bad input to the held-out run; the message names the file/row/parameter and the fix."""


# ----------------------------------------------------------------------------- parameters

def heldout_params(params_file: str | Path) -> tuple[dict, str]:
    """(resolved statistics parameters, section name used)."""
    from .design import check_statistics

    sections = load_all(params_file)
    name = "heldout" if "heldout" in sections else "validate"
    return check_statistics(sections.get(name) or {}), name


# ----------------------------------------------------------------------------- plan lock

def lock_plan(out: Path, hout: Path) -> tuple[dict, list[Path]]:
    """Re-hash the plan files that `validation.plan_lock` lists and write `heldout.plan_lock`."""
    try:
        lock = Store(out).get(LOCK)
    except EvidenceError as e:
        raise HeldoutError(f"{e} (the validation plan must be rendered and locked first: make plan)") from None
    failures = plan_file_failures(out, lock)
    if failures:
        raise HeldoutError(f"{failures[0]}: refusing to run the held-out set")
    criteria = lock["data"].get("acceptance_criteria")
    if not isinstance(criteria, list) or not criteria:
        raise HeldoutError(f"record {LOCK}: data.acceptance_criteria is empty; the plan must "
                           "pre-specify acceptance criteria (params validate.acceptance, then make plan)")
    paths = [resolve_run_path(f["path"], out) for f in lock["data"]["plan_files"]]
    checked = [{k: f[k] for k in ("path", "sha256", "size")} for f in lock["data"]["plan_files"]]
    lock_json = record_path(out, LOCK)
    data = {"plan_record": LOCK, "plan_record_sha256": lock["sha256"], "plan_files": checked,
            "plan_locked_utc": lock["created_utc"], "plan_locked_by": lock["data"]["locked_by"],
            "acceptance_criteria": criteria, "run_folder": str(out.resolve()),
            "statement": "the plan files were re-hashed and matched the locked plan before the held-out set was read"}
    record = write_record(hout, "heldout.plan_lock", data=data, deps=[*paths, lock_json], synthetic=bool(lock["synthetic"]))
    return record, [*paths, lock_json]


# ----------------------------------------------------------------------------- labels

def heldout_files(folder: Path) -> list[Path]:
    """The files the held-out run reads: every file `model.infer.expand` finds, except labels.csv."""
    from model.infer import expand

    return expand([folder], skip=[folder / "labels.csv"])


def read_labels(folder: Path, files: list[Path], *, allow_outside: bool = False
                ) -> tuple[pd.DataFrame, list[dict], set[Path], list[Path]]:
    """(usable rows: file, path, label, patient_id?, readers...; problems with their rows; every
    resolved path labels.csv names; the files outside `folder` that rows name, when `allow_outside`).

    A row naming anything but one of `files` (or, allowed, an existing file outside the folder) is
    an unknown file. Paths are resolved (`evidence.unique`): a name that resolves outside the folder
    (`../`, absolute, a symlink pointing out) stops the run unless `allow_outside`. One image named
    by several rows (the same name, `./x` and `x`, a symlink, a copy with the same bytes) is kept once,
    under its first row, and the others are reported as duplicates; with different labels it stops
    the run, naming both rows. When no row is usable the run stops with the reasons."""
    from evidence import unique

    csv = folder / "labels.csv"
    if not csv.is_file():
        raise HeldoutError(f"{csv}: not found; add labels.csv with columns file,label (file relative to {folder})")
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise HeldoutError(f"{csv}: not a readable CSV ({str(e).splitlines()[0]}); fix the file") from None
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in ("file", "label") if c not in table.columns]
    if missing:
        raise HeldoutError(f"{csv}: missing column(s) {', '.join(missing)}; columns must include file,label")
    problems = []
    table["row"] = np.arange(2, len(table) + 2)  # line number in the file (header is line 1)
    table["file"] = table["file"].str.strip()
    table["label"] = table["label"].str.strip()
    bad = ~table["label"].isin(["0", "1"])
    for row in table[bad].itertuples():
        problems.append({"row": int(row.row), "file": row.file, "problem": "bad_label",
                         "detail": f"label {row.label[:40]!r} is not 0 or 1; the row is excluded"})
    try:
        table["path"] = [unique.resolve_in(folder, f, allow_outside=allow_outside, where=f"{csv}: line {r}")
                         if f else None for f, r in zip(table["file"], table["row"])]
    except unique.OutsideFolderError as e:
        raise HeldoutError(str(e)) from None
    known = {unique.real(f) for f in files}
    outside = sorted({p for p in table["path"] if p is not None and p not in known and p.is_file()
                      and not unique.is_inside(p, folder)}) if allow_outside else []
    known.update(outside)
    unknown = np.array([p not in known for p in table["path"]])
    for row in table[unknown & ~bad].itertuples():
        problems.append({"row": int(row.row), "file": row.file, "problem": "unknown_file",
                         "detail": "not a file the held-out run reads (none such in the folder, a hidden "
                                   "path, or labels.csv); the row is excluded"})
    candidates = table[~bad & ~unknown]
    kept, duplicates, conflicts = unique.group(
        unique.item(int(r.row), r.file, r.path, int(r.label)) for r in candidates.itertuples())
    if conflicts:
        raise HeldoutError(unique.conflict_message(conflicts[0], str(csv), "line"))
    for d in duplicates:
        problems.append({"row": int(d.item.key), "file": d.item.name, "problem": "duplicate",
                         "detail": d.detail("line")})
    problems.sort(key=lambda q: q["row"])
    usable = candidates[candidates["row"].isin([it.key for it in kept])].copy()
    usable["label"] = usable["label"].astype(int)
    if usable.empty:
        reasons = "; ".join(f"line {q['row']} {q['file'] or '(empty)'!r}: {q['detail']}" for q in problems[:5])
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise HeldoutError(f"{csv}: no usable row ({len(table)} rows{': ' + reasons + more if reasons else ''}); "
                           "each row needs file (a DICOM file of the folder, relative to it) and label 0 or 1")
    return usable, problems, {p for p in table["path"] if p is not None}, outside


def reader_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.lower().startswith("reader")]


# ----------------------------------------------------------------------------- intake

def intake(folder: Path, files: list[Path], usable: pd.DataFrame, named: set[Path], device,
           readers: list[str], results: dict | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Header checks + inference on `files` (`heldout_files`), or their `results` read from shard
    files (`validation.shards`); (labelled results with the `readers` columns, files that labels.csv
    does not name)."""
    from .shards import classify_set

    results = classify_set(_each_once(files), device) if results is None else results
    unlabelled = [{"file": _relative(Path(r["file"]), folder), "problem": "no_label",
                   "detail": "file present in the folder but not in labels.csv; excluded", "status": r["status"]}
                  for p, r in results.items() if p not in named]
    rows = []
    for row in usable.to_dict("records"):
        r = results[row["path"]]
        rows.append({"file": row["file"], "label": int(row["label"]), "status": r["status"], "reasons": r["reasons"],
                     "codes": r.get("codes", []),
                     "warnings": r["warnings"], "score": r["probability"], "sex": r["sex"], "age_years": r["age"],
                     "view": r["view"], "modality": r["modality"], "body_part": r["body_part"],
                     "manufacturer": r.get("manufacturer"), "site": r.get("institution"),
                     "patient_id": _patient_id(row, r), "row": int(row["row"]), **{c: row[c] for c in readers}})
    return pd.DataFrame(rows), unlabelled


def _each_once(files: list[Path]) -> list[Path]:
    """`files` without a second path to one resolved file (a symlink inside the set)."""
    seen, once = set(), []
    for f in files:
        if (key := f.resolve()) not in seen:
            seen.add(key)
            once.append(f)
    return once


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def _plain(value):
    """A header value for a record: None for missing (pandas NaN included), floats as float."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    return float(value) if isinstance(value, (float, np.floating)) else value


def _patient_id(row: dict, result) -> str:
    """labels.csv `patient_id`, else the DICOM PatientID read by the header check, else the file name."""
    value = row.get("patient_id")
    if value:
        return str(value)
    pid = result.get("patient_id")
    return str(pid) if pid else f"file:{row['file']}"


# ----------------------------------------------------------------------------- inputs and failures

def reason_categories(status: str, codes) -> list[str]:
    """The categories (keys of `REASON_CATEGORIES`, `other`, `unreadable`) of a file's reason codes
    (`model.dicom.REASONS`), each once, in table order; none for an accepted file."""
    from model.dicom import REASONS

    if status == "accepted":
        return []
    keys = {k for k, _ in REASON_CATEGORIES}
    fallback = OTHER_REASONS.get(status, OTHER_REASONS["rejected"])[0]
    found = set()
    for code in codes or []:
        group = REASONS.get(str(code), (None,))[0]
        found.add(group if group in keys else fallback)
    if not found:
        found.add(fallback)
    order = [k for k, _ in REASON_CATEGORIES] + [k for k, _ in OTHER_REASONS.values()]
    return [k for k in order if k in found]


def _category_labels() -> dict[str, str]:
    return {**dict(REASON_CATEGORIES), **dict(OTHER_REASONS.values())}


def rejection_data(files: list[dict], level: float) -> dict:
    """Input-rejection and failure rates over the labelled files (`files`: dicts with `label`,
    `status`, `reason_categories`), exact Clopper-Pearson intervals: overall, by class, by reason."""
    from . import stats

    n = len(files)

    def rate(k: int, d: int) -> dict:
        return stats.proportion_ci(k, d, method=REJECTION_CI_METHOD, level=level)

    def tally(rows: list[dict]) -> dict:
        rejected = sum(f["status"] == "rejected" for f in rows)
        error = sum(f["status"] == "error" for f in rows)
        return {"n": len(rows), "rejected": rejected, "error": error, "not_analyzed": rejected + error,
                "rate": {"rejected": rate(rejected, len(rows)), "error": rate(error, len(rows)),
                         "not_analyzed": rate(rejected + error, len(rows))}}

    labels = _category_labels()
    counts: dict[str, int] = {}
    for f in files:
        for key in f["reason_categories"]:
            counts[key] = counts.get(key, 0) + 1
    by_reason = {key: {"label": labels[key], "n_files": k, "rate": rate(k, n)}
                 for key in labels if (k := counts.get(key, 0))}
    return {
        "denominator": "labeled files (the enrolled cases: files of the set with a usable row in labels.csv)",
        "method": REJECTION_CI_METHOD, "ci_level": level,
        **tally(files),
        "by_label": {"positives": tally([f for f in files if f["label"] == 1]),
                     "negatives": tally([f for f in files if f["label"] == 0])},
        "by_reason": by_reason,
        "reason_counting": "a file with several reasons counts once in each of its reason categories, and once "
                           "only when several of its reasons share a category, so the categories may sum to more "
                           "than the files not analyzed; each rate is over all labeled files",
    }


def all_enrolled_data(df: pd.DataFrame, threshold: float, level: float) -> dict:
    """Sensitivity and specificity over every labelled file under `ALL_ENROLLED_RULE`, beside the
    per-protocol (accepted files only) figures with the same intervals (Wilson and exact)."""
    from . import stats

    n = len(df)
    y = df["label"].to_numpy(dtype=int) if n else np.zeros(0, dtype=int)
    analyzed = (df["status"] == "accepted").to_numpy() if n else np.zeros(0, dtype=bool)
    score = pd.to_numeric(df["score"], errors="coerce").to_numpy(dtype=float) if n else np.zeros(0)
    flagged = analyzed & (np.nan_to_num(score, nan=-np.inf) >= threshold)

    def confusion(mask: np.ndarray) -> dict:   # the decision itself as the score: 1 flagged, 0 not
        return stats.confusion(y[mask], flagged[mask].astype(float), 1.0)

    def intervals(conf: dict) -> dict:
        return {metric: {m: stats.proportion_ci(*stats.metric_fraction(metric, **conf), method=m, level=level)
                         for m in ("wilson", "clopper-pearson")} for metric in ("sensitivity", "specificity")}

    everyone, accepted = confusion(np.ones(n, dtype=bool)), confusion(analyzed)
    return {
        "rule": ALL_ENROLLED_RULE, "threshold": threshold,
        "counts": {"n": n, "positives": int(y.sum()), "negatives": int(n - y.sum()),
                   "positives_not_analyzed": int(np.sum(~analyzed & (y == 1))),
                   "negatives_not_analyzed": int(np.sum(~analyzed & (y == 0)))},
        "confusion": everyone,
        "metrics": intervals(everyone),
        "per_protocol": {"counts": {"n": int(analyzed.sum()), "positives": int(np.sum(analyzed & (y == 1))),
                                    "negatives": int(np.sum(analyzed & (y == 0)))},
                         "confusion": accepted, "metrics": intervals(accepted)},
    }


def write_predictions(hout: Path, df: pd.DataFrame, threshold: float) -> Path:
    """`predictions.csv` of the held-out folder, atomically: one row per labelled file, its status and
    reasons; the score (full precision) and flagged (score >= threshold) of an analyzed file, an empty
    score and flagged 0 for one that was not analyzed."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(layout.HELDOUT_PREDICTION_COLUMNS)
    for r in df.to_dict("records"):
        analyzed = r["status"] == "accepted" and r["score"] is not None and np.isfinite(float(r["score"]))
        score = float(r["score"]) if analyzed else None
        writer.writerow([r["file"], r["patient_id"], int(r["label"]), r["status"], "; ".join(r["reasons"]),
                         repr(score) if analyzed else "", int(analyzed and score >= threshold)])
    return atomic.write_text(hout / layout.HELDOUT_PREDICTIONS, buffer.getvalue())


# ----------------------------------------------------------------------------- metrics

def reader_metrics(df: pd.DataFrame, readers: list[str], level: float) -> dict:
    """Each reader's sensitivity and specificity (Wilson) on the same accepted images."""
    from . import stats

    out = {}
    y = df["label"].to_numpy(dtype=int)
    for c in readers:
        calls = df[c].astype(str).str.strip()
        ok = calls.isin(["0", "1"]).to_numpy()
        conf = stats.confusion(y[ok], calls[ok].astype(int).to_numpy(), 1)  # a read of 1 is positive
        out[c] = {"n_reads": int(ok.sum()), "n_missing_or_invalid": int((~ok).sum()), "confusion": conf,
                  "sensitivity": stats.proportion_ci(conf["tp"], conf["tp"] + conf["fn"], level=level),
                  "specificity": stats.proportion_ci(conf["tn"], conf["tn"] + conf["fp"], level=level)}
    return out


def metrics_data(df: pd.DataFrame, threshold: float, p: dict, readers: list[str]) -> dict:
    from . import stats
    from .evaluate import test_metrics

    n_pos = int(df["label"].sum()) if len(df) else 0
    if len(df) == 0 or n_pos in (0, len(df)):
        reason = "no accepted labeled images" if len(df) == 0 else f"one class only ({n_pos} positives of {len(df)})"
        data = {"estimable": False, "reason": reason, "threshold": threshold,
                "counts": {"n": int(len(df)), "positives": n_pos, "negatives": int(len(df) - n_pos)},
                "metrics": {m: stats.not_estimable(reason) for m in stats.ALL_METRICS}}
    else:
        data = {"estimable": True, **test_metrics(df, threshold, p)}
        data["split"] = "heldout"
    data["readers"] = reader_metrics(df, readers, p["ci_level"]) if readers and len(df) else {}
    return data


def subgroup_data(df: pd.DataFrame, threshold: float, p: dict) -> dict:
    from .subgroups import HETEROGENEITY_STATEMENT, heterogeneity, subgroups

    frame = df[["label", "score", "sex", "age_years", "view", "site", "manufacturer"]]  # no finding labels in DICOM
    groups = subgroups(frame, threshold, min_positives=p["min_subgroup_positives"],
                       min_negatives=p["min_subgroup_negatives"], level=p["ci_level"])
    return {"threshold": threshold, "source": "DICOM headers (PatientSex, PatientAge, ViewPosition/PatientPosition, "
                                              "InstitutionName for the site, Manufacturer for the scanner)",
            "heterogeneity": heterogeneity(groups), "heterogeneity_statement": HETEROGENEITY_STATEMENT,
            "min_subgroup_positives": p["min_subgroup_positives"],
            "min_subgroup_negatives": p["min_subgroup_negatives"], "groups": groups}


def roc_figure(df: pd.DataFrame, threshold: float, path: Path, name: str) -> Path:
    """ROC curve of the held-out set with the locked operating point, written atomically."""
    from . import figures, stats

    y, s = df["label"].to_numpy(dtype=int), df["score"].to_numpy(dtype=float)
    point = stats.point_metrics(**stats.confusion(y, s, threshold))
    return figures.roc(y, s, threshold, point, path, title=f"ROC, held-out set {name}")


# ----------------------------------------------------------------------------- run

def content_sha256(folder: Path, outside: list[Path] = ()) -> str:
    """sha256 over the sorted (path relative to `folder`, sha256) of the files the run reads and
    labels.csv; a file outside the folder (allowed by --allow-outside) by its resolved path."""
    labels = folder / "labels.csv"
    files = [*heldout_files(folder), *([labels] if labels.is_file() else [])]
    pairs = [(f.relative_to(folder).as_posix(), sha256_file(f)) for f in files]
    pairs += [(str(f), sha256_file(f)) for f in outside]
    return sha256_bytes(canonical_json(sorted(pairs)))


def folder_name(folder: Path, digest: str | None = None) -> str:
    """The evidence folder's name: the set's folder name and the first 12 hex of its content hash."""
    return f"{folder.resolve().name}-{(digest or content_sha256(folder))[:12]}"


def run(out: str | Path, heldout: str | Path, params_file: str | Path, *, render: bool = True,
        allow_outside: bool = False, classified=None) -> dict:
    """Write the evidence into a hidden folder beside OUT/heldout/<name>-<hash>/ and rename it there at
    the end: a failed run leaves nothing, and an existing folder is never overwritten. `classified`
    (the merge of a sharded run, `validation.shards.shard_results`) supplies the classifications."""
    out, folder = Path(out), Path(heldout)
    if not folder.is_dir():
        raise HeldoutError(f"--heldout {folder}: not a folder (pass the folder with the DICOM files and labels.csv)")
    with atomic.staged_folder(layout.heldout_root(out), folder.resolve().name) as staging:
        records, final = _run(out, folder, staging, params_file, render=render, allow_outside=allow_outside,
                              classified=classified)
        atomic.publish_folder(staging, final, already_run(final))
        return records


def already_run(final: Path) -> HeldoutError:
    """The error for a held-out folder that exists (the set has been run; never overwritten)."""
    return HeldoutError(f"{final}: exists: this held-out set (same files and labels.csv) has been run; its "
                        "evidence is never overwritten (remove that folder to run the set again)")


def _run(out: Path, folder: Path, hout: Path, params_file: str | Path, *, render: bool,
         allow_outside: bool = False, classified=None) -> tuple[dict, Path]:
    p, params_source = heldout_params(params_file)
    lock, plan_deps = lock_plan(out, hout)            # 1. plan locked before the set is read
    files = heldout_files(folder)
    usable, problems, named, outside = read_labels(folder, files, allow_outside=allow_outside)
    files = [*files, *outside]
    digest = content_sha256(folder, outside)
    name = folder_name(folder, digest)
    final = layout.heldout(out, name)
    if final.exists():
        raise already_run(final)

    from model.dicom import ACCEPTED
    from model.infer import STATUSES, DeviceError, load_device, summary  # 2. the locked device, its header checks
    try:
        device = load_device(out, params_file)
    except DeviceError as e:
        raise HeldoutError(str(e)) from None

    readers = reader_columns(usable)
    df, unlabelled = intake(folder, files, usable, named, device, readers,
                            classified(folder, files, digest, device, lock) if classified else None)
    device_deps = [*device.record_files(), *plan_deps]
    synthetic = bool(lock["synthetic"])
    accepted = df[df["status"] == ACCEPTED].copy() if len(df) else df

    files_dep = [folder / "labels.csv", *sorted({Path(r) for r in usable["path"]})]
    files_list = [{"file": r.file, "label": int(r.label), "status": r.status, "reasons": list(r.reasons),
                   "codes": list(r.codes), "reason_categories": reason_categories(r.status, r.codes),
                   "warnings": list(r.warnings), "modality": _plain(r.modality), "body_part": _plain(r.body_part),
                   "view": _plain(r.view), "age": _plain(r.age_years), "sex": _plain(r.sex)}
                  for r in df.itertuples()] if len(df) else []
    tally = summary(df.to_dict("records"))
    intake_data = {
        "folder": str(folder.resolve()), "name": name, "content_sha256": digest,
        "n_label_rows": int(len(usable) + len({(q["row"]) for q in problems})),
        "n_labelled_files": int(len(df)),
        "counts": {s: tally[s] for s in STATUSES},
        "positives_rejected": int(((df["status"] != ACCEPTED) & (df["label"] == 1)).sum()) if len(df) else 0,
        "label_problems": problems, "unlabelled_files": unlabelled,
        "files": files_list,
        "rejection": rejection_data(files_list, p["ci_level"]),
        "header_checks": {**device.rules, "source": device.rules_source},
        "not_analyzed": [{"file": r.file, "status": r.status, "reasons": list(r.reasons)}
                         for r in df.itertuples() if r.status != ACCEPTED] if len(df) else [],
        "patient_id_source": "the patient identifier column of labels.csv" if "patient_id" in usable.columns else
                             "DICOM PatientID (file name when absent)",
        "threshold": device.threshold, "model_sha256": device.model_sha256,
    }
    if len(accepted):
        accepted["score"] = accepted["score"].astype(float)
    metrics = metrics_data(accepted, device.threshold, p, readers)
    metrics["all_enrolled"] = all_enrolled_data(df, device.threshold, p["ci_level"])
    subgroups = subgroup_data(accepted, device.threshold, p) if len(accepted) else {
        "threshold": device.threshold, "groups": {}, "estimable": False, "reason": "no accepted labeled images"}

    from .acceptance import evaluate
    verdict = evaluate(lock["data"]["acceptance_criteria"], metrics["metrics"])
    verdict["plan_record_sha256"] = lock["data"]["plan_record_sha256"]

    params = {**p, "params_section": params_source}   # 4. records, last
    common = dict(params=params, synthetic=synthetic)
    records = {"heldout.plan_lock": lock}
    predictions = write_predictions(hout, df, device.threshold)
    records["heldout.intake"] = write_record(hout, "heldout.intake", data=intake_data, outs=[predictions],
                                             deps=[*files_dep, *device_deps], dep_records=["heldout.plan_lock"], **common)
    figures = [roc_figure(accepted, device.threshold, layout.figures(hout) / "roc_heldout.png", name)] \
        if metrics["estimable"] else []
    records["heldout.metrics"] = write_record(hout, "heldout.metrics", data=metrics, deps=[predictions, *device_deps],
                                              outs=figures, dep_records=["heldout.intake"], **common)
    records["heldout.subgroups"] = write_record(hout, "heldout.subgroups", data=subgroups, deps=device_deps,
                                                dep_records=["heldout.intake"], **common)
    records["heldout.acceptance"] = write_record(hout, "heldout.acceptance", data=verdict, deps=device_deps,
                                                 dep_records=["heldout.plan_lock", "heldout.metrics"], **common)
    if render:
        render_report(hout, params_file)
    return records, final


def render_report(hout: Path, params_file: str | Path) -> None:
    """`python -m submission --out HOUT --params PARAMS --document heldout_report`."""
    cmd = [sys.executable, "-m", "submission", "--out", str(hout), "--params", str(params_file),
           "--document", REPORT]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise HeldoutError(f"the records are written but the report failed ({' '.join(cmd[1:])}): {last}")


def main(argv: list[str] | None = None) -> int:
    from . import shards

    return stage_main(
        argv, prog="python -m validation.heldout", doc=__doc__,
        add_arguments=_arguments, summary=lambda r, a: shards.summary(r) if a.shard else _summary(r, a),
        call=_call)


def _call(a):
    from . import shards

    if a.allow_outside and (a.shard or a.merge):
        raise HeldoutError("--allow-outside does not combine with --shard/--merge (shards are assigned by the path "
                           "inside the set): move the files into the held-out folder, or run the set unsharded")
    if a.shard:
        return shards.run_shard(a.out, a.heldout, a.params, *shards.parse_shard(a.shard))
    if a.merge:
        return shards.merge(a.out, a.heldout, a.params, shards.parse_count(a.merge), render=not a.no_report)
    return run(a.out, a.heldout, a.params, render=not a.no_report, allow_outside=a.allow_outside)


def _arguments(parser) -> None:
    parser.add_argument("--heldout", required=True, help="folder with DICOM files and labels.csv")
    parser.add_argument("--no-report", action="store_true", help="write the records only")
    parser.add_argument("--allow-outside", action="store_true",
                        help="accept labels.csv paths that resolve outside the held-out folder (../, absolute); "
                             "not with --shard/--merge")
    scale = parser.add_mutually_exclusive_group()   # validation/shards.py
    scale.add_argument("--shard", metavar="K/N", help="classify share K of N of the set into "
                       "OUT/heldout/.shards/ (no records); then --merge N")
    scale.add_argument("--merge", metavar="N", help="write the records from the N shard files, as one run would")


def _summary(records: dict, args) -> str:
    verdict = records["heldout.acceptance"]["data"]
    intake = records["heldout.intake"]["data"]
    rate = intake["rejection"]["rate"]["not_analyzed"]
    share = f" ({rate['estimate']:.1%} not analyzed)" if "estimate" in rate else ""
    return (f"heldout: {', '.join(f'{n} {status}' for status, n in intake['counts'].items())}{share}; "
            f"acceptance {'PASSED' if verdict['all_passed'] else 'FAILED'}; {written_to(args.out, intake['name'], args.no_report)}")


def written_to(out: str | Path, name: str, no_report: bool = False) -> str:
    """Where a held-out run's evidence (and report) went, for its summary line."""
    folder = layout.heldout(out, name)
    if no_report:
        return f"records in {folder / 'evidence'}"
    report = layout.submission(folder) / REPORT
    return f"report {report}.pdf (.md, .html beside it), records in {folder / 'evidence'}"


if __name__ == "__main__":
    sys.exit(main())
