"""python -m submission --out OUT --params PARAMS [--document NAME ...] [--no-pdf]

Renders the validation plan first (and records it, `submission.plan`, before the submission is
rendered), then the 510(k) submission; each as Markdown, HTML and PDF plus an auditor edition,
and `OUT/submission/traceability.json`; `submission.documents` is signed as it is written, with
the key of params `submission.signing` (the local demo key when none is set). `--document NAME` renders `templates/NAME.md.j2`
against the records of OUT instead (e.g. a held-out report in OUT/heldout/<name>).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from evidence import atomic, layout, signing, write_record
from evidence.canonical import sha256_bytes
from evidence.cli import stage_main
from evidence.params import section
from evidence.errors import ToolkitError

from . import flowchart
from .markup import to_html
from .pdf import write_pdf
from .render import Rendered, Renderer

PLAN, SUBMISSION = "validation_plan", "510k_submission"
FLOWCHART = "device_flowchart.png"


class SubmissionError(ToolkitError):
    pass


def write_document(rendered: Rendered, folder: Path, renderer: Renderer, *, pdf: bool = True) -> list[Path]:
    """Write NAME.{md,html,pdf} and NAME_auditor.{md,html,pdf}; return the paths."""
    device = renderer.fact("device")
    facts = device.value
    written = []
    for suffix, text, edition in ((
            "", rendered.plain, ""),
            ("_auditor", rendered.auditor, "Auditor edition: every number is followed by its evidence record and short sha256")):
        stem = folder / f"{rendered.name}{suffix}"
        page = to_html(text, device=str(facts.get("name", "")), version=str(facts.get("version", "")),
                       manufacturer=str(facts.get("manufacturer", "")), synthetic=renderer.synthetic(),
                       edition=edition)
        written.append(atomic.write_text(stem.with_suffix(".md"), text))
        written.append(atomic.write_text(stem.with_suffix(".html"), page))
        if pdf:
            written.append(write_pdf(page, stem.with_suffix(".pdf"), base_url=folder))
    return written


def update_traceability(folder: Path, rendered: list[Rendered], renderer: Renderer) -> Path:
    """Merge the traces of the documents rendered now into traceability.json."""
    path = folder / layout.TRACEABILITY
    doc = {"documents": {}}
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            doc = {"documents": {}}
    for r in rendered:
        doc["documents"][r.name] = {
            "markdown": f"{r.name}.md",
            "markdown_sha256": sha256_bytes(r.plain.encode("utf-8")),
            "records": r.records,
            "figures": r.figures,
            "synthetic": renderer.synthetic(),
            "nih": renderer.nih_source(),
            "traces": r.traces,
        }
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic.write_text(path, text)


def plan_data(renderer: Renderer, files: list[Path]) -> dict:
    """Acceptance criteria (copied from `validation.acceptance`), the Buderer sample size and the
    names of the plan's files as written."""
    store = renderer.store
    if store.has("validation.acceptance"):
        raw = store.data("validation.acceptance").get("criteria", [])
        keys = ("metric", "bound", "op", "value", "method")
        criteria = [{k: c[k] for k in keys if c.get(k) is not None} for c in raw]
        source = "validation.acceptance"
    else:
        criteria, source = [], "none"
    if store.has("validation.sample_size"):
        sample = store.data("validation.sample_size")
    else:
        sample = {"estimable": False, "reason": "no validation.sample_size record in this run"}
    return {"acceptance_criteria": criteria, "acceptance_source": source, "sample_size": sample,
            "documents": [Path(f).name for f in files]}


def run(out: str | Path, params: dict, *, documents: list[str] | None = None, pdf: bool = True) -> list[dict]:
    out = Path(out)
    folder = layout.submission(out)
    if not layout.evidence(out).is_dir():
        raise SubmissionError(f"no evidence folder at {layout.evidence(out)} (run the stages first: make validate workflow)")
    signing.check_config(out, params.get("signing"))
    chart = flowchart.draw(folder / FLOWCHART)
    renderer = Renderer(out, extra_figures={"flowchart": chart})
    records = []
    if documents:
        done = []
        for name in documents:
            rendered = renderer.render(name)
            done.append((rendered, write_document(rendered, folder, renderer, pdf=pdf)))
        trace = update_traceability(folder, [r for r, _ in done], renderer)
        for rendered, written in done:
            records.append(write_record(
                out, f"submission.{rendered.name}", params=params,
                data={"document": rendered.name, "traces": len(rendered.traces)},
                dep_records=rendered.records, outs=[chart, *written, trace]))
        return records

    plan = renderer.render(PLAN)
    plan_files = write_document(plan, folder, renderer, pdf=pdf)
    records.append(write_record(
        out, "submission.plan", params=params, data=plan_data(renderer, plan_files),
        dep_records=plan.records, outs=[chart, *plan_files]))
    main_doc = renderer.render(SUBMISSION)
    main_files = write_document(main_doc, folder, renderer, pdf=pdf)
    trace = update_traceability(folder, [plan, main_doc], renderer)
    deps = sorted(set(plan.records) | set(main_doc.records) | {"submission.plan"})
    records.append(write_record(
        out, "submission.documents", params=params,
        data={"documents": [PLAN, SUBMISSION],
              "traces": {PLAN: len(plan.traces), SUBMISSION: len(main_doc.traces)}},
        dep_records=deps, outs=[chart, *plan_files, *main_files, trace], sign=params.get("signing", {})))
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
        call=lambda a: run(a.out, section(a.params, "submission"), documents=a.document, pdf=not a.no_pdf),
        summary=lambda records, a: "submission: wrote " + ", ".join(
            f"{r['id']} ({len(r['outs'])} files)" for r in records))


if __name__ == "__main__":
    sys.exit(main())
