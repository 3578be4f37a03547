"""A run's records, loaded and verified, with value look-up by JSON pointer."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import MissingRecord, MissingValue
from .record import read_record, record_ids, record_path


def to_pointer(path: str) -> str:
    """'sensitivity.estimate' (relative to `data`) or '/data/sensitivity/estimate' -> JSON pointer."""
    if path.startswith("/"):
        return path
    parts = [p for p in path.split(".") if p != ""]
    return "/data/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def resolve_pointer(doc: Any, pointer: str) -> Any:
    node = doc
    for raw in pointer.lstrip("/").split("/") if pointer not in ("", "/") else []:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if key not in node:
                raise KeyError(key)
            node = node[key]
        elif isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise KeyError(key)
            node = node[int(key)]
        else:
            raise KeyError(key)
    return node


class Store:
    """Read-only view of `OUT/evidence/*.json`; each record is validated and hash-checked once."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self._cache: dict[str, dict] = {}

    def ids(self) -> list[str]:
        return record_ids(self.out_dir)

    def has(self, record_id: str) -> bool:
        return record_path(self.out_dir, record_id).is_file()

    def get(self, record_id: str) -> dict:
        if record_id not in self._cache:
            self._cache[record_id] = read_record(self.out_dir, record_id)
        return self._cache[record_id]

    def data(self, record_id: str) -> dict:
        return self.get(record_id)["data"]

    def lookup(self, record_id: str, path: str) -> tuple[Any, str, str]:
        """(value, JSON pointer, record sha256); a missing record or pointer raises, naming both."""
        record = self.get(record_id)
        pointer = to_pointer(path)
        try:
            value = resolve_pointer(record, pointer)
        except KeyError as e:
            raise MissingValue(
                f"record {record_id}: no value at {pointer} (missing key {e.args[0]!r}); "
                f"keys there: {_keys_near(record, pointer)}"
            ) from None
        return value, pointer, record["sha256"]

    def value(self, record_id: str, path: str) -> Any:
        return self.lookup(record_id, path)[0]

    def all(self) -> dict[str, dict]:
        return {rid: self.get(rid) for rid in self.ids()}


def _keys_near(record: dict, pointer: str) -> str:
    parts = pointer.lstrip("/").split("/")
    for cut in range(len(parts) - 1, -1, -1):
        try:
            node = resolve_pointer(record, "/" + "/".join(parts[:cut]))
        except KeyError:
            continue
        if isinstance(node, dict):
            return ", ".join(sorted(node)[:20]) or "(none)"
        return "(not an object)"
    return "(none)"


__all__ = ["Store", "MissingRecord", "MissingValue", "to_pointer", "resolve_pointer"]
