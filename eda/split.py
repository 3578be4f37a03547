"""Patient-level split: `python -m eda.split --out OUT --params PARAMS`.

Method, in order: the source's `split` column when every row has one; NIH official lists
(`train_val_list.txt`, `test_list.txt`) when present and `use_official_lists` (train_val split
into train/val by patient, seeded); otherwise a seeded patient-level split by `fractions`,
stratified so that patients with a positive image are spread over the splits. Writes
`OUT/cohort/splits.csv` (`image_id, patient_id, split`) and the record `split.patients`. Rows
whose image file is missing (empty path while other rows have one, or a path with no file) are
left out and counted in the record.

Validation adequacy (pre-specified, params `min_val_positives`, `min_val_negatives`): early
stopping, model selection and the operating point are decided on the val split, so it must hold
at least that many pneumonia and non-pneumonia images. Below either minimum the stage stops
(`InadequateValidation`), unless `allow_inadequate_val: true`: then it proceeds and the record's
`validation_adequacy` says so; training then keeps the last epoch without early stopping and the
threshold record says the operating point is not estimable from the data.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from evidence import atomic, layout, read_record, write_record
from evidence.params import section
from evidence.cli import stage_main
from evidence.errors import ToolkitError
from evidence.manifest import SPLITS, read_manifest

RECORD_ID = "split.patients"


class SplitError(ToolkitError, ValueError):
    pass


class InadequateValidation(SplitError):
    """The val split holds fewer positives or negatives than the pre-specified minimum."""


#: The pre-specified validation minimums (images) and whether a run below them may proceed.
ADEQUACY_DEFAULTS = {"min_val_positives": 20, "min_val_negatives": 20, "allow_inadequate_val": False}


def check_params(params: dict) -> tuple[int, dict]:
    """(seed, fractions) from the split section (checked by evidence.params)."""
    return params.get("seed", 0), {k: float(params["fractions"][k]) for k in SPLITS}


def assign_patients(patients: pd.DataFrame, fractions: dict, seed: int) -> dict[str, str]:
    """Seeded patient -> split; `patients` has `patient_id` and `positive` (any positive image).

    Positive and negative patients are shuffled and cut separately by the cumulative fractions,
    so each split receives its share of positive patients.
    """
    rng = np.random.default_rng(seed)
    names = list(fractions)
    bounds = np.cumsum([fractions[k] for k in names])
    bounds = bounds / bounds[-1]
    out: dict[str, str] = {}
    for positive in (True, False):
        ids = np.array(sorted(patients.loc[patients["positive"] == positive, "patient_id"]), dtype=object)
        ids = ids[rng.permutation(len(ids))]
        cuts = np.round(bounds * len(ids)).astype(int)
        start = 0
        for name, stop in zip(names, cuts):
            out.update((pid, name) for pid in ids[start:stop])
            start = stop
    return out


def patient_table(m: pd.DataFrame) -> pd.DataFrame:
    return m.groupby("patient_id", sort=True)["pneumonia"].max().gt(0).rename("positive").reset_index()


def read_list(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip()}


def choose(m: pd.DataFrame, source: dict, params: dict, seed: int, fractions: dict) -> tuple[pd.Series, str, list, dict]:
    """(split per manifest row, method, dep files, left-out counts by reason)."""
    left_out: dict[str, int] = {}
    given = m["split"].fillna("").astype(str)
    if len(m) and given.isin(SPLITS).all():
        return given, "source_split_column", [], left_out
    lists = source.get("official_split_list_files") or {}
    if params.get("use_official_lists", True) and lists.get("train_val") and lists.get("test"):
        train_val, test = read_list(lists["train_val"]), read_list(lists["test"])
        split = pd.Series("", index=m.index)
        split[m["image_id"].isin(test)] = "test"
        in_tv = m["image_id"].isin(train_val) & (split == "")
        tv = {k: fractions[k] for k in ("train", "val")}
        tv_assign = assign_patients(patient_table(m[in_tv]), tv, seed)
        split[in_tv] = m.loc[in_tv, "patient_id"].map(tv_assign)
        if (split == "").any():
            left_out["not in either official list"] = int((split == "").sum())
        return split, "official_lists", [lists["train_val"], lists["test"]], left_out
    assign = assign_patients(patient_table(m), fractions, seed)
    return m["patient_id"].map(assign), "patient_stratified_random", [], left_out


def summary(s: pd.DataFrame) -> dict:
    out = {}
    for name in SPLITS:
        part = s[s["split"] == name]
        images, pos = int(len(part)), int(part["pneumonia"].sum())
        if images == 0:
            raise SplitError(f"split {name!r} is empty; change split.seed/split.fractions or add data")
        if pos == 0 or pos == images:
            kind = "positive" if pos == 0 else "negative"
            raise SplitError(f"split {name!r} has no {kind} image ({images} images); change split.seed or "
                             "split.fractions, or add data with both classes")
        out[name] = {"images": images, "patients": int(part["patient_id"].nunique()),
                     "pneumonia_images": pos, "prevalence": pos / images}
    return out


def validation_adequacy(kept: pd.DataFrame, params: dict) -> dict:
    """Counts of the val split (images and patients by class) against the pre-specified minimums.

    The minimums are counted in images, the unit the threshold and the validation AUC are computed
    on; patients are counted beside them. Raises InadequateValidation below a minimum unless
    `allow_inadequate_val`.
    """
    p = {**ADEQUACY_DEFAULTS, **{k: params[k] for k in ADEQUACY_DEFAULTS if k in params}}
    val = kept[kept["split"] == "val"]
    pos, neg = val[val["pneumonia"] == 1], val[val["pneumonia"] != 1]
    out = {"unit": "images", "positives": int(len(pos)), "negatives": int(len(neg)),
           "positive_patients": int(pos["patient_id"].nunique()),
           "negative_patients": int(neg["patient_id"].nunique()),
           "min_positives": int(p["min_val_positives"]), "min_negatives": int(p["min_val_negatives"]),
           "allow_inadequate": bool(p["allow_inadequate_val"])}
    short = [f"{out[k]} {what} images (minimum split.{key} {out['min_' + k]})"
             for k, what, key in (("positives", "pneumonia", "min_val_positives"),
                                  ("negatives", "non-pneumonia", "min_val_negatives"))
             if out[k] < out["min_" + k]]
    out["adequate"] = not short
    if short:
        held = (f"the validation split holds {' and '.join(short)}, from {out['positive_patients']} pneumonia "
                f"and {out['negative_patients']} non-pneumonia patients")
        if not out["allow_inadequate"]:
            raise InadequateValidation(
                f"{held}: too few to early-stop, select a model or choose the operating point on; use a larger "
                "cohort or a split that puts more cases in val (split.fractions, split.seed), or set "
                "split.allow_inadequate_val: true to proceed with the operating point marked not estimable "
                "from the data")
        out["reason"] = (f"{held}; the run proceeds because split.allow_inadequate_val is true: training keeps "
                         "the last epoch without early stopping and the operating point is not estimable from "
                         "the data")
    return out


def run(out_dir: str | Path, params: dict) -> dict:
    out_dir = Path(out_dir)
    seed, fractions = check_params(params)
    cohort = read_record(out_dir, "cohort.manifest")
    manifest_path = layout.manifest(out_dir)
    m = read_manifest(manifest_path)
    left_out: dict[str, int] = {}
    has_pixels = m["path"] != ""
    if has_pixels.any() and not has_pixels.all():
        left_out["no image file (empty path)"] = int((~has_pixels).sum())
        m = m[has_pixels].reset_index(drop=True)
    exists = np.fromiter((p == "" or os.path.isfile(p) for p in m["path"]), dtype=bool, count=len(m))
    if not exists.all():
        left_out["image file missing (path given, no file)"] = int((~exists).sum())
        m = m[exists].reset_index(drop=True)
    split, method, list_files, more = choose(m, cohort["data"]["source"], params, seed, fractions)
    left_out.update(more)
    m = m.assign(split=split.fillna(""))
    kept = m[m["split"].isin(SPLITS)]
    per_patient = kept.groupby("patient_id")["split"].nunique()
    leaking = per_patient[per_patient > 1]
    if len(leaking) and method == "source_split_column":
        raise SplitError(f"{cohort['data']['source']['label_file']}: the split column puts patient "
                         f"{leaking.index[0]!r} in more than one split; keep each patient's images in one split")
    if len(leaking):
        raise SplitError(f"official lists {', '.join(list_files)} put {len(leaking)} patient(s) (e.g. "
                         f"{leaking.index[0]!r}) in both train_val and test; use the unmodified NIH lists "
                         "or set split.use_official_lists: false")
    splits = {"method": method, "seed": seed, "fractions": fractions, "splits": summary(kept),
              "leakage": {"patients_in_more_than_one_split": int(len(leaking)), "passed": len(leaking) == 0},
              "validation_adequacy": validation_adequacy(kept, params),
              "rows_split": int(len(kept)),
              "rows_left_out": [{"reason": k, "n": v} for k, v in left_out.items()]}
    path = layout.splits(out_dir)
    atomic.write_text(path, kept[["image_id", "patient_id", "split"]].to_csv(index=False, lineterminator="\n"))
    return write_record(out_dir, RECORD_ID, data=splits, params=params,
                        deps=[manifest_path, *list_files], dep_records=["cohort.manifest"],
                        outs=[path])


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m eda.split", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "split")),
        summary=lambda record, a: "split ({}): ".format(record["data"]["method"]) + ", ".join(
            f"{k} {v['images']} images/{v['patients']} patients" for k, v in record["data"]["splits"].items())
        + _adequacy_line(record["data"]["validation_adequacy"]))


def _adequacy_line(v: dict) -> str:
    line = f"; val {v['positives']} positive/{v['negatives']} negative images"
    return line + (" (adequate)" if v["adequate"] else " (below the pre-specified minimum; allowed)")


if __name__ == "__main__":
    sys.exit(main())
