"""HTML -> PDF with WeasyPrint; figures are read from disk relative to the submission folder."""
from __future__ import annotations

import logging
from pathlib import Path

from evidence import atomic


def write_pdf(html_text: str, path: str | Path, *, base_url: str | Path) -> Path:
    """Render `html_text` to `path` atomically; relative image paths resolve from `base_url`."""
    from weasyprint import HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    pdf = HTML(string=html_text, base_url=str(Path(base_url).resolve()) + "/").write_pdf()
    return atomic.write_bytes(path, pdf)
