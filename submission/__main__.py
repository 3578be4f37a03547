"""python -m submission --out OUT --params PARAMS [--document NAME ...] [--no-pdf]

Renders every document of the registry (`submission/data/required_sections.yml`) marked
`in_submission` (Markdown, HTML, PDF and an auditor edition each) from the records of the run, test
results included: the eSTAR index, the administrative documents, the 510(k) submission and the
others the registry lists. Writes `OUT/submission/traceability.json` with the traces of every
document and of the validation plan, and `traceability.{md,html,pdf}`, the same traces by record, then record `submission.documents`, signed as it is written
with the key of params `submission.signing` (the local demo key when none is set). The plan itself
is rendered and locked earlier, before any test-split score, by `python -m submission.plan`; this
stage renders it again in memory only for its traces and refuses when it no longer matches the
locked Markdown. `--document NAME` renders `templates/NAME.md.j2` against the records of OUT
instead (e.g. a held-out report in OUT/heldout/<name>).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from evidence import layout, signing, write_record
from evidence.canonical import sha256_bytes
from evidence.cli import stage_main
from evidence.params import section
from evidence.errors import ToolkitError
from evidence.prespecified import LOCK, PLAN as PLAN_RECORD
from evidence.provenance import relative_to_run, resolve_run_path

from . import architecture, flowchart, model_card, threat_model
from .documents import update_traceability, write_document, write_traceability
from .plan import PLAN
from .registry import registry, submission_documents
from .render import Rendered, Renderer

FLOWCHART = "device_flowchart.png"
DATA_FLOW = "data_flow.png"
ARCHITECTURE = "software_architecture.png"


class SubmissionError(ToolkitError):
    pass


def locked_plan(out: Path, renderer: Renderer) -> tuple[Rendered, list[Path]]:
    """The validation plan rendered again, for its traces, and the plan files the lock lists; the
    Markdown must be the one locked (the plan's records are unchanged since the lock)."""
    lock = renderer.store.get(LOCK)
    files = [resolve_run_path(f["path"], out) for f in lock["data"]["plan_files"]]
    plan = renderer.render(PLAN)
    markdown = {f["path"]: f["sha256"] for f in lock["data"]["plan_files"]}
    locked = markdown.get(relative_to_run(layout.submission(out) / f"{PLAN}.md", out))
    found = sha256_bytes(plan.plain.encode("utf-8"))
    if found != locked:
        raise SubmissionError(f"{PLAN}.md: renders as sha256 {found}, the locked plan is {locked} (record {LOCK}); "
                              "a record it cites changed after the lock: lock the plan again (make plan)")
    return plan, files


def run(out: str | Path, params: dict, *, documents: list[str] | None = None, pdf: bool = True) -> list[dict]:
    out = Path(out)
    folder = layout.submission(out)
    if not layout.evidence(out).is_dir():
        raise SubmissionError(f"no evidence folder at {layout.evidence(out)} (run the stages first: make validate workflow)")
    signing.check_config(out, params.get("signing"))
    chart = flowchart.draw(folder / FLOWCHART)
    data_flow = threat_model.draw(folder / DATA_FLOW, threat_model.load())
    arch = architecture.draw(folder / ARCHITECTURE)
    renderer = Renderer(out, extra_figures={"flowchart": chart, "data_flow": data_flow, "architecture": arch})
    records = []
    docs = registry()
    if documents:
        done = []
        for name in documents:
            rendered = renderer.render(name)
            title = docs[name].title if name in docs else ""
            done.append((rendered, write_document(rendered, folder, renderer, pdf=pdf, title=title)))
        trace = update_traceability(folder, [r for r, _ in done], renderer)
        table = write_traceability(folder, renderer, pdf=pdf)
        for rendered, written in done:
            records.append(write_record(
                out, f"submission.{rendered.name}", params=params,
                data={"document": rendered.name, "traces": len(rendered.traces)},
                dep_records=rendered.records, outs=[chart, data_flow, arch, *written, trace, *table]))
        return records

    plan, plan_files = locked_plan(out, renderer)
    rendered, files = [], []
    for doc in submission_documents(docs):
        one = renderer.render(doc.name)
        rendered.append(one)
        files += write_document(one, folder, renderer, pdf=pdf, title=doc.title)
    files.append(model_card.write(out, folder))
    trace = update_traceability(folder, [plan, *rendered], renderer)
    table = write_traceability(folder, renderer, pdf=pdf)
    deps = sorted(set(plan.records).union(*(r.records for r in rendered)) | {PLAN_RECORD, LOCK})
    records.append(write_record(
        out, "submission.documents", params=params,
        data={"documents": [PLAN, *(r.name for r in rendered)],
              "titles": {d.name: d.title for d in docs.values() if d.in_submission},
              "traces": {r.name: len(r.traces) for r in (plan, *rendered)}},
        dep_records=deps, deps=plan_files, outs=[chart, data_flow, arch, *files, trace, *table], sign=params.get("signing", {})))
    return records


def _document_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise argparse.ArgumentTypeError(f"{name!r}: use the template's base name, e.g. heldout_report")
    return name


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--document", action="append", metavar="NAME", type=_document_name,
                        help="render templates/NAME.md.j2 only (repeatable)")
    parser.add_argument("--no-pdf", action="store_true", help="skip the PDF files (quick previews)")


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m submission", doc=__doc__, add_arguments=_arguments,
        call=lambda a: run(a.out, (p := section(a.params, "submission")), documents=a.document,
                           pdf=not a.no_pdf and p.get("pdf", True)),
        summary=lambda records, a: "submission: wrote " + ", ".join(
            f"{r['id']} ({len(r['outs'])} files)" for r in records))


if __name__ == "__main__":
    sys.exit(main())
