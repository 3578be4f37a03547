"""Ground truth: how the labels were made and how good they are (record `eda.ground_truth`).

For an NIH source the text-mined "Pneumonia" label (the manifest's `pneumonia`, taken from the
label file and joined on Image Index) is compared with the radiologists' adjudicated "Airspace
opacity" of Majkowska et al. (Radiology 2019; `google2019_nih-chest-xray-labels.csv[.gz]`), and
the NIH bounding boxes (`BBox_List_2017.csv[.gz]`) are summarised. Other sources state their
labelling method and report label quality as not estimable.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.stats.inter_rater import cohens_kappa

from .dataset import not_estimable, summary, wilson

EXPERT_FILE = "google2019_nih-chest-xray-labels.csv"
BBOX_FILE = "BBox_List_2017.csv"
EXPERT_COLUMNS = ("Image Index", "Airspace opacity", "Set Id")
BROAD_FINDINGS = ("Pneumonia", "Consolidation", "Infiltration")
KAPPA_METHOD = "wald-fleiss-cohen-everitt-1969, clamped to [-1, 1]"

NIH_METHOD = {
    "method": "text mining of radiology reports",
    "description": (
        "The 14 NIH ChestX-ray14 labels were mined from the radiology reports with natural-language "
        "processing (disease concept detection with negation and uncertainty handling); no radiologist "
        "reviewed the images to assign them."
    ),
    "citation": "Wang X et al., ChestX-ray8: Hospital-scale chest X-ray database and benchmarks on "
                "weakly-supervised classification and localization of common thorax diseases, CVPR 2017",
}
EXPERT_CITATION = ("Majkowska A et al., Chest radiograph interpretation with deep learning models: "
                   "assessment with radiologist-adjudicated reference standards and population-adjusted "
                   "evaluation, Radiology 2019")
def implication(quality: dict) -> str:
    """Plain-language consequence for the validation plan, worded from the measured agreement."""
    measured = ""
    if "pneumonia" in quality:
        sens, ppv = quality["pneumonia"]["sensitivity"], quality["pneumonia"]["ppv"]
        if sens.get("estimable", True) and ppv.get("estimable", True):
            misses = "misses most" if sens["estimate"] < 0.5 else "misses some"
            unconfirmed = (" and a share of its positives are not confirmed by the radiologists"
                           if ppv["estimate"] < 1 else "")
            measured = (f" Measured against radiologists' adjudicated airspace opacity it {misses} of the "
                        f"opacities the radiologists saw{unconfirmed}.")
    return (
        "The NIH pneumonia label is a by-product of report text, not an image reading." + measured +
        " A model trained and tested on such labels inherits their noise: sensitivity and specificity "
        "measured against NIH labels describe agreement with report text, not with disease. The clinical "
        "validation therefore needs a held-out test set whose reference standard is a consensus of "
        "board-certified radiologists reading the images (at least three, majority or adjudicated), "
        "independent of the training data and of the labels the model was trained on."
    )


def find_file(data_dir: str | Path | None, name: str, label_file: str | Path | None = None) -> Path | None:
    """`name` or `name.gz` beside the label file, in data_dir, data_dir/metadata or one folder down
    (image folders are not searched)."""
    if not data_dir:
        return None
    root = Path(data_dir)
    folders = ([Path(label_file).parent] if label_file else []) + [root, root / "metadata"]
    if root.is_dir():
        folders += sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("images"))
    for folder in dict.fromkeys(folders):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def two_by_two(nih_positive: np.ndarray, expert_positive: np.ndarray) -> dict:
    """Counts of the NIH label (test) against the expert label (reference)."""
    a, b = np.asarray(nih_positive, bool), np.asarray(expert_positive, bool)
    return {"nih_pos_expert_pos": int((a & b).sum()), "nih_pos_expert_neg": int((a & ~b).sum()),
            "nih_neg_expert_pos": int((~a & b).sum()), "nih_neg_expert_neg": int((~a & ~b).sum())}


def kappa(table: dict, level: float = 0.95) -> dict:
    """Cohen's kappa with a Wald interval from the large-sample variance of Fleiss, Cohen and
    Everitt (1969), as computed by statsmodels `cohens_kappa`, clamped to kappa's range [-1, 1]."""
    m = np.array([[table["nih_pos_expert_pos"], table["nih_pos_expert_neg"]],
                  [table["nih_neg_expert_pos"], table["nih_neg_expert_neg"]]], dtype=float)
    n = int(m.sum())
    rows, cols = m.sum(axis=1), m.sum(axis=0)
    if n == 0 or (rows == 0).any() or (cols == 0).any():
        return not_estimable("kappa needs both labels to use both classes")
    res = cohens_kappa(m)
    k, var = float(res.kappa), float(res.var_kappa)
    if not np.isfinite(var) or var < 0:
        return not_estimable("kappa variance not finite")
    z = float(norm.ppf(0.5 + level / 2))
    half = z * np.sqrt(var)
    return {"estimate": k, "ci_low": max(k - half, -1.0), "ci_high": min(k + half, 1.0), "ci_level": level,
            "method": KAPPA_METHOD, "n": n, "se": float(np.sqrt(var))}


