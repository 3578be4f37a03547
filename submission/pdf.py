"""HTML -> PDF with WeasyPrint; figures are read from disk relative to the submission folder."""
from __future__ import annotations

import logging
from pathlib import Path

from evidence import atomic


def write_pdf(html_text: str, path: str | Path, *, base_url: str | Path, title: str | None = None) -> Path:
    """Render `html_text` to `path` atomically; relative image paths resolve from `base_url`;
    `title`, when given, is the PDF's title metadata (else the HTML page title)."""
    from weasyprint import HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    document = HTML(string=html_text, base_url=str(Path(base_url).resolve()) + "/").render()
    if title:
        document.metadata.title = title
    pdf = document.write_pdf()
    return atomic.write_bytes(path, pdf)
