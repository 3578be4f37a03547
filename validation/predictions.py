"""Read and validate prediction files (`image_id, patient_id, label, score`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evidence.errors import ToolkitError

COLUMNS = ("image_id", "patient_id", "label", "score")


class InputError(ToolkitError, ValueError):
    """Bad input file; the message names the file, row or column and the fix."""


def read_predictions(path: str | Path) -> pd.DataFrame:
    """The prediction table with label int 0/1 and score float; raises InputError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found (run `python -m model.predict` first, or `make validate`)")
    try:
        df = pd.read_csv(path, dtype={"image_id": str, "patient_id": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV ({e}); rewrite it with columns {', '.join(COLUMNS)}") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    if len(df) == 0:
        raise InputError(f"{path}: no rows; a prediction file needs at least one image")
    for col in ("image_id", "patient_id"):
        empty = df[col].astype(str).str.strip() == ""
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0]) + 2
            raise InputError(f"{path}: row {row}: empty {col}; every prediction needs one")
    dup = df["image_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0]) + 2
        raise InputError(f"{path}: row {row}: duplicate image_id {df['image_id'].iloc[row - 2]!r}; one row per image")
    label = pd.to_numeric(df["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise InputError(f"{path}: row {row}: label {df['label'].iloc[row - 2]!r} is not 0 or 1")
    score = pd.to_numeric(df["score"], errors="coerce")
    bad = ~np.isfinite(score.to_numpy(dtype=float))
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 2
        raise InputError(f"{path}: row {row}: score {df['score'].iloc[row - 2]!r} is not a finite number")
    out = df[list(COLUMNS)].copy()
    out["label"] = label.astype(int)
    out["score"] = score.astype(float)
    return out

