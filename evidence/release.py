"""The release gate of the audit (`python -m evidence audit --release`): every requirement verified.

Reads record `verification.tests` (`python -m design.verify`, written by `make verify`): one line
per requirement whose verdict is not "verified", with its reason, or one line when the record is
missing. With `--release` the audit fails on these lines; without it, it prints them as warnings.
The record's own integrity (its hash, the JUnit XML it hashes, the requirements file among its
code) is checked with every other record.
"""
from __future__ import annotations

from pathlib import Path

from . import layout
from .errors import EvidenceError
from .record import read_record

RECORD = "verification.tests"


def check(out: str | Path) -> list[str]:
    """Problem lines: the record missing, or each requirement it lists as not verified."""
    out = Path(out)
    if not layout.record(out, RECORD).is_file():
        return [f"record {RECORD}: field evidence/{RECORD}.json: expected the verification of the requirements "
                f"found missing record (run make verify OUT={out})"]
    try:
        record = read_record(out, RECORD)
    except EvidenceError as e:
        return [str(e)]
    reqs = record["data"].get("requirements", {})
    return [f"record {RECORD}: requirement {rid}: expected verified found {v.get('reason', v.get('verdict'))}"
            for rid, v in sorted(reqs.items()) if v.get("verdict") != "verified"]
