"""The submission package: the document registry, the eSTAR sections and index, and the
administrative documents (cover letter, 510(k) Summary, Indications for Use, truthful and accurate
statement, device description) rendered from a run."""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from evidence import Store
from evidence.stages import by_name, out_declared, registry_outs
from submission import registry
from submission.__main__ import main as submission_main
from submission.check import check, package, required_sections
from submission.registry import RegistryError, coverage, parse_estar, parse_registry
from test_render_evidence import build_run

pytestmark = pytest.mark.verifies("SRS-033")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "submission" / "data"
#: the 21 CFR 807.92 elements, each a heading of the 510(k) Summary (REFERENCES.md, "21 CFR 807 in short")
SUMMARY_ELEMENTS = ["Submitter", "Date prepared", "Device names and classification", "Predicate device",
                    "Device description", "Intended use and indications for use",
                    "Technological characteristics compared with the predicate",
                    "Non-clinical performance data", "Clinical performance data", "Conclusion"]
ADMIN = ("estar_index", "cover_letter", "510k_summary", "indications_for_use", "truthful_accurate_statement",
         "device_description")


def _yaml(name: str):
    return yaml.safe_load((DATA / name).read_text(encoding="utf-8"))


def _entry(**over):
    return {"title": "A document", "estar": [6], "in_submission": True, "sections": ["Heading"], **over}


# ---------------------------------------------------------------- the registry and the eSTAR sections

@pytest.mark.parametrize("entry, message", [
    ({k: v for k, v in _entry().items() if k != "title"}, "missing key(s) title"),
    (_entry(extra=1), "unknown key(s) extra"),
    (_entry(title="  "), "title must be non-empty text"),
    (_entry(estar=[0]), "eSTAR section numbers from 1 to 22"),
    (_entry(estar=[23]), "eSTAR section numbers from 1 to 22"),
    (_entry(estar=["6"]), "eSTAR section numbers from 1 to 22"),
    (_entry(estar=[True]), "eSTAR section numbers from 1 to 22"),
    (_entry(estar=6), "estar must be a list"),
    (_entry(estar=[6, 6]), "lists a section twice"),
    (_entry(in_submission="yes"), "in_submission must be true or false"),
    (_entry(sections="Heading"), "sections must be a list of headings"),
    ("not a mapping", "expected a mapping with"),
])
def test_registry_shape_errors_name_the_document_and_key(entry, message):
    with pytest.raises(RegistryError) as e:
        parse_registry({"cover_letter": entry}, "reg.yml")
    assert message in str(e.value) and "reg.yml: document 'cover_letter'" in str(e.value)


def test_registry_rejects_bad_names_and_empty_files():
    with pytest.raises(RegistryError, match="template's base name"):
        parse_registry({"Cover Letter": _entry()}, "reg.yml")
    with pytest.raises(RegistryError, match="expected a mapping of document names"):
        parse_registry(None, "reg.yml")


def test_the_registry_and_estar_files_parse_and_every_document_has_a_template():
    docs = registry.registry()
    assert {"validation_plan", "510k_submission", "heldout_report", *ADMIN} <= set(docs)
    assert docs["heldout_report"].in_submission is False and docs["validation_plan"].in_submission is True
    for d in docs.values():
        assert (REPO / "templates" / f"{d.name}.md.j2").is_file(), d.name
    sections = registry.estar_sections()
    assert [s["number"] for s in sections] == list(range(1, 23))
    assert [d.name for d in registry.submission_documents(docs)][0] != "validation_plan"
    assert "validation_plan" not in [d.name for d in registry.submission_documents(docs)]


def test_estar_sections_must_be_in_order_with_reasons():
    sections = _yaml("estar.yml")["sections"]
    swapped = copy.deepcopy(sections)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    with pytest.raises(RegistryError, match="numbered 1 to 22 in order"):
        parse_estar({"sections": swapped}, "estar.yml")
    with pytest.raises(RegistryError, match="numbered 1 to 22 in order"):
        parse_estar({"sections": sections[:-1]}, "estar.yml")
    empty = copy.deepcopy(sections)
    empty[12]["not_applicable"] = " "
    with pytest.raises(RegistryError, match="section 13: not_applicable must give the reason"):
        parse_estar({"sections": empty}, "estar.yml")


def test_coverage_fails_a_section_neither_answered_nor_not_applicable_and_one_that_is_both():
    sections = parse_estar(_yaml("estar.yml"))
    docs = parse_registry({"all": _entry(estar=[s["number"] for s in sections if "not_applicable" not in s])})
    covered, problems = coverage(docs, sections)
    assert problems == [] and [s.number for s in covered] == list(range(1, 23))
    assert covered[5].answered_by == ("all",) and covered[12].not_applicable and not covered[12].answered_by

    fewer = parse_registry({"all": _entry(estar=[n for n in docs["all"].estar if n != 7])})
    _, problems = coverage(fewer, sections)
    assert len(problems) == 1 and problems[0].startswith("eSTAR section 7 (") and "not marked not applicable" in problems[0]

    both = parse_registry({"all": _entry(estar=[*docs["all"].estar, 13])})
    _, problems = coverage(both, sections)
    assert len(problems) == 1 and "section 13 (Sterility): answered by all and also marked not applicable" in problems[0]

    # a document kept out of the submission answers nothing
    held = parse_registry({"all": _entry(estar=list(docs["all"].estar), in_submission=False)})
    assert len(coverage(held, sections)[1]) == len(docs["all"].estar)