def agreement(nih_positive: np.ndarray, expert_positive: np.ndarray, level: float = 0.95) -> dict:
    t = two_by_two(nih_positive, expert_positive)
    tp, fp, fn, tn = (t["nih_pos_expert_pos"], t["nih_pos_expert_neg"],
                      t["nih_neg_expert_pos"], t["nih_neg_expert_neg"])
    return {
        "table": t,
        "n": tp + fp + fn + tn,
        "ppv": wilson(tp, tp + fp, level),
        "npv": wilson(tn, tn + fn, level),
        "sensitivity": wilson(tp, tp + fn, level),
        "specificity": wilson(tn, tn + fp, level),
        "percent_agreement": wilson(tp + tn, tp + fp + fn + tn, level),
        "kappa": kappa(t, level),
    }


def read_expert(path: Path) -> pd.DataFrame | str:
    """The expert label table, or a reason why it cannot be used."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        return f"{path}: unreadable ({e})"
    missing = [c for c in EXPERT_COLUMNS if c not in table.columns]
    if missing:
        return f"{path}: missing column(s) {', '.join(missing)}; expected the Majkowska et al. 2019 layout"
    return table


def expert_comparison(manifest: pd.DataFrame, path: Path, level: float = 0.95) -> dict:
    table = read_expert(path)
    if isinstance(table, str):
        return not_estimable(table)
    value = table["Airspace opacity"].str.strip().str.upper()
    valid = value.isin(["YES", "NO"])
    joined = table[valid].merge(manifest[["image_id", "pneumonia", "finding_labels"]],
                                left_on="Image Index", right_on="image_id", how="inner")
    if joined.empty:
        return not_estimable(f"{path}: no expert-labeled image is in the cohort manifest")
    expert = (joined["Airspace opacity"].str.strip().str.upper() == "YES").to_numpy()
    nih = joined["pneumonia"].to_numpy() == 1
    broad = joined["finding_labels"].str.contains(
        r"(?:^|\|)(?:" + "|".join(BROAD_FINDINGS) + r")(?:\||$)", regex=True).to_numpy()
    by_set = {}
    for name, part in joined.groupby(joined["Set Id"].str.strip()):
        sel = joined.index.isin(part.index)
        by_set[str(name)] = {"images": int(sel.sum()), "table": two_by_two(nih[sel], expert[sel])}
    return {
        "expert_file": str(path),
        "citation": EXPERT_CITATION,
        "reference": "radiologist-adjudicated 'Airspace opacity' (YES/NO)",
        "nih_label": "manifest 'pneumonia' (NIH 'Pneumonia' in Finding Labels, joined on Image Index)",
        "expert_rows": int(len(table)),
        "expert_rows_not_yes_no": int((~valid).sum()),
        "matched_images": int(len(joined)),
        "matched_patients": int(joined["Patient ID"].nunique()) if "Patient ID" in joined else
        not_estimable("expert file has no Patient ID column"),
        "expert_positive": int(expert.sum()),
        "pneumonia": agreement(nih, expert, level),
        "pneumonia_consolidation_or_infiltration": agreement(broad, expert, level),
        "by_set": by_set,
        "caveats": [
            "airspace opacity is broader than pneumonia (also edema, hemorrhage, atelectasis, "
            "consolidation of other causes): a NIH-negative, expert-positive image is not necessarily "
            "a missed pneumonia",
            "the expert-labeled images are an enriched selection, not a random sample of NIH: "
            "PPV and NPV here do not transfer to NIH prevalence",
            "intervals treat images as independent; several images of one patient are correlated",
        ],
    }


def bbox_summary(path: Path, manifest: pd.DataFrame) -> dict:
    try:
        boxes = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        return not_estimable(f"{path}: unreadable ({e})")
    if boxes.shape[1] < 6 or list(boxes.columns[:2]) != ["Image Index", "Finding Label"]:
        return not_estimable(f"{path}: expected columns Image Index, Finding Label, x, y, w, h")
    pneu = boxes[boxes["Finding Label"] == "Pneumonia"]
    w = pd.to_numeric(pneu.iloc[:, 4], errors="coerce")
    h = pd.to_numeric(pneu.iloc[:, 5], errors="coerce")
    return {
        "file": str(path),
        "boxes_all_findings": int(len(boxes)),
        "pneumonia_boxes": int(len(pneu)),
        "pneumonia_images": int(pneu["Image Index"].nunique()),
        "pneumonia_images_in_cohort": int(pneu["Image Index"].isin(manifest["image_id"]).sum()),
        "pneumonia_box_width_px": summary(w),
        "pneumonia_box_height_px": summary(h),
        "pneumonia_box_area_fraction_of_image": summary(w * h / (1024.0 * 1024.0)),
        "coordinate_space": "1024 x 1024 pixels",
    }


def assess(manifest: pd.DataFrame, source: dict, level: float = 0.95) -> tuple[dict, list[Path]]:
    """(`eda.ground_truth` data, files read)."""
    kind = source.get("kind")
    if kind == "demo":
        reason = "synthetic demo cohort: labels are generated by the demo generator and known exactly"
        return {"source_kind": kind, "labelling": {"method": "generated (synthetic)", "description": reason},
                "label_quality": not_estimable(reason), "bounding_boxes": not_estimable(reason)}, []
    if kind != "nih":
        reason = ("labels supplied with a folder source: the labeling method is not known to the toolkit "
                  "and no independent reference standard is available to measure it")
        return {"source_kind": kind or "unknown",
                "labelling": {"method": "supplied by the data provider", "description": reason},
                "label_quality": not_estimable(reason), "bounding_boxes": not_estimable(reason)}, []
    data_dir, label_file = source.get("data_dir"), source.get("label_file")
    expert_path = find_file(data_dir, EXPERT_FILE, label_file)
    bbox_path = find_file(data_dir, BBOX_FILE, label_file)
    used = [p for p in (expert_path, bbox_path) if p is not None]
    quality = (expert_comparison(manifest, expert_path, level) if expert_path else
               not_estimable(f"no {EXPERT_FILE}[.gz] found below {data_dir}; add the Majkowska et al. "
                             "2019 expert labels to measure label quality"))
    boxes = (bbox_summary(bbox_path, manifest) if bbox_path else
             not_estimable(f"no {BBOX_FILE}[.gz] found below {data_dir}"))
    return {"source_kind": kind, "labelling": NIH_METHOD, "label_quality": quality,
            "bounding_boxes": boxes, "implication_for_validation": implication(quality)}, used
