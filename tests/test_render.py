"""Rendering: every template renders from records only, every number is traced."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evidence import write_record
from submission.__main__ import main as submission_main
from submission.check import check, untraced_numbers
from submission.render import Renderer, RenderError
from test_render_evidence import _png, build_run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = build_run(tmp_path_factory.mktemp("run"), study_description="<script>alert(1)</script>")
    assert submission_main(["--out", str(out), "--params", str(REPO / "params.yaml"), "--no-pdf"]) == 0
    return out


def test_documents_and_records_written(rendered):
    sub = rendered / "submission"
    for name in ("validation_plan", "510k_submission"):
        for suffix in ("", "_auditor"):
            assert (sub / f"{name}{suffix}.md").is_file() and (sub / f"{name}{suffix}.html").is_file()
    plan = json.loads((rendered / "evidence" / "submission.plan.json").read_text())
    lock = json.loads((rendered / "evidence" / "validation.plan_lock.json").read_text())
    assert [c["metric"] for c in lock["data"]["acceptance_criteria"]] == ["auc", "sensitivity", "specificity"]
    assert lock["data"]["locked_by"] == "Test Engineer" and lock["data"]["locked_by_source"] == "--locked-by"
    # the plan files, then the records locked with them (the change control plan's criteria)
    assert lock["data"]["plan_files"][:len(plan["outs"])] == plan["outs"]
    assert [f["path"] for f in lock["data"]["plan_files"][len(plan["outs"]):]] == ["evidence/pccp.plan.json"]
    assert lock["data"]["plan_record_sha256"] == plan["sha256"]
    assert {d["id"] for d in plan["deps"]["records"]} >= {"validation.design", "validation.sample_size"}
    written = sorted(p.name for p in sub.glob("validation_plan*"))
    assert sorted(plan["data"]["documents"]) == written and not any(n.endswith(".pdf") for n in written)
    docs = json.loads((rendered / "evidence" / "submission.documents.json").read_text())
    outs = {o["path"] for o in docs["outs"]}
    assert "submission/traceability.json" in outs and "submission/510k_submission_auditor.md" in outs
    assert docs["synthetic"] is True


def test_every_number_traced_and_checked(rendered):
    assert check(rendered) == []
    trace = json.loads((rendered / "submission" / "traceability.json").read_text())
    t = trace["documents"]["510k_submission"]["traces"]
    tp = [x for x in t if x["pointer"] == "/data/confusion/tp"]
    assert tp and tp[0]["text"] == "30" and tp[0]["value"] == 30 and len(tp[0]["sha256"]) == 64


def test_check_finds_an_untraced_number(rendered):
    md = (rendered / "submission" / "510k_submission.md").read_text()
    assert untraced_numbers(md + "\nsensitivity was 91.2% in a hand-typed sentence\n", []) != []
    tampered = rendered.parent / "tampered"
    import shutil
    shutil.copytree(rendered, tampered)
    p = tampered / "submission" / "510k_submission.md"
    p.write_text(p.read_text() + "\nExtra claim: 97.5% sensitivity.\n")
    failures = check(tampered)
    assert any("97.5" in f for f in failures) and any("changed since" in f for f in failures)


def test_auditor_edition_cites_record_and_hash(rendered):
    aud = (rendered / "submission" / "510k_submission_auditor.md").read_text()
    sha = json.loads((rendered / "evidence" / "validation.test.json").read_text())["sha256"]
    assert f"\\[validation.test@{sha[:8]}\\]" in aud


def test_not_estimable_rendered_with_reason(rendered):
    md = (rendered / "submission" / "510k_submission.md").read_text()
    assert "not estimable (2 positives, fewer than the pre-specified 10)" in md
    for bad in ("nan", "None", "null"):
        assert f" {bad} " not in md


def test_data_text_is_escaped_in_html(rendered):
    html = (rendered / "submission" / "510k_submission.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_synthetic_banner_and_flowchart(rendered):
    md = (rendered / "submission" / "510k_submission.md").read_text()
    assert "DEMONSTRATION — synthetic data, not a regulatory submission" in md
    assert (rendered / "submission" / "device_flowchart.png").stat().st_size > 1000


def test_missing_pointer_is_an_error_naming_record_and_pointer(tmp_path):
    out = build_run(tmp_path)
    write_record(out, "validation.calibration", data={"n": 3})
    with pytest.raises(RenderError, match=r"validation\.calibration.*brier_score"):
        Renderer(out, extra_figures={"flowchart": _png(tmp_path / "x.png")}).render("510k_submission")


def test_missing_record_is_a_cli_error(tmp_path, capsys):
    out = build_run(tmp_path)
    (out / "evidence" / "validation.benchmark.json").unlink()
    assert submission_main(["--out", str(out), "--params", str(REPO / "params.yaml"), "--no-pdf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "validation.benchmark" in err and "Traceback" not in err
    assert not (out / "submission" / "traceability.json").exists()


def test_nih_source_adds_attribution(tmp_path):
    out = build_run(tmp_path, synthetic=False, source="nih")
    r = Renderer(out, extra_figures={"flowchart": _png(tmp_path / "x.png")}).render("510k_submission")
    assert "https://nihcc.app.box.com/v/ChestXray-NIHCC" in r.plain and "CVPR 2017" in r.plain
    assert "NIH Clinical Center" in r.plain and "DEMONSTRATION" not in r.plain
    assert "90% accurate\" (Wang et al., CVPR 2017; NIH README)" in r.plain


def test_nih_label_claims_are_not_made_for_a_demo_cohort(rendered):
    text = (rendered / "submission" / "510k_submission.md").read_text()
    ground_truth = text[text.index("Ground truth"):text.index("Standalone performance")]
    assert "90%" not in ground_truth and "NIH README" not in ground_truth


def test_no_document_holds_a_tracing_marker(rendered):
    from submission.render import MARK_CLOSE, MARK_OPEN

    files = sorted((rendered / "submission").glob("*.md")) + sorted((rendered / "submission").glob("*.html"))
    assert len(files) >= 4
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert MARK_OPEN not in text and MARK_CLOSE not in text, path.name


def test_rebuild_gives_identical_documents(rendered, tmp_path):
    """The appendix lists the records the document used, not whatever the run folder holds."""
    import shutil
    again = tmp_path / "again"
    shutil.copytree(rendered, again)
    assert submission_main(["--out", str(again), "--params", str(REPO / "params.yaml"), "--no-pdf"]) == 0
    for name in ("validation_plan", "510k_submission", "validation_plan_auditor", "510k_submission_auditor"):
        first = (rendered / "submission" / f"{name}.md").read_text()
        assert (again / "submission" / f"{name}.md").read_text() == first, name
        assert "| submission.plan | submission |" not in first
        assert "| submission.documents | submission |" not in first


def test_plan_keeps_each_criterion_method(rendered):
    lock = json.loads((rendered / "evidence" / "validation.plan_lock.json").read_text())
    assert [c["method"] for c in lock["data"]["acceptance_criteria"]] == ["delong", "wilson", "wilson"]
    plan = (rendered / "submission" / "validation_plan.md").read_text()
    assert ("| AUC: lower bound of the two-sided 95% DeLong interval at or above 0.70 | secondary | "
            "not used (not sized by power) | K191556 |") in plan
    assert ("| sensitivity: lower bound of the two-sided 95% Wilson score interval at or above 0.60 | primary | "
            "0.80 | K191556, K223491 |") in plan
    assert "| specificity: lower bound of the two-sided 95% Wilson score interval at or above 0.70 | primary | 0.85 |" in plan
    goals = plan[plan.index("## Pre-specified performance goals"):plan.index("## Statistical analysis plan")]
    assert "ci\\_low" not in goals and "\\>=" not in goals


def _rewrite(out, record_id, **changes):
    from evidence import read_record
    old = read_record(out, record_id)
    write_record(out, record_id, params=changes.get("params", old["params"]),
                 data=changes.get("data", old["data"]), dep_records=[d["id"] for d in old["deps"]["records"]],
                 outs=[out / o["path"] for o in old["outs"]])


def test_age_design_numbers_and_lowest_prevalence_come_from_evidence(tmp_path):
    from evidence import read_record
    out = build_run(tmp_path)
    dicom_params = read_record(out, "workflow.dicom")["params"]
    _rewrite(out, "workflow.dicom", params={**dicom_params, "min_age_years": 21})
    test = read_record(out, "validation.test")["data"]
    _rewrite(out, "validation.test", data={**test, "ppv_npv_at_prevalence": test["ppv_npv_at_prevalence"][::-1]})
    renderer = Renderer(out, extra_figures={"flowchart": _png(tmp_path / "x.png")})
    sub, plan = renderer.render("510k_submission"), renderer.render("validation_plan")
    for doc in (sub, plan):
        assert "aged 21 years or older" in doc.plain and "18 years" not in doc.plain
    assert "at the lowest prevalence listed above the PPV is 4.1%" in sub.plain
    assert "2022. and" not in sub.plain
    design = {(t["pointer"], t["text"]) for t in plan.traces if t["record_id"] == "submission/data/study_design.yml"}
    assert {("/reference_readers", "3"), ("/reader_study_sessions", "2")} <= design


def test_banner_text_has_one_home():
    from submission.markup import BANNER
    partial = (REPO / "templates" / "partials" / "banner.md.j2").read_text()
    assert BANNER not in partial and "DEMONSTRATION" not in partial


def test_the_threshold_rule_is_printed_in_words(rendered):
    plan = (rendered / "submission" / "validation_plan.md").read_text()
    line = next(ln for ln in plan.splitlines() if "selected on the validation split as" in ln)
    assert "the threshold that maximizes F1" in line  # the fixture's rule, max_f1
    assert "max_f1" not in plan and "score >= threshold" not in plan


def test_non_estimable_acceptance_criterion_renders_its_reason(tmp_path):
    from evidence import read_record
    out = build_run(tmp_path)
    acceptance = read_record(out, "validation.acceptance")["data"]
    criteria = [dict(acceptance["criteria"][0], observed=None, passed=False,
                     reason="metric 'auc' (method 'delong') was not reported"), *acceptance["criteria"][1:]]
    _rewrite(out, "validation.acceptance", data={**acceptance, "criteria": criteria})
    r = Renderer(out, extra_figures={"flowchart": _png(tmp_path / "x.png")}).render("510k_submission")
    reason = "not estimable (metric 'auc' (method 'delong') was not reported)"
    auc = "AUC: lower bound of the two-sided 95% DeLong interval at or above 0.70"
    assert f"| {auc} | secondary | {reason} | no |" in r.plain
    assert f"Secondary performance goal not met: {auc}; observed {reason}." in r.plain
    assert ("Primary performance goal not met: specificity: lower bound of the two-sided 95% Wilson score "
            "interval at or above 0.70; observed 0.661.") in r.plain
    assert "ci\\_low" not in r.plain


@pytest.mark.parametrize("value", [None, 0])
def test_filter_error_on_a_falsy_value_names_record_and_pointer(tmp_path, value):
    from evidence import read_record
    out = build_run(tmp_path)
    calibration = read_record(out, "validation.calibration")["data"]
    _rewrite(out, "validation.calibration", data={**calibration, "ece": value})
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "one.md.j2").write_text('{{ ev("validation.calibration", "ece") | ci }}\n')
    with pytest.raises(RenderError, match=r"^record validation\.calibration at /data/ece: ci: "):
        Renderer(out, templates=tmp_path / "t").render("one")


def test_keys_from_items_are_escaped_and_traced(tmp_path):
    out = build_run(tmp_path)
    write_record(out, "heldout.metrics", data={"readers": {"reader_2*": 0.81}})
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "one.md.j2").write_text(
        '{% for name, v in ev("heldout.metrics", "readers").items() %}| {{ name }} | {{ v | num }} |\n{% endfor %}')
    r = Renderer(out, templates=tmp_path / "t").render("one")
    assert r.plain == "| reader\\_2\\* | 0.810 |\n"
    assert untraced_numbers(r.plain, r.traces) == []
    assert {"text": "reader\\_2\\*", "pointer": "/data/readers/reader_2*"}.items() <= r.traces[0].items()


def test_several_documents_in_one_call_pass_the_audit(tmp_path):
    from evidence.audit import audit
    out = build_run(tmp_path)
    assert submission_main(["--out", str(out), "--params", str(REPO / "params.yaml"), "--no-pdf",
                            "--document", "validation_plan", "--document", "510k_submission"]) == 0
    records = sorted(p.stem for p in (out / "evidence").glob("*.json"))
    assert {"submission.validation_plan", "submission.510k_submission"} <= set(records)
    assert audit(out, check_code=False, complete=False) == ([], len(records))   # each one verified
    trace = json.loads((out / "submission" / "traceability.json").read_text())
    assert set(trace["documents"]) == {"validation_plan", "510k_submission"}


def test_subgroups_heterogeneity_and_score_concentration_rendered(rendered):
    md = (rendered / "submission" / "510k_submission.md").read_text()
    assert "| with Effusion (co-occurring finding) | 20 | 6 | 14 | not estimable (2 positives" in md
    i, j, k = (md.index(f"| {s} |") for s in ("younger than the intended use", "older than the intended use",
                                                "age unknown"))
    assert i < j < k and "| younger than the intended use | 3 | 1 | 2 | not estimable (1 positive, fewer" in md
    assert "| Effusion (with against without) | Fisher's exact, p = 0.200 (2 strata) | Fisher's exact, p < 0.001" in md
    assert "| age band | not estimable (1 stratum with an estimate" in md
    assert "chi-square 1.23, df 2, p = 0.410 (3 strata; smallest expected count 2.5)" in md
    assert "without adjustment for multiplicity" in md
    assert "expected calibration error 0.071 (95% CI 0.050 to 0.120; patient-cluster bootstrap, percentile" in md
    assert "over 9 equal-count (quantile) bins of the test scores (10 requested" in md
    assert "68.1% of them (98 of 144) lie within 0.05 of the locked threshold 0.432" in md
    assert "**Finding: the scores concentrate around the threshold**" in md
    assert "Every test score falls in the same equal-width tenth" in md
    assert "scores_test.png" in md and "reliability_test.png" in md


def test_plan_without_a_powered_goal_says_so(tmp_path, monkeypatch):
    """Goals that the exact binomial calculation does not size (AUC, a point estimate): the plan says
    which and why, and prints the totals as not estimable rather than a number."""
    import test_render_evidence
    monkeypatch.setattr(test_render_evidence, "CRITERIA", [
        {"metric": "auc", "method": "delong", "bound": "ci_low", "op": ">", "value": 0.7},
        {"metric": "sensitivity", "method": "wilson", "bound": "estimate", "op": ">=", "value": 0.6}])
    out = test_render_evidence.build_run(tmp_path)
    plan = Renderer(out).render("validation_plan").plain
    assert "- The primary auc goal is not sized here: auc: not sized by the exact binomial calculation" in plan
    assert ("No complete sample size by power: positives not estimable (no primary lower-bound goal on sensitivity); "
            "negatives not estimable (no primary lower-bound goal on specificity).") in plan
    assert "| consecutive series at the intended-use prevalence | 1.3% | not estimable (no powered positives or " \
           "negatives: the totals need both) |" in plan
    assert "**Precision cross-check.**" in plan


@pytest.mark.parametrize("source", ["demo", "nih"])
def test_no_document_states_a_labeling_fact_that_contradicts_the_cohort_records(tmp_path, source):
    """The development labels are described from the cohort's ground-truth record, never typed: a
    synthetic cohort's documents never say the labels were text-mined, an NIH cohort's never say
    synthetic (the section 8 / section 11 contradiction)."""
    import re

    import pandas as pd

    from eda.ground_truth import assess
    out = build_run(tmp_path, synthetic=source == "demo", source=source)
    data, _ = assess(pd.DataFrame(), {"kind": source})
    if source == "nih":  # no expert or box files in this test: the labeling method alone
        data = {"source_kind": "nih", "labelling": data["labelling"],
                "label_quality": {"estimable": False, "reason": "no expert labels in this test"}}
    _rewrite(out, "eda.ground_truth", data=data)
    renderer = Renderer(out, extra_figures={"flowchart": _png(tmp_path / "x.png")})
    forbidden = re.compile(r"synthetic" if source == "nih" else r"text[- ]min|mined from", re.I)
    for name in ("510k_submission", "validation_plan"):
        text = renderer.render(name).plain
        assert data["labelling"]["description"] in text
        assert forbidden.findall(text) == [], name


def test_traceability_table_is_grouped_by_record_with_the_full_hash_once(rendered):
    sub = rendered / "submission"
    table = (sub / "traceability.md").read_text()
    doc = json.loads((sub / "traceability.json").read_text())
    traces = [t for d in doc["documents"].values() for t in d["traces"] if t["numeric"]]
    groups = table.split("\n## ")[1:]
    by_id = {g.splitlines()[0].replace("\\_", "_"): g for g in groups}
    assert set(by_id) == {t["record_id"] for t in traces}
    for t in traces:
        group = by_id[t["record_id"]]
        assert table.count(t["sha256"]) == 1 and t["sha256"] in group
        assert f"| {t['document'].replace('_', ' ')} | {t['text']} | `{t['pointer']}` |" in group
    main_doc = (sub / "510k_submission.md").read_text()
    statement = main_doc[main_doc.index("## Traceability statement"):]
    assert "| JSON pointer |" not in statement and "traceability.pdf" in statement
    auditor = (sub / "510k_submission_auditor.md").read_text()
    assert "Every traced number, by evidence record" in auditor and "JSON pointer" in auditor


@pytest.mark.parametrize("ours, words", [(0.2, "below"), (0.40, "within"), (0.435, "within"), (0.6383, "above")])
def test_benchmark_position_is_computed_from_the_values(tmp_path, ours, words):
    """Against published F1 values 0.387 and 0.435 (CheXNet, Table 1), the device's F1 is placed
    below, within or above their range by comparison, not asserted."""
    from evidence import read_record
    out = build_run(tmp_path)
    data = read_record(out, "validation.benchmark")["data"]
    data["ours"]["f1"]["estimate"] = ours
    _rewrite(out, "validation.benchmark", data=data)
    text = Renderer(out, extra_figures={"flowchart": _png(tmp_path / "x.png")}).render("510k_submission").plain
    assert f"lies {words} the range of the published values (0.387 to 0.435)" in text