def test_the_sections_no_document_of_this_part_answers_are_not_applicable_for_software_only():
    na = {s["number"]: s["not_applicable"] for s in _yaml("estar.yml")["sections"] if "not_applicable" in s}
    assert set(na) == {4, 10, 12, 13, 14, 15, 18, 20, 22}
    assert all("Software only" in na[n] for n in (12, 13, 14, 15, 18)) and "Traditional 510(k)" in na[10]


def test_the_submission_stage_declares_every_registry_document(tmp_path):
    outs = by_name("submission").outs
    for d in registry.submission_documents(registry.registry()):
        for f in d.files():
            assert out_declared(by_name("submission"), f"submission/{f}"), f
    assert not any(p.startswith("submission/validation_plan") for p in outs)
    reg = tmp_path / "reg.yml"
    reg.write_text("a_doc:\n  in_submission: true\nb_doc:\n  in_submission: false\n")
    assert registry_outs(reg) == ("submission/a_doc.*", "submission/a_doc_auditor.*")


# ---------------------------------------------------------------- the documents rendered from a run

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = build_run(tmp_path_factory.mktemp("package"))
    assert submission_main(["--out", str(out), "--params", str(REPO / "params.yaml"), "--no-pdf", "-q"]) == 0
    return out


def _md(run: Path, name: str) -> str:
    return (run / "submission" / f"{name}.md").read_text(encoding="utf-8")


def _section(markdown: str, heading: str) -> str:
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S)
    assert m, heading
    return m.group(1)


def test_every_registry_document_is_rendered_listed_and_titled(run):
    docs = registry.submission_documents(registry.registry())
    record = Store(run).get("submission.documents")
    assert record["data"]["documents"] == ["validation_plan", *(d.name for d in docs)]
    outs = {o["path"] for o in record["outs"]}
    for d in docs:
        assert {f"submission/{f}" for f in d.files(pdf=False)} <= outs, d.name
        assert record["data"]["titles"][d.name] == d.title
        html = (run / "submission" / f"{d.name}.html").read_text(encoding="utf-8")
        assert f"<title>{d.title.replace('&', '&amp;')} \u2014 " in html
        assert required_sections(_md(run, d.name), list(d.sections)) == [], d.name
        assert "DEMONSTRATION" in _md(run, d.name)
    trace = json.loads((run / "submission" / "traceability.json").read_text())
    assert set(trace["documents"]) == {"validation_plan", *(d.name for d in docs)}


def test_the_check_passes_but_for_sections_no_document_answers_yet(run):
    failures = check(run)
    assert [f for f in failures if not f.startswith("eSTAR section")] == []
    _, open_sections = coverage(registry.registry(), registry.estar_sections())
    assert sorted(failures) == sorted(f for f in open_sections)


def test_the_510k_summary_has_every_807_92_element(run):
    md = _md(run, "510k_summary")
    assert required_sections(md, SUMMARY_ELEMENTS) == []
    device = _yaml("device.yml")
    names = _section(md, "Device names and classification")
    assert all(device[k] in names for k in ("name", "common_name", "regulation_name", "regulation_number", "product_code"))
    assert _yaml("submitter.yml")["contact"]["phone"] in _section(md, "Submitter")
    test = Store(run).get("validation.test")["data"]
    assert f"{test['counts']['n']} images of {test['counts']['n_patients']} patients" in _section(md, "Clinical performance data")
    passed = Store(run).value("validation.acceptance", "all_passed")
    assert ("did not meet every pre-specified primary goal" in _section(md, "Conclusion")) is (not passed)


def test_the_date_prepared_comes_from_the_run(run):
    created = Store(run).get("validation.acceptance")["created_utc"][:10]
    assert _section(_md(run, "510k_summary"), "Date prepared").strip().startswith(created)
    assert f"| date | {created} " in _md(run, "cover_letter")
    trace = json.loads((run / "submission" / "traceability.json").read_text())["documents"]["510k_summary"]["traces"]
    assert any(t["record_id"] == "validation.acceptance" and t["pointer"] == "/created_utc" and t["text"] == created
               for t in trace)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_indications_for_use_text_is_the_same_in_device_yml_the_form_and_the_summary(run):
    ifu = _flat(_yaml("device.yml")["indications_for_use"])
    form = _md(run, "indications_for_use")
    assert _flat(_section(form, "Indications for use")) == ifu
    assert f"**Indications for use.** {ifu}" in _flat(_section(_md(run, "510k_summary"), "Intended use and indications for use"))
    uses = _section(form, "Type of use")
    citations = _yaml("submitter.yml")["citations"]
    assert f"| {citations['prescription_use']} | **X** (selected) |" in uses
    assert f"| {citations['otc_use']} | not selected |" in uses
    assert _section(form, "510(k) number").strip() == "not yet assigned"


