"""Build, validate, write and read evidence records (see DESIGN.md, "The evidence record")."""
from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import jsonschema

from . import atomic, chain, layout, signing
from .canonical import canonical_json, record_hash
from .errors import EvidenceError, MissingRecord
from .provenance import code_entry, environment, file_entry
from .stages import check_dependency, code_files, stage_of

SCHEMA_VERSION = "evidence-record/1"


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads((Path(__file__).parent / "record.schema.json").read_text())


@lru_cache(maxsize=1)
def _record_validator():
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema())


@lru_cache(maxsize=1)
def _estimate_validator():
    return _record_validator().evolve(schema=schema()["$defs"]["estimate"])


def _check(validator, instance) -> None:
    """Raise the most relevant schema error, as `jsonschema.validate` does."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise error


def record_path(out_dir: str | Path, record_id: str) -> Path:
    return layout.record(out_dir, record_id)


def record_ids(out_dir: str | Path) -> list[str]:
    """Ids of the records in `OUT/evidence`, sorted: every `<id>.json` but the temporary file of an
    interrupted atomic write (`.<id>.json.*.tmp.json`), which the next write of that record replaces."""
    folder = layout.evidence(out_dir)
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith(".")) if folder.is_dir() else []


def validate(record: dict, *, where: str = "") -> None:
    """Schema, estimate shape, and hash. Raises EvidenceError naming the record and field."""
    name = record.get("id", where or "<record>") if isinstance(record, dict) else where
    try:
        _check(_record_validator(), record)
    except jsonschema.ValidationError as e:
        field = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise EvidenceError(f"record {name}: field {field}: {e.message}") from None
    _check_estimates(record["data"], name, "data")
    found = record_hash(record)
    if found != record["sha256"]:
        raise EvidenceError(
            f"record {name}: field sha256: expected {record['sha256']} found {found} "
            "(the record was changed after it was written; rerun its stage)"
        )


def _check_estimates(node: Any, name: str, path: str) -> None:
    """Any object with a `ci_low` is an estimate and must carry every estimate field as numbers."""
    if isinstance(node, dict):
        if "ci_low" in node or "ci_high" in node:
            missing = [k for k in _estimate_validator().schema["required"] if k not in node]
            if missing:
                raise EvidenceError(f"record {name}: field {path}: estimate lacks {', '.join(missing)}")
            try:
                _check(_estimate_validator(), node)
            except jsonschema.ValidationError as e:
                raise EvidenceError(f"record {name}: field {path}: {e.message}") from None
            if not node["ci_low"] <= node["ci_high"]:
                raise EvidenceError(f"record {name}: field {path}: ci_low > ci_high")
        for k, v in node.items():
            _check_estimates(v, name, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_estimates(v, name, f"{path}/{i}")


def read_record(out_dir: str | Path, record_id: str) -> dict:
    path = record_path(out_dir, record_id)
    if not path.is_file():
        raise MissingRecord(
            f"record {record_id}: not found at {path} (run the stage that writes it, e.g. `make` its target)"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvidenceError(f"record {record_id}: {path} is not valid JSON: {e}") from None
    validate(record, where=record_id)
    if record["id"] != record_id:
        raise EvidenceError(f"record {record_id}: field id: expected {record_id} found {record['id']}")
    return record


def write_record(
    out_dir: str | Path,
    record_id: str,
    *,
    data: dict,
    params: dict | None = None,
    deps: Iterable[str | Path] = (),
    dep_records: Iterable[str] = (),
    outs: Iterable[str | Path] = (),
    synthetic: bool | None = None,
    sign: dict | None = None,
) -> dict:
    """Write `OUT/evidence/<record_id>.json` atomically and return the record.

    The record's stage and the code it hashes come from the stage table (`evidence.stages`), which
    must declare `record_id` and every id in `dep_records`.
    deps: input files (hashed); dep_records: ids of records in the same run that this one used;
    outs: files this stage wrote (hashed). `synthetic` defaults to True when any record this one
    depends on is synthetic: a synthetic cohort marks everything downstream. `sign`: a signing
    configuration ({key, signer, role}, `evidence.signing`): the record's bytes are signed.
    Order: the log entry, the signature, then the record file, so that a stop at any point leaves
    the record missing or out of date, which the next `make` rewrites.
    """
    stage = stage_of(record_id)
    dep_records = list(dict.fromkeys(dep_records))
    for dep in dep_records:
        check_dependency(record_id, dep)
    out_dir = Path(out_dir)
    parents = [read_record(out_dir, rid) for rid in dep_records]
    if synthetic is None:
        synthetic = any(p["synthetic"] for p in parents)
    record = {
        "schema": SCHEMA_VERSION,
        "id": record_id,
        "stage": stage.name,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "synthetic": bool(synthetic),
        "code": code_entry(tuple(code_files(stage))),
        "environment": environment(),
        "params": params or {},
        "deps": {
            "files": [file_entry(p, out_dir) for p in dict.fromkeys(map(str, deps))],
            "records": [{"id": p["id"], "sha256": p["sha256"]} for p in parents],
        },
        "outs": [file_entry(p, out_dir) for p in dict.fromkeys(map(str, outs))],
        "data": data,
    }
    try:
        canonical_json(record)
    except (TypeError, ValueError) as e:
        raise EvidenceError(
            f"record {record_id}: data is not plain JSON ({e}); convert numpy values with "
            "float()/int() and report an undefined value as 'not estimable' with a reason, never NaN"
        ) from None
    record["sha256"] = record_hash(record)
    validate(record)
    body = (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    chain.append(out_dir, record, body)
    if sign is not None:
        signing.sign_configured(out_dir, record_id, sign, body)
    atomic.write_bytes(record_path(out_dir, record_id), body)
    return record
