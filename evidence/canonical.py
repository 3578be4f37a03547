"""Canonical JSON and sha256: the byte form that every record hash is computed over."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, fixed separators, UTF-8, and no NaN or infinity (they are not JSON)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def record_hash(record: dict) -> str:
    """sha256 over the canonical JSON of every field except `sha256` itself."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return sha256_bytes(canonical_json(body))
