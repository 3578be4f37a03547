"""Benchmark: the EDA computations on the full NIH label file versus a bare `pandas.read_csv`.

The timed calls are those `python -m eda` makes once the manifest is read (the dataset summary,
pixels, data quality and ground truth, with params.yaml's `eda` section), on the manifest the NIH
adapter makes of the label file; no records or figures are written.

`python -m bench.eda [LABEL_FILE]` prints one line; `main()` returns the timings and the ratio
(goal: the EDA at most 10x the bare read).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from eda import dataset, ground_truth, pixels, quality
from eda.__main__ import check_params
from eda.sources import nih
from evidence.manifest import COLUMNS, check_manifest
from evidence.params import section

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LABEL_FILE = REPO.parent / "shared" / "data" / "nih" / "metadata" / "Data_Entry_2017_v2020.csv.gz"
GOAL_RATIO = 10.0


def cohort_from_label_file(path: str | Path) -> tuple[pd.DataFrame, list[dict]]:
    """(manifest, quality findings) the NIH adapter makes of a label file (any release), with the
    default `cohort.nih.max_age_years`: no image paths (so no sha256), no splits."""
    max_age_years, _ = nih.check_params({})
    table, findings = nih.read_label_file(path, max_age_years=max_age_years)
    return table.assign(sha256="")[list(COLUMNS)], findings


def manifest_from_label_file(path: str | Path) -> pd.DataFrame:
    return cohort_from_label_file(path)[0]


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(label_file: str | Path | None = None, repeats: int = 3) -> dict:
    label_file = Path(label_file or DEFAULT_LABEL_FILE)
    manifest, cohort_findings = cohort_from_label_file(label_file)
    params = check_params(section(REPO / "params.yaml", "eda"))
    source = {"kind": "nih", "data_dir": str(label_file.parent), "label_file": str(label_file)}

    def eda() -> None:
        frame = check_manifest(manifest)
        matrix = dataset.finding_matrix(frame["finding_labels"])
        dataset.describe(frame, matrix=matrix, level=params["ci_level"])
        _, pixel_quality, _ = pixels.analyse(frame, params["pixel_sample_max"], params["pixel_seed"])
        quality.assess(frame, cohort_findings, pixel_quality, params["max_age_span_years"], matrix)
        ground_truth.assess(frame, source, params["ci_level"])

    read_s = _best_of(lambda: pd.read_csv(label_file), repeats)
    eda_s = _best_of(eda, repeats)
    result = {"rows": len(manifest), "read_csv_s": read_s, "eda_s": eda_s, "ratio": eda_s / read_s,
              "goal_ratio": GOAL_RATIO, "meets_goal": eda_s / read_s <= GOAL_RATIO}
    print(f"bench.eda: {result['rows']} rows, read_csv {read_s:.3f}s, eda {eda_s:.3f}s, "
          f"ratio {result['ratio']:.1f}x (goal <= {GOAL_RATIO:.0f}x)")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
