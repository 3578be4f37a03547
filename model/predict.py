"""Score the validation images: `python -m model.predict --out OUT --params PARAMS`.

Uses the best model and its stored preprocessing spec (`model.train.load_model`; both must match the
sha256 recorded by `training.run`, `model.infer.trained_sha256`) and the same
tf.data decoding as training, without augmentation. Writes `OUT/predictions/val.csv`
(`image_id, patient_id, label, score`; score = predicted probability of pneumonia) and the record
`model.predictions` (docs/records/model.md). The test split is scored by `model.score_test`, only
after the validation plan is locked.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

import evidence
from evidence import console, layout
from evidence.params import section
from evidence.cli import stage_main

from . import data
from .infer import MODEL_FILE, SPEC_FILE, trained_sha256
from .train import DEFAULTS, load_model

def score_rows(model, spec, rows: pd.DataFrame, batch_size: int, label: str = "") -> np.ndarray:
    """Predicted probabilities in row order; an undecodable file raises DataError naming it.
    Progress (`label`, images scored) goes to stderr for long splits."""
    from .callbacks import PredictProgress
    from .tf import tf

    ds = data.eval_dataset(rows, spec, batch_size, cache=None)
    progress = PredictProgress(console.Progress(f"predict {label}", len(rows)), batch_size)
    try:
        scores = model.predict(ds, verbose=0, callbacks=[progress]).reshape(-1)
    except tf.errors.OpError:
        bad = data.find_unreadable(rows)
        if bad:
            raise data.DataError(bad) from None
        raise
    if len(scores) != len(rows) or not np.all(np.isfinite(scores)):
        raise data.DataError("model produced missing or non-finite scores; retrain the model")
    return scores.astype(np.float64)


def score_split(out_dir: Path, params: dict, split: str, record_id: str, dep_records: list[str]) -> dict:
    """Score one split with the trained model, write `predictions/<split>.csv`, then the record."""
    batch_size = params.get("batch_size", DEFAULTS["batch_size"])
    model, spec = load_model(out_dir)
    recorded = trained_sha256(out_dir)
    df, info = data.read_cohort(out_dir)
    rows = data.split_rows(df, split)
    data.check_files(rows)
    scores = score_rows(model, spec, rows, batch_size, split)
    table = pd.DataFrame({"image_id": rows["image_id"], "patient_id": rows["patient_id"],
                          "label": rows["label"].astype(int), "score": scores})
    path = layout.predictions(out_dir, split)
    evidence.write_text(path, table.to_csv(index=False, float_format="%.8g"))
    record_data = {split: {"n_images": int(len(rows)), "n_patients": int(rows["patient_id"].nunique()),
                           "n_positive": int(rows["label"].sum()), "score_mean": float(scores.mean())},
                   "model_sha256": recorded[MODEL_FILE], "preprocessing_sha256": recorded[SPEC_FILE],
                   "score": "predicted probability of pneumonia (sigmoid output)",
                   "n_excluded_without_file": info["n_excluded_without_file"]}
    return evidence.write_record(
        out_dir, record_id, data=record_data, params={"batch_size": batch_size},
        deps=[out_dir / MODEL_FILE, out_dir / SPEC_FILE, info["manifest"], info["splits"]],
        dep_records=dep_records, outs=[path])


def run(out_dir: str | Path, params: dict) -> dict:
    return score_split(Path(out_dir), params, "val", "model.predictions", ["training.run"])


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m model.predict", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "train")),
        summary=lambda record, a: f"predict: val {record['data']['val']['n_images']} images scored")


if __name__ == "__main__":
    sys.exit(main())
