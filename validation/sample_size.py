"""The pre-specified design: the held-out sample size (Buderer 1996) and the analysis.

    python -m validation.sample_size --out OUT --params PARAMS

Reads the planned sensitivity, specificity, expected prevalence and CI half-width from params
`validate.sample_size` and writes record `validation.sample_size`; then record `validation.design`
(`validation.design.design`: endpoints, acceptance criteria, analysis methods, CI level, bootstrap
settings, operating-point rule, sample size). It reads no result: the plan rendered from these
records is locked before any test-split score or held-out data exists.
"""
from __future__ import annotations

import sys
from pathlib import Path

from evidence import write_record
from evidence.params import ParamsError, section
from evidence.cli import stage_main

from . import stats
from .design import design as design_data
from .threshold import CI_LEVEL

RECORD_ID, DESIGN_ID = "validation.sample_size", "validation.design"
KEYS = ("sensitivity", "specificity", "prevalence", "half_width")


def check_params(p: dict) -> dict:
    """The planned design (ranges checked by evidence.params); the section must be there."""
    design = p.get("sample_size")
    if design is None:
        raise ParamsError("params validate.sample_size: missing; set sensitivity, specificity, "
                          "prevalence and half_width (e.g. 0.90, 0.90, 0.013, 0.05)")
    return {**{k: float(design[k]) for k in KEYS}, "ci_level": p.get("ci_level", CI_LEVEL)}


def run(out_dir: str | Path, params: dict) -> dict[str, dict]:
    design = check_params(params)
    result = stats.buderer_sample_size(design["sensitivity"], design["specificity"], design["prevalence"],
                                       design["half_width"], level=design["ci_level"])
    data = {"design": design, **result}
    analysis = design_data(params, data)   # checks the whole section before anything is written
    written = {RECORD_ID: write_record(out_dir, RECORD_ID, data=data, params=params, synthetic=False)}
    written[DESIGN_ID] = write_record(out_dir, DESIGN_ID, data=analysis, params=params, synthetic=False)
    return written


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m validation.sample_size", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "validate")),
        summary=lambda written, a: ("validation.sample_size: {positives} positives, {negatives} negatives, "
                                    "{total} in all; design of {n} acceptance criteria".format(
                                        **written[RECORD_ID]["data"],
                                        n=len(written[DESIGN_ID]["data"]["acceptance_criteria"]))))


if __name__ == "__main__":
    sys.exit(main())
