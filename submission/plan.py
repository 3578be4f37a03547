"""Render and lock the validation plan: `python -m submission.plan --out OUT --params PARAMS [--locked-by NAME]`.

Renders `templates/validation_plan.md.j2` (Markdown, HTML, PDF and the auditor edition) from records
that exist before any test-split score: the threshold, the pre-specified design
(`validation.design`, `validation.sample_size`), EDA, training and workflow records (the stage
table refuses any other). Then writes record `submission.plan` (the plan files) and record
`validation.plan_lock` (`evidence.prespecified.write_lock`): the plan file hashes, the records it
was rendered from, the `validate` parameters it fixes, `locked_utc` and `locked_by`, signed as it is
written with the key of params `submission.signing`.

`locked_by` is `--locked-by NAME`, else params `submission.locked_by`, else the login name; the
record says which (`locked_by_source`).
"""
from __future__ import annotations

import getpass
import sys
from pathlib import Path

from evidence import layout, signing, write_record
from evidence.cli import stage_main
from evidence.params import section
from evidence.prespecified import LOCK, PLAN as PLAN_RECORD, write_lock

from .documents import write_document
from .registry import registry
from .render import Renderer

PLAN = "validation_plan"


def locked_by(name: str | None, params: dict) -> tuple[str, str]:
    """(who locks the plan, where the name came from)."""
    if name:
        return name, "--locked-by"
    if params.get("locked_by"):
        return params["locked_by"], "params submission.locked_by"
    return getpass.getuser(), "login name (neither --locked-by nor params submission.locked_by given)"


def run(out: str | Path, params: dict, *, by: str | None = None, pdf: bool = True) -> dict[str, dict]:
    out = Path(out)
    name, source = locked_by(by, params)
    signing.check_config(out, params.get("signing"))
    renderer = Renderer(out)
    plan = renderer.render(PLAN)
    files = write_document(plan, layout.submission(out), renderer, pdf=pdf, title=registry()[PLAN].title)
    written = {PLAN_RECORD: write_record(
        out, PLAN_RECORD, params=params, dep_records=plan.records, outs=files,
        data={"document": PLAN, "documents": [f.name for f in files], "traces": len(plan.traces)})}
    written[LOCK] = write_lock(out, params=params, locked_by=name, locked_by_source=source,
                               sign=params.get("signing", {}))
    return written


def _arguments(parser) -> None:
    parser.add_argument("--locked-by", metavar="NAME", help="who locks the plan (default: params "
                        "submission.locked_by, else the login name)")
    parser.add_argument("--no-pdf", action="store_true", help="skip the PDF files (quick previews)")


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m submission.plan", doc=__doc__, add_arguments=_arguments,
        call=lambda a: run(a.out, (p := section(a.params, "submission")), by=a.locked_by,
                           pdf=not a.no_pdf and p.get("pdf", True)),
        summary=lambda w, a: (f"plan: {len(w[PLAN_RECORD]['outs'])} files locked by {w[LOCK]['data']['locked_by']} "
                              f"at {w[LOCK]['data']['locked_utc']} (validation.plan_lock "
                              f"{w[LOCK]['sha256'][:12]})"))


if __name__ == "__main__":
    sys.exit(main())
