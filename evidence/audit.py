"""Audit a run's evidence trail.

For every record under OUT/evidence (and each assessment folder's, OUT/heldout/*/evidence and
OUT/pccp/*/evidence, `layout.ASSESSMENT_ROOTS`): validate the schema,
recompute the record's sha256, re-hash every dep and out file, check that every record it
depends on exists and matches, check the hash-chained log (`evidence.chain`), and flag code
that changed since the record was written; then the folder's completeness (`evidence.completeness`:
exactly the declared records, no unlisted output file; `complete=False` skips it for a partial run)
and the records' own summaries and params (`evidence.semantic`).
Each failure is one line naming the record, the field, and the expected and found values.
"""
from __future__ import annotations

from pathlib import Path

from . import chain, completeness, layout, prespecified, semantic
from .canonical import sha256_file
from .errors import EvidenceError
from .provenance import REPO_ROOT, resolve_run_path
from .record import read_record, record_ids


def run_dirs(out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    dirs = [out_dir] if layout.evidence(out_dir).is_dir() else []
    for root in (folder(out_dir) for folder in layout.ASSESSMENT_ROOTS.values()):
        if root.is_dir():
            dirs += sorted(p for p in root.iterdir() if layout.evidence(p).is_dir() and not p.name.startswith("."))
    return dirs


def audit_run(run_dir: Path, *, check_code: bool = True, code_hashes: dict[str, str] | None = None,
              file_hashes: dict[Path, str] | None = None, out: Path | None = None,
              complete: bool = True) -> tuple[list[str], int]:
    """(failure lines, number of records checked) for one run folder; `code_hashes` caches the
    sha256 of each code file (path relative to the repository) and `file_hashes` that of each
    dep or out file (resolved path) across records and runs."""
    code_hashes = {} if code_hashes is None else code_hashes
    file_hashes = {} if file_hashes is None else file_hashes
    failures: list[str] = []
    records: dict[str, dict] = {}
    for rid in record_ids(run_dir):
        try:
            record = read_record(run_dir, rid)
        except EvidenceError as e:
            failures.append(str(e))
            continue
        records[rid] = record
    failures += chain.check(run_dir, records)
    failures += completeness.check(run_dir, records, out) if complete else []
    failures += semantic.check(run_dir, records, out)

    for rid, record in records.items():
        for kind in ("outs", "deps"):
            entries = record["outs"] if kind == "outs" else record["deps"]["files"]
            for entry in entries:
                failures += _check_file(rid, kind, entry, run_dir, file_hashes)
        for dep in record["deps"]["records"]:
            parent = records.get(dep["id"])
            if parent is None:
                failures.append(
                    f"record {rid}: field deps.records[{dep['id']}]: expected {dep['sha256']} found missing record"
                )
            elif parent["sha256"] != dep["sha256"]:
                failures.append(
                    f"record {rid}: field deps.records[{dep['id']}]: expected {dep['sha256']} found {parent['sha256']}"
                )
        if check_code:
            for entry in record["code"]["files"]:
                found = code_hashes.get(entry["path"])
                if found is None:
                    src = REPO_ROOT / entry["path"]
                    found = code_hashes[entry["path"]] = sha256_file(src) if src.is_file() else "missing file"
                if found != entry["sha256"]:
                    failures.append(
                        f"record {rid}: field code.files[{entry['path']}]: expected {entry['sha256']} "
                        f"found {found} (code changed since the record was written: rerun the stage)"
                    )
    return failures, len(records)


def _check_file(rid: str, kind: str, entry: dict, run_dir: Path, file_hashes: dict[Path, str]) -> list[str]:
    path = resolve_run_path(entry["path"], run_dir)
    field = f"{kind}[{entry['path']}]"
    if not path.is_file():
        return [f"record {rid}: field {field}: expected {entry['sha256']} found missing file {path}"]
    key = path.resolve()
    found = file_hashes.get(key)
    if found is None:
        found = file_hashes[key] = sha256_file(path)
    if found != entry["sha256"]:
        return [f"record {rid}: field {field}: expected {entry['sha256']} found {found}"]
    if path.stat().st_size != entry["size"]:
        return [f"record {rid}: field {field}.size: expected {entry['size']} found {path.stat().st_size}"]
    return []


def audit(out_dir: str | Path, *, check_code: bool = True, complete: bool = True) -> tuple[list[str], int]:
    failures: list[str] = []
    total = 0
    dirs = run_dirs(out_dir)
    if not dirs:
        return [f"run {out_dir}: field evidence: expected a folder of records found none (run `make submission` first)"], 0
    code_hashes: dict[str, str] = {}
    file_hashes: dict[Path, str] = {}
    for d in dirs:
        f, n = audit_run(d, check_code=check_code, code_hashes=code_hashes, file_hashes=file_hashes, out=Path(out_dir),
                        complete=complete)
        prefix = "" if d == Path(out_dir) else f"[{d.name}] "
        failures += [prefix + line for line in f]
        total += n
    failures += prespecified.check(out_dir)   # the plan was locked before the test split was scored
    return failures, total
