"""The params of the demo builds the tests run: `params.yaml` made small enough for a test."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def small(*, n_patients: int = 80, epochs: int = 2, resamples: int = 200, pdf: bool = False) -> dict:
    """params.yaml with a smaller demo cohort, fewer epochs, fewer bootstrap resamples and one pass
    of the workflow set through the DICOM node for the time-to-notification. A small cohort's val
    split holds fewer cases than the pre-specified minimum: the run is allowed to proceed
    (`split.allow_inadequate_val`), and its documents say the operating point is not estimable.
    PDFs are written only with `pdf=True` (`submission.pdf`): a test that reads no PDF skips the
    slowest part of the documents stage."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["cohort"]["demo"]["n_patients"] = n_patients
    params["split"]["allow_inadequate_val"] = True
    params["train"]["epochs"] = epochs
    params["validate"]["bootstrap_resamples"] = resamples
    params["latency"].update(repeats=1, bootstrap_resamples=resamples)
    params["submission"]["pdf"] = pdf
    return params


def write_small(path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(small(**kwargs), sort_keys=False))
    return path
