"""`python -m eda --out OUT --params PARAMS`: the EDA records eda.dataset, eda.pixels, eda.quality
and eda.ground_truth, with their figures under OUT/figures/eda_*.png.

Everything is computed first; figures and records are written only when all of it succeeded
(each file atomically, each record after its figures).
"""
from __future__ import annotations

import sys
from pathlib import Path

from evidence import layout, read_record, write_record
from evidence.params import section
from evidence.cli import stage_main
from evidence.manifest import read_manifest, read_splits

from . import dataset, figures, ground_truth, pixels, quality

DEP_RECORDS = ("cohort.manifest", "split.patients")
DEFAULTS = {"pixel_seed": 0, "max_age_span_years": quality.DEFAULT_MAX_AGE_SPAN_YEARS, "ci_level": 0.95}


def check_params(params: dict) -> dict:
    """The eda section (checked by evidence.params) with defaults filled in."""
    return {**DEFAULTS, **params}


def run(out: str | Path, params: dict) -> dict[str, dict]:
    """Compute and write the four EDA records; return them by id."""
    out = Path(out)
    params = check_params(params)
    cohort = read_record(out, "cohort.manifest")
    read_record(out, "split.patients")
    manifest_path, splits_path = layout.manifest(out), layout.splits(out)
    manifest = read_manifest(manifest_path)
    splits = read_splits(splits_path)
    frame = dataset.with_splits(manifest, splits)
    matrix = dataset.finding_matrix(frame["finding_labels"])
    source = cohort["data"].get("source", {})

    dataset_data, dataset_fig = dataset.describe(frame, matrix=matrix, level=params["ci_level"])
    pixel_data, pixel_quality, pixel_fig = pixels.analyse(frame, params["pixel_sample_max"], params["pixel_seed"])
    quality_data = quality.assess(frame, cohort["data"].get("quality_findings", []), pixel_quality,
                                  params["max_age_span_years"], matrix)
    truth_data, truth_files = ground_truth.assess(manifest, source, params["ci_level"])

    fig_dir = layout.figures(out)
    dataset_outs = [
        figures.age_by_class(dataset_fig["age_by_class"], fig_dir / "eda_age_by_class.png"),
        figures.view_by_class(dataset_fig["view_by_class"], fig_dir / "eda_view_by_class.png"),
        figures.cooccurrence(dataset_fig["cooccurrence"], fig_dir / "eda_cooccurrence_pneumonia.png"),
        figures.images_per_patient(dataset_fig["images_per_patient"], fig_dir / "eda_images_per_patient.png"),
    ]
    pixel_outs = ([figures.pixel_intensity(pixel_fig["edges"], pixel_fig["hist"], pixel_fig["images"],
                                           fig_dir / "eda_pixel_intensity.png")] if pixel_fig else [])

    common = {"params": params, "deps": [manifest_path, splits_path],
              "dep_records": DEP_RECORDS}
    records = {
        "eda.dataset": write_record(out, "eda.dataset", data=dataset_data, outs=dataset_outs, **common),
        "eda.pixels": write_record(out, "eda.pixels", data=pixel_data, outs=pixel_outs, **common),
        "eda.quality": write_record(out, "eda.quality", data=quality_data, **common),
    }
    truth_common = {**common, "deps": common["deps"] + truth_files}
    records["eda.ground_truth"] = write_record(out, "eda.ground_truth", data=truth_data, **truth_common)
    return records


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m eda", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "eda")),
        summary=lambda records, a: (f"eda: {len(records)} records in {layout.evidence(a.out)}; "
                                    f"{len(records['eda.quality']['data']['findings'])} data-quality findings"))


if __name__ == "__main__":
    sys.exit(main())
