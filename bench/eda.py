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
from eda.sources import nih

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LABEL_FILE = REPO.parent / "shared" / "data" / "nih" / "metadata" / "Data_Entry_2017_v2020.csv.gz"
GOAL_RATIO = 10.0


def manifest_from_label_file(path: str | Path) -> pd.DataFrame:
    """The manifest the NIH adapter makes of a label file (any release), with the default
    `cohort.nih.max_age_years`: no image paths, no splits."""
    max_age_years, _ = nih.check_params({})
    return nih.read_label_file(path, max_age_years=max_age_years)[0]


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