def test_the_cover_letter_names_the_primary_predicate_and_the_contents(run):
    predicates = _yaml("predicates.yml")
    md = _md(run, "cover_letter")
    devices = _yaml("predicate_performance.yml")["devices"]
    assert predicates["primary"] in devices, "predicates.yml `primary` names no device of predicate_performance.yml"
    p = devices[predicates["primary"]]
    assert f"Primary predicate: {p['name']} ({p['k_number']}, {p['status']})" in md
    contents = _section(md, "Contents")
    for d in registry.registry().values():
        assert (f"`{d.name}.pdf`" in contents) is d.in_submission, d.name
    assert _yaml("device.yml")["product_code"] in _section(md, "Device")


def test_the_submitter_is_the_manufacturer_and_the_statement_is_unsigned(run):
    submitter = _yaml("submitter.yml")
    assert submitter["name"] == _yaml("device.yml")["manufacturer"] and "fictitious" in submitter["name"]
    md = _flat(_md(run, "truthful_accurate_statement"))
    assert f"in my capacity as {submitter['signer']['title']} of {submitter['name']}, I believe" in md
    assert "| signature | unsigned |" in md and _flat(submitter["unsigned_note"]) in md
    assert submitter["citations"]["truthful_accurate"] in md


def test_the_device_description_prints_the_input_checks_from_the_record(run):
    params = Store(run).get("workflow.dicom")["params"]
    checks = _section(_md(run, "device_description"), "Input checks")
    assert f"| modality | {', '.join(params['allowed_modalities'])} |" in checks
    assert f"| patient age (years) | {params['min_age_years']} to {params['max_age_years']} |" in checks
    assert "device_flowchart.png" in _section(_md(run, "device_description"), "Flowchart")


def test_the_estar_index_lists_every_section_in_order_with_its_files(run):
    md = _md(run, "estar_index")
    rows = [line for line in md.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert [int(r.split("|")[1]) for r in rows] == list(range(1, 23))
    covered, _ = coverage(registry.registry(), registry.estar_sections())
    for s, row in zip(covered, rows):
        if s.answered_by:
            assert all(f"`{n}.pdf`" in row for n in s.answered_by) and "not applicable" not in row
        elif s.not_applicable:
            assert f"not applicable: {s.not_applicable}" in row
        else:
            assert "not answered" in row
    assert "| 7 | Proposed Indications for Use" in md and "`indications_for_use.pdf`" in rows[6]


def test_the_check_finds_a_broken_index_and_a_document_not_rendered(run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    index = bad / "submission" / "estar_index.md"
    lines = index.read_text().splitlines()
    index.write_text("\n".join(l for l in lines if not l.startswith(("| 9 |", "| 13 |"))) + "\n")
    trace_path = bad / "submission" / "traceability.json"
    trace = json.loads(trace_path.read_text())
    del trace["documents"]["cover_letter"]
    trace_path.write_text(json.dumps(trace))
    failures = check(bad)
    assert any("estar_index: lists sections" in f and "expected 1 to 22 in order" in f for f in failures)
    assert any(f.startswith("estar_index: section 9 (") and "does not name" in f for f in failures)
    assert any(f.startswith("estar_index: section 13 (") and "not applicable" in f for f in failures)
    assert any(f.startswith("cover_letter: in the registry (in_submission) but not rendered") for f in failures)


def test_package_check_flags_a_section_both_answered_and_not_applicable(run):
    docs = registry.registry()
    sections = copy.deepcopy(registry.estar_sections())
    sections[6]["not_applicable"] = "a reason"
    trace = json.loads((run / "submission" / "traceability.json").read_text())
    failures = package(run / "submission", trace, docs, sections)
    assert any(f.startswith("eSTAR section 7 (") and "also marked not applicable" in f for f in failures)


def test_the_held_out_report_folder_is_not_checked_as_a_submission(run, tmp_path):
    """Only a folder whose evidence holds record submission.documents gets the package checks."""
    other = tmp_path / "other"
    shutil.copytree(run, other)
    (other / "evidence" / "submission.documents.json").unlink()
    trace_path = other / "submission" / "traceability.json"
    trace = json.loads(trace_path.read_text())
    del trace["documents"]["cover_letter"]
    trace_path.write_text(json.dumps(trace))
    failures = check(other)
    assert failures == []


def test_a_broken_registry_is_one_error_line_naming_it(run, tmp_path, monkeypatch, capsys):
    from submission import check as check_module

    bad = tmp_path / "required_sections.yml"
    bad.write_text("cover_letter:\n  title: Cover Letter\n  estar: [99]\n  in_submission: true\n  sections: []\n")
    monkeypatch.setattr(registry, "REGISTRY", bad)
    assert check_module.main(["--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(bad) in err[0] and "from 1 to 22" in err[0]
