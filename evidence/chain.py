"""The run's append-only, hash-chained log of records (`OUT/evidence/log.jsonl`).

The first line of a log is its genesis entry, holding a random run id; every later line is one
record as written: `{seq, record_id, record_sha256, file_sha256, created_utc, prev, entry_sha256}`,
where `prev` is the previous entry's `entry_sha256` and `entry_sha256` is the sha256 of the entry's
canonical JSON without itself. Editing, dropping or reordering a line breaks the chain, and a log
or record from another run carries another run id and other hashes.

`write_record` appends the entry before it writes the record file: a run stopped between the two
has an entry whose record is missing or older, which the audit reports and the next `make`
repairs (the record is missing or out of date, so its stage reruns). Appends are serialized by an
exclusive `flock` on the log and fsynced; a last line left incomplete by a crash was never
committed and is dropped by the next append.

`check(out)` lists the failures: a broken or reordered chain, a record file whose sha256 is not the
last entry for its id (edited and rehashed, or copied from another run), a record with no entry,
and an entry whose record is gone.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Iterable, Iterator

from . import layout
from .canonical import canonical_json, sha256_bytes

GENESIS = "genesis"


def entry_hash(entry: dict) -> str:
    return sha256_bytes(canonical_json({k: v for k, v in entry.items() if k != "entry_sha256"}))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.contextmanager
def locked_append(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Hold an exclusive lock on `path` (created if needed) and yield (fd, its complete lines);
    an incomplete last line (a crash mid-append) is cut off first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(path, "rb") as f:
            raw = f.read()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            os.ftruncate(fd, len(complete))
        yield fd, complete.decode("utf-8").splitlines()
    finally:
        os.close(fd)   # closing releases the lock


def append_line(fd: int, obj: dict) -> None:
    """Write one JSON line with a single write (the fd is O_APPEND) and fsync it."""
    os.write(fd, (json.dumps(obj, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
    os.fsync(fd)


def _genesis() -> dict:
    entry = {"seq": 0, "kind": GENESIS, "run_id": secrets.token_hex(16), "created_utc": _now(), "prev": None}
    return {**entry, "entry_sha256": entry_hash(entry)}


def append(out: str | Path, record: dict, file_bytes: bytes) -> dict:
    """Append the entry of `record` (whose file will hold exactly `file_bytes`) to OUT's log."""
    with locked_append(layout.evidence_log(out)) as (fd, lines):
        last = json.loads(lines[-1]) if lines else None
        if last is None:
            last = _genesis()
            append_line(fd, last)
        entry = {"seq": last["seq"] + 1, "record_id": record["id"], "record_sha256": record["sha256"],
                 "file_sha256": sha256_bytes(file_bytes), "created_utc": record["created_utc"],
                 "prev": last["entry_sha256"]}
        entry["entry_sha256"] = entry_hash(entry)
        append_line(fd, entry)
    return entry


def read_log(out: str | Path) -> tuple[list[dict], list[str]]:
    """(entries, failures reading them): a line that is not JSON ends the log."""
    path = layout.evidence_log(out)
    if not path.is_file():
        return [], []
    entries, failures = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(keepends=True), start=1):
        try:
            if not line.endswith("\n"):
                raise ValueError("incomplete last line (a write was interrupted; rerun `make`)")
            entries.append(json.loads(line))
        except ValueError as e:
            failures.append(f"log {path}: line {n}: not a log entry ({str(e).splitlines()[0]})")
            break
    return entries, failures


def run_id(out: str | Path) -> str | None:
    entries, _ = read_log(out)
    return entries[0].get("run_id") if entries and entries[0].get("kind") == GENESIS else None


def chain_failures(entries: list[dict], path: Path) -> list[str]:
    """Each broken link: a changed entry, an entry out of order, a missing or second genesis."""
    failures = []
    if entries and entries[0].get("kind") != GENESIS:
        failures.append(f"log {path}: line 1: expected the genesis entry with the run id found "
                        f"{entries[0].get('record_id', '?')} (the log was truncated or replaced)")
    prev = None
    for n, e in enumerate(entries, start=1):
        if not isinstance(e, dict):
            failures.append(f"log {path}: line {n}: not a log entry")
            return failures
        if e.get("entry_sha256") != entry_hash(e):
            failures.append(f"log {path}: line {n}: field entry_sha256: expected {entry_hash(e)} "
                            f"found {e.get('entry_sha256')} (the entry was edited)")
        if e.get("prev") != prev or e.get("seq") != n - 1 or (n > 1 and e.get("kind") == GENESIS):
            failures.append(f"log {path}: line {n}: field prev: expected {prev} found {e.get('prev')} "
                            f"(entry {e.get('record_id', e.get('kind'))} is out of order, or one before it "
                            "was removed or inserted)")
        prev = e.get("entry_sha256")
    return failures


def check(out: str | Path, records: Iterable[str] | None = None) -> list[str]:
    """Failure lines for OUT's log against its record files. `records`: the ids whose files passed
    their own checks (default: every `evidence/*.json`); the others fail already."""
    out = Path(out)
    path = layout.evidence_log(out)
    entries, failures = read_log(out)
    failures += chain_failures(entries, path)
    last = {e["record_id"]: e for e in entries if isinstance(e, dict) and "record_id" in e}
    ids = sorted(p.stem for p in layout.evidence(out).glob("*.json")) if records is None else sorted(records)
    for rid in ids:
        entry = last.get(rid)
        if entry is None:
            failures.append(f"record {rid}: field log: expected an entry in {path} found none "
                            "(a record not written by this run, or added by hand)")
            continue
        found = hashlib.sha256(layout.record(out, rid).read_bytes()).hexdigest()
        if found != entry.get("file_sha256"):
            failures.append(f"record {rid}: field log.file_sha256: expected {entry.get('file_sha256')} (entry "
                            f"{entry.get('seq')} of {path}) found {found} (the record was replaced after it was "
                            "written: edited and rehashed, or copied from another run)")
    on_disk = {p.stem for p in layout.evidence(out).glob("*.json")}
    for rid in sorted(set(last) - on_disk):
        failures.append(f"record {rid}: field log: expected the record of entry {last[rid].get('seq')} of "
                        f"{path} found missing record (deleted, or its write was interrupted: rerun `make`)")
    return failures
