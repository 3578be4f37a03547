"""The one reader of the cohort manifest (`cohort/manifest.csv`) and the split file
(`cohort/splits.csv`), with the column contract of ARCHITECTURE.md ("Cohort manifest").

Every stage that reads them comes here and selects the columns it needs; a column it asks for
is required, typed and checked, with a one-line error naming the file, the row or column and
the fix. Text columns are str (empty when unknown); `pneumonia` is int 0/1; the numeric
columns are float (NaN when empty: the integer ones may be unknown).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from . import layout
from .errors import ToolkitError

TEXT, LABEL, NUMBER = "str", "int 0/1", "float"
#: Column -> type, in the order the cohort stage writes them (ARCHITECTURE.md, "Cohort manifest").
COLUMNS = {
    "image_id": TEXT, "path": TEXT, "sha256": TEXT, "patient_id": TEXT, "pneumonia": LABEL, "finding_labels": TEXT,
    "age_years": NUMBER, "sex": TEXT, "view": TEXT, "follow_up": NUMBER, "source": TEXT, "split": TEXT,
    "orig_width": NUMBER, "orig_height": NUMBER, "pixel_spacing": NUMBER,
}
SPLIT_COLUMNS = ("image_id", "patient_id", "split")
SPLITS = ("train", "val", "test")


class ManifestError(ToolkitError, ValueError):
    """A manifest or split file that does not follow the contract; the message names the fix."""


def _first_row(mask) -> int:
    """The CSV line number (header = 1) of the first true entry."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 2


def _read_csv(path: Path, what: str, stage: str) -> pd.DataFrame:
    if not path.is_file():
        raise ManifestError(f"{path}: {what} not found (run `python -m {stage}` first)")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{path}: not a readable CSV {what} ({e}); rerun `python -m {stage}`") from None


def read_manifest(path: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """The manifest's `columns` (default: all), typed; raises ManifestError naming the file."""
    path = Path(path)
    return check_manifest(_read_csv(path, "manifest", "eda.cohort"), columns, where=str(path))


def check_manifest(frame: pd.DataFrame, columns: Iterable[str] | None = None, *,
                   where: str = "manifest") -> pd.DataFrame:
    """`columns` (default: all) of a manifest frame with the contract's types; image_id is
    always checked (present, non-empty, unique) and always returned first."""
    wanted = list(COLUMNS) if columns is None else ["image_id", *(c for c in columns if c != "image_id")]
    unknown = [c for c in wanted if c not in COLUMNS]
    if unknown:
        raise ValueError(f"not a manifest column: {', '.join(unknown)} (columns: {', '.join(COLUMNS)})")
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ManifestError(f"{where}: missing column(s) {', '.join(missing)} "
                            "(the manifest must follow ARCHITECTURE.md; rerun `python -m eda.cohort`)")
    if frame.empty:
        raise ManifestError(f"{where}: the manifest has no rows (check the data source)")
    out = pd.DataFrame(index=frame.index)
    for c in wanted:
        out[c] = _typed(frame[c], c, where)
    ids = out["image_id"]
    if (ids == "").any():
        raise ManifestError(f"{where}: row {_first_row(ids == '')}: empty image_id; every image needs one")
    if ids.duplicated().any():
        dup = ids.duplicated().to_numpy()
        raise ManifestError(f"{where}: row {_first_row(dup)}: duplicate image_id {ids[dup].iloc[0]!r}; "
                            "one row per image")
    return out.reset_index(drop=True)


def _typed(values: pd.Series, column: str, where: str) -> pd.Series:
    kind = COLUMNS[column]
    if kind == TEXT:
        return values.fillna("").astype(str)
    if kind == LABEL:
        label = pd.to_numeric(values, errors="coerce")
        bad = ~label.isin([0, 1])
        if bad.any():
            raise ManifestError(f"{where}: row {_first_row(bad)}: column {column} is "
                                f"{values[bad].iloc[0]!r} (expected 0 or 1)")
        return label.astype(int)
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna() & (values.astype(str).str.strip() != "")
    if bad.any():
        raise ManifestError(f"{where}: row {_first_row(bad)}: column {column} has non-numeric value "
                            f"{values[bad].iloc[0]!r} (expected a number or empty)")
    return numbers.astype(float)


def image_path(stored: str, source: dict, out: str | Path) -> Path:
    """Where a manifest row's image is now. A demo cohort's images are part of its run folder
    (`OUT/demo`), so they are found there even when the run folder was copied or moved since
    (an auditor's copy); any other path is the stored one. `source` is `cohort.manifest`'s
    `data.source`."""
    p = Path(stored)
    if source.get("kind") == "demo" and source.get("data_dir"):
        try:
            return layout.demo(out) / p.relative_to(source["data_dir"])
        except ValueError:
            pass
    return p


def read_splits(path: str | Path) -> pd.DataFrame:
    """`image_id, patient_id, split` of the split file: split one of train/val/test, one row per
    image; raises ManifestError naming the file and row."""
    path = Path(path)
    frame = _read_csv(path, "splits file", "eda.split")
    missing = [c for c in SPLIT_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)} (rerun `python -m eda.split`)")
    frame = frame[list(SPLIT_COLUMNS)]
    bad = ~frame["split"].isin(SPLITS)
    if bad.any():
        raise ManifestError(f"{path}: row {_first_row(bad)}: split must be {', '.join(SPLITS)}, got "
                            f"{frame['split'][bad].iloc[0]!r} (rerun `python -m eda.split`)")
    dup = frame["image_id"].duplicated()
    if dup.any():
        raise ManifestError(f"{path}: row {_first_row(dup)}: image_id {frame['image_id'][dup].iloc[0]!r} "
                            "appears more than once (rerun `python -m eda.split`)")
    return frame.reset_index(drop=True)


def validation_adequacy(out: str | Path) -> dict | None:
    """`validation_adequacy` of the `split.patients` record (the val split's counts against its
    pre-specified minimums, `eda.split`); None when the record or the field is absent (an older run)."""
    from .errors import MissingRecord
    from .record import read_record

    try:
        return read_record(out, "split.patients")["data"].get("validation_adequacy")
    except MissingRecord:
        return None
