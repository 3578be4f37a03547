"""Benchmark: the EDA computations on the full NIH label file versus a bare `pandas.read_csv`.

`python -m bench.eda [LABEL_FILE]` prints one line; `main()` returns the timings and the ratio
(goal: the EDA at most 10x the bare read).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from eda import dataset, quality

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LABEL_FILE = REPO.parent / "shared" / "data" / "nih" / "metadata" / "Data_Entry_2017_v2020.csv.gz"
GOAL_RATIO = 10.0


def manifest_from_label_file(path: str | Path) -> pd.DataFrame:
    """A manifest-shaped frame built from an NIH label file (2020 or Kaggle 2017 layout), vectorised.

    A stand-in for the cohort stage when measuring or testing the EDA on the label file alone:
    no image paths, no splits, numeric ages as given.
    """
    raw = pd.read_csv(path)
    cols = list(raw.columns)
    if cols[:7] != ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                    "Patient Gender", "View Position"]:
        raise ValueError(f"{path}: columns {cols[:7]} are not an NIH Data_Entry label file")
    labels = raw["Finding Labels"].astype(str)
    return pd.DataFrame({
        "image_id": raw["Image Index"].astype(str),
        "path": "",
        "patient_id": raw["Patient ID"].astype(str),
        "pneumonia": labels.str.contains("Pneumonia", regex=False).astype(int),
        "finding_labels": labels,
        "age_years": pd.to_numeric(raw["Patient Age"], errors="coerce").astype(float),
        "sex": raw["Patient Gender"].astype(str),
        "view": raw["View Position"].astype(str),
        "follow_up": raw["Follow-up #"].astype(float),
        "source": "nih",
        "split": "",
        "orig_width": raw.iloc[:, 7].astype(float),
        "orig_height": raw.iloc[:, 8].astype(float),
        "pixel_spacing": raw.iloc[:, 9].astype(float),
    })


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(label_file: str | Path | None = None, repeats: int = 3) -> dict:
    label_file = Path(label_file or DEFAULT_LABEL_FILE)
    manifest = manifest_from_label_file(label_file)

    def eda() -> None:
        frame = dataset.check_manifest(manifest)
        dataset.describe(frame, None)
        quality.patient_consistency(frame)
        quality.label_consistency(frame)

    read_s = _best_of(lambda: pd.read_csv(label_file), repeats)
    eda_s = _best_of(eda, repeats)
    result = {"rows": len(manifest), "read_csv_s": read_s, "eda_s": eda_s, "ratio": eda_s / read_s,
              "goal_ratio": GOAL_RATIO, "meets_goal": eda_s / read_s <= GOAL_RATIO}
    print(f"bench.eda: {result['rows']} rows, read_csv {read_s:.3f}s, eda {eda_s:.3f}s, "
          f"ratio {result['ratio']:.1f}x (goal <= {GOAL_RATIO:.0f}x)")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
