"""Score the test images after the validation plan is locked: `python -m model.score_test --out OUT --params PARAMS`.

Refuses to run unless record `validation.plan_lock` exists and the plan files still match its
hashes (`evidence.prespecified.require_lock`): no test-split score exists before the plan that
judges it is locked. Scores as `model.predict` does (same model checks, same decoding) and writes
`OUT/predictions/test.csv` and the record `model.test_predictions`, which depends on the lock
(docs/records/model.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

from evidence.cli import stage_main
from evidence.params import section
from evidence.prespecified import LOCK, SCORES, require_lock

from .predict import score_split


def run(out_dir: str | Path, params: dict) -> dict:
    out_dir = Path(out_dir)
    require_lock(out_dir)
    return score_split(out_dir, params, "test", SCORES, ["training.run", LOCK])


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m model.score_test", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "train")),
        summary=lambda record, a: (f"score_test: test {record['data']['test']['n_images']} images scored "
                                   f"under plan lock {record['deps']['records'][-1]['sha256'][:12]}"))


if __name__ == "__main__":
    sys.exit(main())
