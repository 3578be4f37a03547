"""Templates hold no numbers: every number reaches a document through ev() or fact()."""
import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
NUMBER = re.compile(r"(?<![A-Za-z_\d])\d+(?:\.\d+)?")
# Explicit allow-list: the submission type, a filter's decimal places, the columns of a table laid
# out in several (Jinja's batch).
ALLOWED = [re.compile(r"510\(k\)"), re.compile(r"digits=\d"), re.compile(r"\| batch\(\d,")]


def numbers_in(text: str) -> list[str]:
    for pattern in ALLOWED:
        text = pattern.sub(" ", text)
    return NUMBER.findall(text)


def test_lint_catches_a_literal():
    assert numbers_in("sensitivity was {{ 0.91 }} on 120 images") == ["0.91", "120"]
    assert numbers_in("a 510(k), F1 and ChestX-ray14, {{ x | num(digits=4) }}") == []
    assert numbers_in("under 21 CFR 892.2080") == ["21", "892.2080"]


def test_templates_have_no_numeric_literals():
    files = sorted(TEMPLATES.rglob("*.md.j2"))
    assert files
    offenders = [f"{p.relative_to(TEMPLATES)}: {numbers_in(p.read_text())}" for p in files if numbers_in(p.read_text())]
    assert offenders == []
