"""Evidence records: the only way a number reaches a document.

This package imports nothing else of this project.
"""
from .atomic import atomic_path, write_bytes, write_text
from .canonical import canonical_json, record_hash, sha256_file
from .errors import EvidenceError, MissingRecord, MissingValue
from .record import read_record, record_path, write_record
from .store import Store

__all__ = [
    "atomic_path", "write_bytes", "write_text", "canonical_json", "record_hash", "sha256_file",
    "EvidenceError", "MissingRecord", "MissingValue", "read_record", "record_path",
    "write_record", "Store",
]
