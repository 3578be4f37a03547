"""NIH ChestX-ray14 source: label-file releases (2020, Kaggle 2017, sample), images, quality findings.

Releases differ in their headers: the 2020 file has bracketed names split by the comma inside them
(`OriginalImage[Width`, `Height]`, ...); the Kaggle 2017 file has the same plus a trailing empty
column (`Unnamed: 11`); `sample_labels.csv` has flat names and ages as strings with a unit
(`060Y`, `013M`, `001D`). All are mapped onto one normalised table.
"""
from __future__ import annotations

import fnmatch
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from evidence import sha256_file

from ..images import largest, list_images
from . import MANIFEST_COLUMNS, NO_FINDING, SourceError, SourceResult, finding

LABEL_PATTERNS = ("Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz", "sample_labels.csv")
OFFICIAL_LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
COMMON = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
          "Patient Gender", "View Position"]
# Known header layouts -> names of (width, height, spacing x) columns.
LAYOUTS = {
    "bracketed": (COMMON + ["OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"],
                  ("OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x")),
    "flat": (COMMON + ["OriginalImageWidth", "OriginalImageHeight", "OriginalImagePixelSpacing_x",
                       "OriginalImagePixelSpacing_y"],
             ("OriginalImageWidth", "OriginalImageHeight", "OriginalImagePixelSpacing_x")),
}
OPTIONAL_EXTRA = {"Synthetic"}
AGE_UNIT_YEARS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
_AGE_RE = re.compile(r"^(\d+(?:\.\d+)?)([A-Za-z]?)$")
DEFAULT_PREFERENCE = ["Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv.gz",
                      "Data_Entry_2017.csv", "Data_Entry_2017_kaggle.csv.gz", "Data_Entry_2017_kaggle.csv",
                      "sample_labels.csv"]
_SCAN_SUFFIXES = (".png", ".csv", ".csv.gz", ".txt")


def release_of(name: str) -> str:
    """Release name from a label file's name."""
    if name == "sample_labels.csv":
        return "nih-sample"
    if "v2020" in name:
        return "nih-2020"
    return "nih-kaggle-2017"


def is_label_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in LABEL_PATTERNS)


def rank_label_files(found: list[str], preference: list[str]) -> list[str]:
    """Sort found label-file paths by the preference list (unlisted names last, by name)."""
    order = {name: i for i, name in enumerate(preference)}
    return sorted(found, key=lambda p: (order.get(Path(p).name, len(order)), Path(p).name, p))


