"""python -m submission.check on hand-made documents (no rendering)."""
import json

from evidence.canonical import sha256_bytes
from submission.check import check, main, required_sections, untraced_numbers
from submission.render import load_facts


def _write(tmp_path, md, traces, synthetic=False, nih=False):
    sub = tmp_path / "submission"
    sub.mkdir(parents=True)
    (sub / "doc.md").write_text(md)
    doc = {"documents": {"doc": {"markdown": "doc.md", "markdown_sha256": sha256_bytes(md.encode()),
                                 "records": [], "figures": [], "synthetic": synthetic, "nih": nih,
                                 "traces": traces}}}
    (sub / "traceability.json").write_text(json.dumps(doc))


def test_untraced_numbers_allow_list_and_word_digits():
    md = "A 510(k) reports F1 on ChestX-ray14: 83.3% of 36."
    left = untraced_numbers(md, [{"text": "83.3%"}])
    assert len(left) == 1 and "'36'" in left[0]
    assert untraced_numbers(md, [{"text": "83.3%"}, {"text": "36"}]) == []
    assert untraced_numbers("under 21 CFR 892.2080", [{"text": "21 CFR 892.2080"}]) == []


def test_a_trace_text_is_not_matched_inside_another_number():
    assert untraced_numbers("value 150", [{"text": "50"}]) != []


def test_required_sections():
    assert required_sections("## Objectives\n## Endpoints\n", ["Objectives", "Sample size"]) == ["Sample size"]


def test_cli_reports_failures(tmp_path, capsys):
    _write(tmp_path, "# T\n\n| a | |\n\nvalue None and 12\n", [], synthetic=True)
    assert main(["--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "'12'" in out and "empty table cell" in out and "'None'" in out and "banner" in out


def test_cli_passes_a_clean_document(tmp_path, capsys):
    _write(tmp_path, "# T\n\nSensitivity 83.3%.\n", [{"text": "83.3%"}])
    assert main(["--out", str(tmp_path)]) == 0


def test_cli_without_documents(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 1
    assert "traceability.json" in capsys.readouterr().out


def test_nih_documents_must_link_the_referenced_download_site(tmp_path):
    link = load_facts()["references"][0]["nih_link"]
    _write(tmp_path / "with", f"# T\n\nDownloaded from <{link}>.\n", [], nih=True)
    _write(tmp_path / "without", "# T\n\nDownloaded from the NIH.\n", [], nih=True)
    assert check(tmp_path / "with") == []
    assert check(tmp_path / "without") == ["doc: NIH data but no link to the NIH download site"]
