"""One PDF render per session: headings, banner, attribution and page furniture in the text."""
from pathlib import Path

import pytest

from submission.__main__ import main as submission_main
from submission.render import load_facts
from test_render_evidence import build_run

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def pdf_run(tmp_path_factory):
    out = build_run(tmp_path_factory.mktemp("pdf"), source="nih", pdf=True)
    assert submission_main(["--out", str(out), "--params", str(REPO / "params.yaml")]) == 0
    return out


def _text(path: Path) -> str:
    """Text of every page, pages separated by form feeds (as pdftotext does)."""
    from pypdf import PdfReader

    return "\f".join(page.extract_text() or "" for page in PdfReader(path).pages)


@pytest.mark.parametrize("name", ["validation_plan", "510k_submission", "software_documentation", "risk_management"])
def test_pdf_has_every_required_heading(pdf_run, name):
    text = " ".join(_text(pdf_run / "submission" / f"{name}.pdf").split())
    required = load_facts()["required_sections"][0][name]["sections"]
    missing = [h for h in required if h not in text]
    assert missing == []
    assert "Contents" in text and "Page" in text


def test_banner_on_every_page_and_nih_attribution(pdf_run):
    raw = _text(pdf_run / "submission" / "510k_submission.pdf")
    pages = [p for p in raw.split("\f") if p.strip()]
    assert len(pages) > 3
    assert all("DEMONSTRATION" in p and "PneumoTriage CXR" in p for p in pages)
    flat = " ".join(raw.split())
    assert "https://nihcc.app.box.com/v/ChestXray-NIHCC" in "".join(raw.split())
    assert "NIH Clinical Center" in flat and "CVPR 2017" in flat
    assert "Figure 1." in flat


@pytest.mark.parametrize("name", ["validation_plan", "510k_submission", "traceability"])
def test_pdf_has_an_outline_from_its_headings_and_a_title(pdf_run, name):
    from pypdf import PdfReader

    reader = PdfReader(pdf_run / "submission" / f"{name}.pdf")

    def titles(outline):
        for item in outline:
            yield from titles(item) if isinstance(item, list) else [item.title]

    marks = list(titles(reader.outline))
    md = (pdf_run / "submission" / f"{name}.md").read_text()
    heading = md.splitlines()[0].lstrip("# ").strip()
    assert reader.metadata.title and heading in reader.metadata.title
    assert marks[0] == heading
    if name != "traceability":
        required = load_facts()["required_sections"][0][name]["sections"]
        assert [h for h in required if h not in marks] == []
    else:  # one bookmark per record
        assert "validation.test" in marks and "training.run" in marks
