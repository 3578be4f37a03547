"""Write a rendered document (Markdown, HTML, PDF and the auditor edition), its traces
(`traceability.json`) and the trace table laid out by record (`traceability.{md,html,pdf}`)."""
from __future__ import annotations

import json
from pathlib import Path

from evidence import atomic, layout
from evidence.canonical import sha256_bytes

from .markup import to_html
from .pdf import write_pdf
from .markup import BANNER
from .render import Rendered, Renderer, traces_by_record

#: The trace table of every document of the folder, by record (Markdown, HTML, PDF).
TRACE_TABLE = "traceability"
TRACE_TABLE_TITLE = "Traceability of every number"


def _page(text: str, renderer: Renderer, edition: str = "", title: str | None = None) -> str:
    facts = renderer.fact("device").value
    return to_html(text, device=str(facts.get("name", "")), version=str(facts.get("version", "")),
                   manufacturer=str(facts.get("manufacturer", "")), synthetic=renderer.synthetic(),
                   edition=edition, title=title)


def write_document(rendered: Rendered, folder: Path, renderer: Renderer, *, pdf: bool = True,
                   title: str | None = None) -> list[Path]:
    """Write NAME.{md,html,pdf} and NAME_auditor.{md,html,pdf}; return the paths. `title`: the
    document's title for the PDF metadata (default: its first heading)."""
    written = []
    for suffix, text, edition in ((
            "", rendered.plain, ""),
            ("_auditor", rendered.auditor, "Auditor edition: every number is followed by its evidence record and short sha256")):
        stem = folder / f"{rendered.name}{suffix}"
        page_title = f"{title} (auditor edition)" if title and edition else title
        page = _page(text, renderer, edition, page_title)
        written.append(atomic.write_text(stem.with_suffix(".md"), text))
        written.append(atomic.write_text(stem.with_suffix(".html"), page))
        if pdf:
            written.append(write_pdf(page, stem.with_suffix(".pdf"), base_url=folder, title=page_title))
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


def write_traceability(folder: Path, renderer: Renderer, *, pdf: bool = True) -> list[Path]:
    """traceability.{md,html,pdf}: every traced number of every document in traceability.json,
    grouped under its record with the record's full sha256 once; return the paths."""
    doc = json.loads((folder / layout.TRACEABILITY).read_text(encoding="utf-8"))
    traces = [t for name in sorted(doc["documents"]) for t in doc["documents"][name]["traces"]]
    info = renderer.record_info(traces)
    counts = "\n".join(
        f"| {name.replace('_', ' ')} (`{name}.pdf`) | {len([t for t in doc['documents'][name]['traces'] if t['numeric']])} |"
        for name in sorted(doc["documents"]))
    banner = f"> **{BANNER}**\n\n" if renderer.synthetic() else ""
    text = (f"# {TRACE_TABLE_TITLE}\n\n{banner}"
            "Every number printed in the documents of this folder, grouped by the evidence record (or "
            "facts file) it was read from. Each group gives the record's full sha256 once; the auditor "
            "editions cite a record by its id and the first eight hex digits of that hash. "
            "`traceability.json` holds the same traces, machine-readable, and `make audit` checks them.\n\n"
            "| document | numbers printed, with repeats |\n|---|---|\n" + counts + "\n\n"
            + traces_by_record(traces, info, heading="##", documents=True) + "\n")
    stem = folder / TRACE_TABLE
    page = _page(text, renderer, title=TRACE_TABLE_TITLE)
    written = [atomic.write_text(stem.with_suffix(".md"), text), atomic.write_text(stem.with_suffix(".html"), page)]
    if pdf:
        written.append(write_pdf(page, stem.with_suffix(".pdf"), base_url=folder, title=TRACE_TABLE_TITLE))
    return written
