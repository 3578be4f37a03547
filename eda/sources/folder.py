"""Folder source: `labels.csv` (columns `path`, `label`; optional `patient_id`, `split`, `age`, `sex`,
`view`) beside PNG, JPEG or DICOM images. `image_id` is the path relative to the CSV; the original
width, height and (DICOM) pixel spacing are read from each image's header.

One image, one row (`evidence.unique`): each path is resolved; a path that leads outside the
data folder as written (`../`, absolute) is an error unless params
`cohort.nih.allow_paths_outside_folder` is true; rows reaching one image (the same name, `./x` and
`x`, a symlink, a copy with the same bytes) keep the first row and report the others (quality
finding `duplicate_images`); such rows with different labels are an error naming both."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evidence import sha256_file, unique
from evidence.manifest import SPLITS

from ..images import IMAGE_SUFFIXES, header_info
from . import MANIFEST_COLUMNS, SourceError, SourceResult, finding
from .nih import check_params

LABELS = "labels.csv"
REQUIRED = ("path", "label")
SEX = {"M": "M", "F": "F", "MALE": "M", "FEMALE": "F"}


def _row_error(csv: Path, row: int, message: str) -> SourceError:
    return SourceError(f"{csv}: row {row + 2}: {message}")


def _each_image_once(csv: Path, data_dir: Path, raw: pd.DataFrame, allow_outside: bool):
    """(the rows, each image once: the first row of each; the duplicates left out). A path that
    resolves outside `data_dir` is an error unless `allow_outside`; rows of one image with
    different labels are an error naming both rows (`evidence.unique`)."""
    items = []
    for i, (rel, label) in enumerate(zip(raw["path"], raw["label"])):
        try:
            path = unique.resolve_in(data_dir, rel, allow_outside=allow_outside, where=f"{csv}: row {i + 2}",
                                     flag="params cohort.nih.allow_paths_outside_folder: true")
        except unique.OutsideFolderError as e:
            raise SourceError(str(e)) from None
        items.append(unique.item(i + 2, rel, path, int(label)))
    kept, duplicates, conflicts = unique.group(items)
    if conflicts:
        raise SourceError(unique.conflict_message(conflicts[0], str(csv)))
    rows = [it.key - 2 for it in kept]
    return raw.iloc[rows].reset_index(drop=True), duplicates


def load(data_dir: str | Path, params: dict) -> SourceResult:
    data_dir = Path(data_dir).resolve()
    csv = data_dir / LABELS
    if not csv.is_file():
        raise SourceError(f"data folder {data_dir}: no {LABELS} found; add one with columns path,label")
    max_age, _ = check_params(params)
    try:
        raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise SourceError(f"{csv}: cannot be read as CSV ({e}); save it as UTF-8 comma-separated text") from None
    raw.columns = [c.strip() for c in raw.columns]
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise SourceError(f"{csv}: missing column(s) {', '.join(missing)} (found {list(raw.columns)}); "
                          "add 'path' (image path relative to labels.csv) and 'label' (1 = pneumonia, 0 = not)")
    if raw.empty:
        raise SourceError(f"{csv}: has no rows; list at least one image")
    raw = raw.apply(lambda s: s.str.strip())
    bad = ~raw["label"].isin(["0", "1"])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _row_error(csv, i, f"label {raw['label'].iloc[i]!r} is not 0 or 1; use 1 for pneumonia and 0 otherwise")
    empty = raw["path"] == ""
    if empty.any():
        raise _row_error(csv, int(np.flatnonzero(empty)[0]), "empty path; give the image path relative to labels.csv")
    raw, duplicates = _each_image_once(csv, data_dir, raw, bool(params.get("allow_paths_outside_folder", False)))
    abs_paths, sizes = [], []
    for i, rel in enumerate(raw["path"]):
        p = unique.real(data_dir / rel)
        if not p.is_file():
            raise _row_error(csv, i, f"image {rel!r} not found at {p}; fix the path or remove the row")
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise _row_error(csv, i, f"image {rel!r} is not PNG, JPEG or DICOM "
                                     f"(suffix must be one of {', '.join(IMAGE_SUFFIXES)})")
        try:
            sizes.append(header_info(p))
        except ValueError as e:
            raise _row_error(csv, i, f"image {rel!r}: {e}; replace the file or remove the row") from None
        abs_paths.append(str(p))
    split = raw["split"].str.lower() if "split" in raw.columns else pd.Series("", index=raw.index)
    if "split" in raw.columns:
        bad = ~split.isin(SPLITS)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _row_error(csv, i, f"split {raw['split'].iloc[i]!r} is not one of {', '.join(SPLITS)}; "
                                     "give every row a split or drop the column")
    findings = []
    age = pd.Series(np.nan, index=raw.index)
    if "age" in raw.columns:
        age = pd.to_numeric(raw["age"].replace("", np.nan), errors="coerce")
        bad = age.isna() & (raw["age"] != "") | (age < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _row_error(csv, i, f"age {raw['age'].iloc[i]!r} is not a non-negative number of years; "
                                     "give age in years or leave it empty")
        impossible = age > max_age
        if impossible.any():
            findings.append(finding("impossible_age", f"ages above max_age_years={max_age:g}",
                                    raw["path"][impossible], "keep", "image kept, age set missing"))
            age[impossible] = np.nan
    sex = pd.Series("", index=raw.index)
    if "sex" in raw.columns:
        up = raw["sex"].str.upper()
        bad = (up != "") & ~up.isin(SEX)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _row_error(csv, i, f"sex {raw['sex'].iloc[i]!r} is not M or F; use M, F or leave it empty")
        sex = up.map(SEX).fillna("")
    view = pd.Series("", index=raw.index)
    if "view" in raw.columns:
        view = raw["view"].str.upper()
        bad = (view != "") & ~view.isin(["AP", "PA"])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _row_error(csv, i, f"view {raw['view'].iloc[i]!r} is not AP or PA; use AP, PA or leave it empty")
    ids_given = "patient_id" in raw.columns and bool((raw["patient_id"] != "").all())
    if "patient_id" in raw.columns and not ids_given:
        i = int(np.flatnonzero(raw["patient_id"] == "")[0])
        raise _row_error(csv, i, "empty patient_id; give every row a patient id or drop the column")
    label = raw["label"].astype(int)
    table = pd.DataFrame({
        "image_id": raw["path"],
        "path": abs_paths,
        "patient_id": raw["patient_id"] if ids_given else raw["path"],
        "pneumonia": label,
        "finding_labels": np.where(label == 1, "Pneumonia", ""),
        "age_years": age.astype(float),
        "sex": sex,
        "view": view,
        "follow_up": pd.array([pd.NA] * len(raw), dtype="Int64"),
        "source": "folder",
        "split": split,
        "orig_width": pd.array([w for w, _, _ in sizes], dtype="Int64"),
        "orig_height": pd.array([h for _, h, _ in sizes], dtype="Int64"),
        "pixel_spacing": [np.nan if s is None else s for _, _, s in sizes],
    })
    if duplicates:
        findings.append(finding(
            "duplicate_images", "rows of labels.csv that reach an image another row already lists (same file "
            "through another path, or the same bytes under another name)",
            pd.Series([d.item.name for d in duplicates]), "exclude",
            "each image kept once, under its first row; "
            + "; ".join(f"row {d.item.key} ({d.item.name}): {d.how} as row {d.first.key} ({d.first.name})"
                        for d in duplicates[:20])))
    if not ids_given:
        findings.append(finding(
            "no_patient_ids", "labels.csv has no patient_id column: images of one patient cannot be grouped",
            raw["path"], "keep", "each image treated as its own patient (patient_id = image_id)"))
    source = {
        "kind": "folder", "synthetic": False, "data_dir": str(data_dir), "label_file": str(csv),
        "label_file_sha256": sha256_file(csv), "release": "folder", "label_files_found": [str(csv)],
        "official_split_lists": False, "official_split_list_files": {"train_val": None, "test": None},
        "patient_ids_given": ids_given, "split_column_given": "split" in raw.columns,
    }
    return SourceResult(manifest=table[MANIFEST_COLUMNS], source=source, quality_findings=findings,
                        deps=[csv], extra={
                            "release_differences": [],
                            "images": {"image_files_found": len(table), "image_ids_found": len(table),
                                       "images_in_several_folders": 0}})
