"""Dataset characteristics of the cohort manifest (record `eda.dataset`), vectorised.

Reads `cohort/manifest.csv` and `cohort/splits.csv` (ARCHITECTURE.md) and summarises images,
patients, labels, demographics, views, original geometry and the per-split tables that the
Databases section of the submission reports.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from evidence.errors import ToolkitError

from .sources import MANIFEST_COLUMNS, NO_FINDING

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
    "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
)
TEXT_COLUMNS = ("image_id", "path", "patient_id", "finding_labels", "sex", "view", "source", "split")
NUMERIC_COLUMNS = ("age_years", "follow_up", "orig_width", "orig_height", "pixel_spacing")
SPLITS = ("train", "val", "test")
IMAGES_PER_PATIENT_BINS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, None))


class ManifestError(ToolkitError, ValueError):
    """A manifest or split file that does not follow the contract; the message names the fix."""


def not_estimable(reason: str) -> dict:
    return {"estimable": False, "reason": reason}


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest with typed columns; raises ManifestError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (run `python -m eda.cohort` first)")
    try:
        frame = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False,
                            na_values={c: [""] for c in NUMERIC_COLUMNS})
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{path}: not a readable CSV manifest ({e}); rerun `python -m eda.cohort`") from None
    return check_manifest(frame, where=str(path))


def check_manifest(frame: pd.DataFrame, *, where: str = "manifest") -> pd.DataFrame:
    """Validate columns and types of a manifest frame; return it with canonical dtypes."""
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{where}: missing column(s) {', '.join(missing)} "
                            "(the manifest must follow ARCHITECTURE.md; rerun `python -m eda.cohort`)")
    frame = frame.copy()
    for c in TEXT_COLUMNS:
        if frame[c].isna().any() or not pd.api.types.is_string_dtype(frame[c]):
            frame[c] = frame[c].fillna("").astype(str)
    for c in NUMERIC_COLUMNS:
        if pd.api.types.is_numeric_dtype(frame[c]):
            frame[c] = frame[c].astype(float)
            continue
        values = pd.to_numeric(frame[c], errors="coerce")
        bad = values.isna() & frame[c].notna() & (frame[c].astype(str) != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ManifestError(f"{where}: row {row + 2}: column {c} has non-numeric value "
                                f"{frame[c].iloc[row]!r} (expected a number or empty)")
        frame[c] = values.astype(float)
    label = pd.to_numeric(frame["pneumonia"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ManifestError(f"{where}: row {row + 2}: column pneumonia is {frame['pneumonia'].iloc[row]!r} "
                            "(expected 0 or 1)")
    frame["pneumonia"] = label.astype(int)
    if frame.empty:
        raise ManifestError(f"{where}: the manifest has no rows (check the data source)")
    return frame


def read_splits(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: splits file not found (run `python -m eda.split` first)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{path}: not a readable CSV splits file ({e}); rerun `python -m eda.split`") from None
    missing = [c for c in ("image_id", "patient_id", "split") if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)} (rerun `python -m eda.split`)")
    return frame


def with_splits(manifest: pd.DataFrame, splits: pd.DataFrame | None) -> pd.DataFrame:
    """The manifest with `split` taken from splits.csv (joined on image_id) when given."""
    if splits is None:
        return manifest
    mapping = pd.Series(splits["split"].to_numpy(), index=splits["image_id"].to_numpy())
    out = manifest.copy()
    out["split"] = out["image_id"].map(mapping).fillna("").astype(str)
    return out


def summary(values: pd.Series | np.ndarray) -> dict:
    """n, mean, sd (n-1), median, q1, q3, min, max of the non-missing values."""
    v = pd.Series(values, dtype=float).dropna().to_numpy()
    if v.size == 0:
        return not_estimable("no known values")
    q1, median, q3 = np.percentile(v, [25, 50, 75])
    out = {"n": int(v.size), "mean": float(v.mean()), "median": float(median), "q1": float(q1),
           "q3": float(q3), "min": float(v.min()), "max": float(v.max())}
    out["sd"] = float(v.std(ddof=1)) if v.size > 1 else not_estimable("one value: sd needs at least two")
    return out


def wilson(k: int, n: int, level: float = 0.95) -> dict:
    """Proportion k/n with a Wilson score interval (statsmodels)."""
    if n == 0:
        return not_estimable("denominator is zero")
    low, high = proportion_confint(k, n, alpha=1 - level, method="wilson")
    return {"estimate": k / n, "ci_low": float(low), "ci_high": float(high), "ci_level": level,
            "method": "wilson", "n": int(n), "k": int(k)}


def finding_matrix(labels: pd.Series) -> pd.DataFrame:
    """Boolean image x finding matrix, computed on the distinct label strings only (fast)."""
    codes, uniques = pd.factorize(labels.fillna(""))
    parts = [set(u.split("|")) for u in uniques]
    names = list(FINDINGS) + [NO_FINDING]
    table = np.array([[n in p for n in names] for p in parts], dtype=bool).reshape(len(parts), len(names))
    return pd.DataFrame(table[codes], columns=names, index=labels.index)


def images_per_patient(frame: pd.DataFrame) -> dict:
    counts = frame.groupby("patient_id", sort=False).size()
    dist = []
    for lo, hi in IMAGES_PER_PATIENT_BINS:
        mask = counts >= lo if hi is None else counts.between(lo, hi)
        label = f"{lo}+" if hi is None else (str(lo) if lo == hi else f"{lo}-{hi}")
        dist.append({"images": label, "patients": int(mask.sum())})
    return {"mean": float(counts.mean()), "median": float(counts.median()), "max": int(counts.max()),
            "min": int(counts.min()), "distribution": dist}


def follow_ups(frame: pd.DataFrame) -> dict:
    counts = frame.groupby("patient_id", sort=False).size()
    fu = frame["follow_up"]
    return {
        "patients_with_more_than_one_image": int((counts > 1).sum()),
        "images_follow_up_gt_0": int((fu > 0).sum()) if fu.notna().any() else not_estimable("follow-up unknown"),
        "max_follow_up": int(fu.max()) if fu.notna().any() else not_estimable("follow-up unknown"),
    }


def prevalence(frame: pd.DataFrame, level: float = 0.95) -> dict:
    pos_img = int(frame["pneumonia"].sum())
    per_patient = frame.groupby("patient_id", sort=False)["pneumonia"].max()
    return {
        "pneumonia_images": pos_img,
        "pneumonia_patients": int(per_patient.sum()),
        "per_image": wilson(pos_img, len(frame), level),
        "per_patient": wilson(int(per_patient.sum()), len(per_patient), level),
    }


def findings_table(frame: pd.DataFrame, matrix: pd.DataFrame) -> list[dict]:
    n = len(frame)
    pos = frame["pneumonia"].to_numpy() == 1
    n_pos = int(pos.sum())
    counts = matrix.sum(axis=0)
    with_pneu = matrix[pos].sum(axis=0)
    rows = []
    for name in matrix.columns:
        k, kp = int(counts[name]), int(with_pneu[name])
        rows.append({
            "finding": name, "images": k, "fraction_of_images": k / n,
            "with_pneumonia": kp,
            "fraction_of_pneumonia_images": kp / n_pos if n_pos else not_estimable("no pneumonia images"),
        })
    return rows


def pneumonia_alone(frame: pd.DataFrame, matrix: pd.DataFrame) -> int:
    pos = frame["pneumonia"].to_numpy() == 1
    return int((pos & (matrix[list(FINDINGS)].sum(axis=1).to_numpy() == 1)).sum())


def age_summary(frame: pd.DataFrame) -> dict:
    age = frame["age_years"]
    sex = frame["sex"]
    label = frame["pneumonia"]
    bands = pd.cut(age, [-np.inf, 18, 65, np.inf], right=False, labels=["<18", "18-64", ">=65"])
    return {
        "overall": summary(age),
        "by_sex": {s: summary(age[sex == s]) for s in ("M", "F")},
        "by_label": {"pneumonia": summary(age[label == 1]), "no_pneumonia": summary(age[label == 0])},
        "unknown": int(age.isna().sum()),
        "bands": {str(b): int(c) for b, c in bands.value_counts(sort=False).items()},
    }


def category_counts(series: pd.Series, levels: tuple[str, ...], unit: str = "images") -> dict:
    n = len(series)
    out = {}
    for level in levels:
        k = int((series == level).sum())
        out[level] = {unit: k, "fraction": k / n if n else not_estimable(f"no {unit}")}
    k = int((~series.isin(levels)).sum())
    out["unknown"] = {unit: k, "fraction": k / n if n else not_estimable(f"no {unit}")}
    return out


def sex_summary(frame: pd.DataFrame) -> dict:
    patients = frame.drop_duplicates("patient_id")
    return {"images": category_counts(frame["sex"], ("M", "F")),
            "patients": category_counts(patients["sex"], ("M", "F"), unit="patients")}


def view_summary(frame: pd.DataFrame) -> dict:
    label = frame["pneumonia"]
    return {
        "overall": category_counts(frame["view"], ("AP", "PA")),
        "by_label": {
            "pneumonia": category_counts(frame.loc[label == 1, "view"], ("AP", "PA")),
            "no_pneumonia": category_counts(frame.loc[label == 0, "view"], ("AP", "PA")),
        },
    }


def geometry_summary(frame: pd.DataFrame) -> dict:
    if frame[["orig_width", "orig_height"]].notna().all(axis=1).sum() == 0:
        size = not_estimable("original image size not given by the data source")
    else:
        size = {"width": summary(frame["orig_width"]), "height": summary(frame["orig_height"])}
    spacing = (summary(frame["pixel_spacing"]) if frame["pixel_spacing"].notna().any()
               else not_estimable("pixel spacing not given by the data source"))
    return {"original_size_px": size, "pixel_spacing_mm": spacing}


def split_table(frame: pd.DataFrame, level: float = 0.95) -> dict:
    """Per split: images, patients, positives, prevalence, median age, % female, % AP."""
    out = {}
    for name in SPLITS:
        part = frame[frame["split"] == name]
        if part.empty:
            out[name] = not_estimable(f"no images in split {name!r}")
            continue
        n = len(part)
        age = part["age_years"].dropna()
        out[name] = {
            "images": n,
            "patients": int(part["patient_id"].nunique()),
            "pneumonia_images": int(part["pneumonia"].sum()),
            "pneumonia_patients": int(part.groupby("patient_id")["pneumonia"].max().sum()),
            "prevalence": wilson(int(part["pneumonia"].sum()), n, level),
            "median_age_years": float(age.median()) if len(age) else not_estimable("no known ages"),
            "percent_female": 100.0 * float((part["sex"] == "F").mean()),
            "percent_ap": 100.0 * float((part["view"] == "AP").mean()),
        }
    unassigned = int((~frame["split"].isin(SPLITS)).sum())
    out["unassigned_images"] = unassigned
    out["unassigned_reason"] = ("images not in splits.csv (the split stage leaves out rows it cannot use, "
                                "e.g. images without a file; see split.patients)") if unassigned else ""
    return out


def describe(manifest: pd.DataFrame, splits: pd.DataFrame | None = None,
             matrix: pd.DataFrame | None = None, level: float = 0.95) -> tuple[dict, dict]:
    """(`eda.dataset` data, arrays for the figures). Pass `splits=None` when `manifest` already has
    them joined, `matrix` when `finding_matrix` of its labels is already computed, and `level` for
    the confidence intervals."""
    frame = with_splits(manifest, splits)
    if matrix is None:
        matrix = finding_matrix(frame["finding_labels"])
    table = findings_table(frame, matrix)
    data = {
        "counts": {"images": len(frame), "patients": int(frame["patient_id"].nunique()),
                   "images_with_pixels": int((frame["path"] != "").sum())},
        "images_per_patient": images_per_patient(frame),
        "follow_up": follow_ups(frame),
        "prevalence": prevalence(frame, level),
        "findings": table,
        "pneumonia_as_only_finding": pneumonia_alone(frame, matrix),
        "age_years": age_summary(frame),
        "sex": sex_summary(frame),
        "view": view_summary(frame),
        "geometry": geometry_summary(frame),
        "splits": split_table(frame, level),
    }
    figures = {
        "age_by_class": {"pneumonia": frame.loc[frame["pneumonia"] == 1, "age_years"].dropna().to_numpy(),
                         "no_pneumonia": frame.loc[frame["pneumonia"] == 0, "age_years"].dropna().to_numpy()},
        "view_by_class": data["view"]["by_label"],
        "cooccurrence": [r for r in table if r["finding"] not in ("Pneumonia",)],
        "images_per_patient": data["images_per_patient"]["distribution"],
    }
    return data, figures
