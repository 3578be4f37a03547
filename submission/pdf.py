"""HTML -> PDF with WeasyPrint; figures are read from disk relative to the submission folder.

The PDF has an outline (bookmarks) from the headings (`bookmark-level` in templates/pdf.css, which
WeasyPrint applies to h1-h6 by default), the document title as its metadata title, and is written
as PDF/A-3b (`PDF_VARIANT`), an archival variant with embedded fonts and an output intent.
"""
from __future__ import annotations

import logging
from pathlib import Path

from evidence import atomic

PDF_VARIANT = "pdf/a-3b"


def write_pdf(html_text: str, path: str | Path, *, base_url: str | Path, title: str | None = None) -> Path:
    """Render `html_text` to `path` atomically; relative image paths resolve from `base_url`.
    `title`: the PDF's title metadata (default: the HTML <title>)."""
    from weasyprint import HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    document = HTML(string=html_text, base_url=str(Path(base_url).resolve()) + "/").render()
    if title:
        document.metadata.title = title
    pdf = document.write_pdf(pdf_variant=PDF_VARIANT)
    return atomic.write_bytes(path, pdf)
