"""Write a rendered document (Markdown, HTML, PDF and the auditor edition) and its traces."""
from __future__ import annotations

import json
from pathlib import Path

from evidence import atomic, layout
from evidence.canonical import sha256_bytes

from .markup import to_html
from .pdf import write_pdf
from .render import Rendered, Renderer


def write_document(rendered: Rendered, folder: Path, renderer: Renderer, *, pdf: bool = True,
                   title: str = "") -> list[Path]:
    """Write NAME.{md,html,pdf} and NAME_auditor.{md,html,pdf}; return the paths. `title` (the
    registry's, submission/data/required_sections.yml) is the HTML title and PDF title metadata."""
    device = renderer.fact("device")
    facts = device.value
    written = []
    for suffix, text, edition in ((
            "", rendered.plain, ""),
            ("_auditor", rendered.auditor, "Auditor edition: every number is followed by its evidence record and short sha256")):
        stem = folder / f"{rendered.name}{suffix}"
        page_title = f"{title} ({edition.split(':')[0].lower()})" if title and edition else title
        page = to_html(text, device=str(facts.get("name", "")), version=str(facts.get("version", "")),
                       manufacturer=str(facts.get("manufacturer", "")), synthetic=renderer.synthetic(),
                       edition=edition, title=page_title)
        written.append(atomic.write_text(stem.with_suffix(".md"), text))
        written.append(atomic.write_text(stem.with_suffix(".html"), page))
        if pdf:
            written.append(write_pdf(page, stem.with_suffix(".pdf"), base_url=folder, title=page_title or None))
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