def read_raw(path: str | Path) -> pd.DataFrame:
    """Read a label file as strings and check its header against the known layouts."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, EOFError, ValueError, UnicodeDecodeError, zlib.error) as e:
        raise SourceError(f"label file {path}: cannot be read as CSV ({e}); restore the original file") from None
    cols = [c for c in raw.columns if not (c.startswith("Unnamed:") and (raw[c] == "").all())]
    for layout, (expected, _) in LAYOUTS.items():
        if set(expected) <= set(cols) and set(cols) - set(expected) <= OPTIONAL_EXTRA:
            raw = raw[cols]
            raw.attrs["layout"] = layout
            return raw
    raise SourceError(
        f"label file {path}: columns match no known NIH release; expected "
        f"{LAYOUTS['bracketed'][0]} (2020/Kaggle) or {LAYOUTS['flat'][0]} (sample_labels), "
        f"found {list(raw.columns)}; use an unmodified NIH label file"
    )


def _patient_id(value: str) -> str:
    value = value.strip()
    return f"{int(value):08d}" if value.isdigit() else value


def _parse_age(value: str) -> tuple[float, str]:
    """(age in years or NaN, unit) with unit '' for a bare number, '?' when unparseable/unknown."""
    m = _AGE_RE.match(value.strip())
    if not m:
        return np.nan, ("" if not value.strip() else "?")
    number, unit = float(m.group(1)), m.group(2).upper()
    if unit == "":
        return number, ""
    if unit not in AGE_UNIT_YEARS:
        return np.nan, "?"
    return number * AGE_UNIT_YEARS[unit], unit


def _to_number(series: pd.Series, kind) -> pd.Series:
    return pd.to_numeric(series.str.strip().replace("", np.nan), errors="coerce").astype(kind)


def normalise(raw: pd.DataFrame, *, max_age_years: float, path: str | Path) -> tuple[pd.DataFrame, list[dict]]:
    """Map a raw label table onto manifest columns; return (table, quality findings)."""
    w, h, s = LAYOUTS[raw.attrs["layout"]][1]
    findings: list[dict] = []
    ids = raw["Image Index"].str.strip()
    if (ids == "").any():
        row = int(np.flatnonzero(ids == "")[0]) + 2
        raise SourceError(f"label file {path}: row {row} has an empty Image Index; restore the original file")
    parsed = [_parse_age(v) for v in raw["Patient Age"]]
    age = pd.Series([a for a, _ in parsed], index=raw.index, dtype=float)
    unit = pd.Series([u for _, u in parsed], index=raw.index)
    converted = unit.isin(["M", "W", "D"])
    if converted.any():
        findings.append(finding(
            "age_units", "ages given in months, weeks or days (e.g. '013M', '001D')", ids[converted],
            "correct", "converted to years (M/12, W*7/365.25, D/365.25)"))
    unknown = unit == "?"
    if unknown.any():
        findings.append(finding(
            "age_unknown_unit", "ages that are not a number with an optional Y/M/W/D unit", ids[unknown],
            "keep", "image kept, age set missing"))
    impossible = age > max_age_years
    if impossible.any():
        findings.append(finding(
            "impossible_age", f"ages above max_age_years={max_age_years:g} "
            f"(values: {sorted(set(raw['Patient Age'][impossible].str.strip()))})", ids[impossible],
            "keep", "image kept, age set missing"))
        age[impossible] = np.nan
    sex = raw["Patient Gender"].str.strip().str.upper()
    view = raw["View Position"].str.strip().str.upper()
    for col, values, allowed in (("sex", sex, {"M", "F"}), ("view", view, {"AP", "PA"})):
        bad = ~values.isin(allowed)
        if bad.any():
            findings.append(finding(
                f"{col}_unrecognised", f"{col} values other than {sorted(allowed)}", ids[bad],
                "keep", f"image kept, {col} set missing"))
    labels = raw["Finding Labels"].str.strip().replace("", NO_FINDING)
    table = pd.DataFrame({
        "image_id": ids,
        "path": "",
        "patient_id": raw["Patient ID"].map(_patient_id),
        "pneumonia": labels.str.split("|").map(lambda xs: int("Pneumonia" in xs)),
        "finding_labels": labels,
        "age_years": age,
        "sex": sex.where(sex.isin(["M", "F"]), ""),
        "view": view.where(view.isin(["AP", "PA"]), ""),
        "follow_up": _to_number(raw["Follow-up #"], "Int64"),
        "source": "nih",
        "split": "",
        "orig_width": _to_number(raw[w], "Int64"),
        "orig_height": _to_number(raw[h], "Int64"),
        "pixel_spacing": _to_number(raw[s], float),
    })
    dup = table["image_id"].duplicated()
    if dup.any():
        findings.append(finding(
            "duplicate_image_id", "rows repeating an Image Index already listed", table["image_id"][dup],
            "exclude", "later rows dropped, the first kept"))
        table = table[~dup]
    per_patient = table[table["sex"] != ""].groupby("patient_id")["sex"].nunique()
    mixed = set(per_patient.index[per_patient > 1])
    if mixed:
        findings.append(finding(
            "inconsistent_sex", f"{len(mixed)} patients recorded with more than one sex",
            table["image_id"][table["patient_id"].isin(mixed)], "keep", "kept as recorded per image"))
    return table.reset_index(drop=True), findings


def read_label_file(path: str | Path, *, max_age_years: float) -> tuple[pd.DataFrame, list[dict]]:
    return normalise(read_raw(path), max_age_years=max_age_years, path=path)


def attach_images(table: pd.DataFrame, images: dict[str, list[str]]) -> tuple[pd.DataFrame, list[dict], dict]:
    """Fill `path` from the image listing; return (table, findings, facts)."""
    findings = []
    listed = set(table["image_id"])
    several = {k: v for k, v in images.items() if k in listed and len(v) > 1}
    paths = {k: (largest(v) if k in several else v[0]) for k, v in images.items() if k in listed}
    table = table.assign(path=table["image_id"].map(paths).fillna(""))
    if several:
        findings.append(finding(
            "image_in_several_folders", "image ids present as files in more than one folder", sorted(several),
            "keep", "path = the largest file (most pixels); the others are not used by the manifest"))
    missing = table["image_id"][table["path"] == ""]
    if images and len(missing):
        findings.append(finding(
            "listed_image_missing", "label-file rows whose image file is not present below DATA", missing,
            "keep", "row kept with an empty path; counted, not split, not used for pixels"))
    unlisted = sorted(set(images) - listed)
    if unlisted:
        findings.append(finding(
            "unlisted_image", "image files below DATA that the label file does not list", unlisted,
            "exclude", "not in the manifest"))
    facts = {"image_files_found": int(sum(len(v) for v in images.values())),
             "image_ids_found": len(images), "images_in_several_folders": len(several)}
    return table, findings, facts


def compare(chosen: pd.DataFrame, other: pd.DataFrame) -> dict:
    """Row-level differences between two normalised label tables (joined on image_id)."""
    a, b = chosen.set_index("image_id"), other.set_index("image_id")
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    differing, examples = {}, {}
    label_or_age = np.zeros(len(common), bool)
    for col in ("finding_labels", "pneumonia", "patient_id", "age_years", "sex", "view", "follow_up"):
        x, y = a[col], b[col]
        if col in ("age_years", "follow_up"):
            x, y = x.astype(float), y.astype(float)
            same = (x == y) | (x.isna() & y.isna())
        else:
            same = x == y
        differing[col] = int((~same).sum())
        if col in ("finding_labels", "age_years"):
            label_or_age |= ~same.to_numpy()
        examples[col] = [str(i) for i in common[~same.to_numpy()][:10]]
    return {
        "rows_common": int(len(common)),
        "rows_only_in_chosen": int(len(chosen) - len(common)),
        "rows_only_in_other": int(len(other) - len(common)),
        "rows_differing": differing,
        "rows_label_or_age_differ": int(label_or_age.sum()),
        "example_image_ids_label_or_age_differ": [str(i) for i in common[label_or_age][:10]],
        "example_image_ids": examples,
    }


def check_params(params: dict) -> tuple[float, list[str]]:
    """(max_age_years, label_file_preference) from the `cohort.nih` params (checked by evidence.params)."""
    return float(params.get("max_age_years", 100)), params.get("label_file_preference", DEFAULT_PREFERENCE)


def load(data_dir: str | Path, params: dict, *, label_file: str | Path | None = None,
         kind: str = "nih", release: str | None = None) -> SourceResult:
    """Build the manifest of an NIH-layout folder (or of the demo when `label_file` is given)."""
    data_dir = Path(data_dir).resolve()
    max_age, preference = check_params(params)
    files = list_images(data_dir, _SCAN_SUFFIXES)
    images = {k: v for k, v in files.items() if k.lower().endswith(".png")}
    found = rank_label_files([p for k, v in files.items() if is_label_file(k) for p in v], preference)
    if label_file is None:
        if not found:
            raise SourceError(
                f"data folder {data_dir}: no NIH label file found below it (looked for "
                f"{', '.join(LABEL_PATTERNS)}) and no labels.csv; point DATA at a folder holding one")
        label_file = found[0]
    label_file = str(Path(label_file).resolve())
    release = release or release_of(Path(label_file).name)
    table, findings = read_label_file(label_file, max_age_years=max_age)
    table["source"] = kind
    deps = [Path(label_file)]
    differences = []
    for other in found:
        if Path(other).resolve() == Path(label_file) or Path(other).name == Path(label_file).name:
            continue
        other_table, _ = read_label_file(other, max_age_years=max_age)
        differences.append({"file": str(Path(other).resolve()), "release": release_of(Path(other).name),
                            "sha256": sha256_file(other), **compare(table, other_table)})
        deps.append(Path(other).resolve())
    for d in differences:
        findings.append({
            "id": f"label_release_disagreement_{d['release'].replace('-', '_')}",
            "description": f"{Path(d['file']).name} ({d['release']}) differs from the label file used on common rows: "
                           f"finding labels in {d['rows_differing']['finding_labels']}, pneumonia in "
                           f"{d['rows_differing']['pneumonia']}, age in {d['rows_differing']['age_years']}, "
                           f"follow-up number in {d['rows_differing']['follow_up']} of {d['rows_common']}",
            "n_rows": d["rows_label_or_age_differ"], "example_image_ids": d["example_image_ids_label_or_age_differ"],
            "decision": "keep",
            "applied": f"values of the label file used ({release}) kept; see release_differences"})
    table, image_findings, facts = attach_images(table, images)
    lists = {k: (str(Path(files[n][0]).resolve()) if n in files else None) for k, n in OFFICIAL_LISTS.items()}
    source = {
        "kind": kind, "synthetic": kind == "demo", "data_dir": str(data_dir), "label_file": label_file,
        "label_file_sha256": sha256_file(label_file), "release": release,
        "label_files_found": [str(Path(p).resolve()) for p in found],
        "official_split_lists": all(lists.values()), "official_split_list_files": lists,
        "patient_ids_given": True, "split_column_given": False,
    }
    return SourceResult(manifest=table[MANIFEST_COLUMNS], source=source,
                        quality_findings=findings + image_findings, deps=deps,
                        extra={"release_differences": differences, "images": facts})
