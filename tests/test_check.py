"""python -m submission.check on hand-made documents (no rendering)."""
import json

import pytest

from evidence.canonical import sha256_bytes
from submission.check import check, main, required_sections, untraced_numbers
from submission.render import load_facts

pytestmark = pytest.mark.verifies("SRS-030", "SRS-031")


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


def test_british_spellings_are_found_as_whole_words_only():
    from submission.check import identifier_problems
    found = identifier_problems("The device analyses paediatric images; oedema and labelling.\n"
                                "Colour-coded, the Optimiser prioritises.\n")
    words = sorted(f.split("'")[1].lower() for f in found if f.startswith("British"))
    assert words == ["colour", "labelling", "oedema", "optimiser", "paediatric", "prioritises"]
    # 'analyses' is also the US plural noun; word boundaries keep 'centred' out of 'decentredness'
    assert identifier_problems("The analyses were analyzed, labeled and prioritized.\n") == []
    assert identifier_problems("Stratified by acentrelike codes.\n") == []


def test_operators_and_identifiers_in_the_text_but_not_in_code_file_names_or_record_ids():
    from submission.check import identifier_problems
    bad = identifier_problems("positive when score \\>= threshold; observed ci\\_low \\<= 0.8 of small\\_cnn\n")
    assert [f.split("'")[1] for f in bad] == [">=", "<=", "ci_low", "small_cnn"]
    assert all("line 1:" in f for f in bad)
    fine = ("Record `validation.plan_lock` and validation.plan\\_lock, file validation\\_plan.pdf, "
            "`python -m submission --document heldout_report`, workflow/dicom/control\\_age\\_child.dcm, "
            "[the plan](validation_plan.md), <https://example.org/a_b?x>=1>, on x86\\_64 Linux.\n"
            "| `a >= b` | 12 |\n")
    assert identifier_problems(fine) == []


def test_cli_fails_a_document_with_a_raw_token(tmp_path, capsys):
    _write(tmp_path, "# T\n\nThe bound ci\\_low is \\>= the goal, as the optimiser says.\n", [])
    assert main(["--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "'ci_low'" in out and "'>='" in out and "'optimiser'" in out
