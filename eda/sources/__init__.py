"""Data-source adapters: each turns a data folder into cohort-manifest rows plus provenance.

`eda.cohort.load_source` picks the adapter: a folder holding `labels.csv` is a folder source, a
folder holding an NIH label file anywhere below it is an NIH source. The demo cohort is read
through the NIH adapter (`eda.demo` writes an NIH-like label file).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evidence import manifest
from evidence.errors import ToolkitError

NO_FINDING = "No Finding"
#: The columns an adapter fills: all but `sha256`, which `eda.cohort` computes from the image files.
MANIFEST_COLUMNS = [c for c in manifest.COLUMNS if c != "sha256"]


class SourceError(ToolkitError, ValueError):
    """Bad input data: the message names the file, row or parameter and the fix."""


@dataclass
class SourceResult:
    """What an adapter hands to `eda.cohort`: the manifest and the facts for the record."""
    manifest: pd.DataFrame
    source: dict
    quality_findings: list[dict] = field(default_factory=list)
    deps: list[Path] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def finding(fid: str, description: str, ids, decision: str, applied: str) -> dict:
    """One data-quality finding; `ids` are the affected image ids (the first 10 are listed)."""
    ids = list(ids)
    return {
        "id": fid, "description": description, "n_rows": len(ids),
        "example_image_ids": [str(i) for i in ids[:10]], "decision": decision, "applied": applied,
    }
