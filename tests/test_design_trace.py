"""The design files and the trace from tests to requirements (design.spec, design.pytest_plugin,
design.verify, the audit's release gate)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from design import spec, verify
from evidence import Store, layout
from evidence import __main__ as audit_cli

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.verifies("SRS-046")

TRACE_TESTS = '''
import pytest

@pytest.mark.verifies("SRS-001", "SRS-002")
def test_passes():
    assert 1 + 1 == 2

@pytest.mark.verifies("SRS-002", "SRS-003")
def test_fails_on_purpose():
    assert 1 + 1 == 3

@pytest.mark.verifies("SRS-004")
@pytest.mark.skip(reason="shows a skipped test")
def test_skipped():
    pass
'''


def test_design_files_load_and_cross_reference():
    d = spec.load()
    assert 30 <= len(d.requirements) <= 60
    named = {r for h in d.hazards.values() for c in h["controls"] for r in c["requirements"]}
    assert named <= set(d.requirements)
    assert all("bench" in e for e in d.requirements.values() if e["category"] == "performance")


def test_unknown_requirement_in_a_hazard_names_both(tmp_path):
    raw = yaml.safe_load(spec.HAZARDS.read_text())
    raw["hazards"][0]["controls"][0]["requirements"].append("SRS-999")
    bad = tmp_path / "hazards.yml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(spec.DesignError, match=r"hazard HAZ-01: .*names requirement SRS-999"):
        spec.parse(hazards=bad)


def test_a_hazard_off_the_scale_and_a_duplicate_id_are_named(tmp_path):
    raw = yaml.safe_load(spec.HAZARDS.read_text())
    raw["hazards"][1]["severity"] = 9
    bad = tmp_path / "hazards.yml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(spec.DesignError, match="HAZ-02: severity 9 is not a level"):
        spec.parse(hazards=bad)
    reqs = yaml.safe_load(spec.REQUIREMENTS.read_text())
    reqs["requirements"].append(dict(reqs["requirements"][0]))
    dup = tmp_path / "requirements.yml"
    dup.write_text(yaml.safe_dump(reqs))
    with pytest.raises(spec.DesignError, match="SRS-001 is given twice"):
        spec.parse(requirements=dup)


def test_documentation_level_follows_the_severity_before_controls():
    d = spec.load()
    level, deciding = d.level()
    worst = max(h["severity"] for h in d.hazards.values())
    assert (level == "Enhanced") == (worst >= d.documentation_level["enhanced_from_severity"])
    assert deciding == [h for h, e in d.hazards.items() if e["severity"] >= d.documentation_level["enhanced_from_severity"]]


def test_a_failing_test_leaves_its_requirement_not_verified(tmp_path):
    """A tiny suite run by pytest with the plugin; design.verify reads its JUnit XML."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_tiny.py").write_text(TRACE_TESTS)
    out = tmp_path / "run"
    junit = layout.junit(out)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "design.pytest_plugin", "-p", "no:cacheprovider",
                           "--junitxml", str(junit), "-o", "junit_family=xunit1", "-o", "markers=verifies",
                           str(suite)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr   # one test failed
    verify.run(out, junit=junit, bench=tmp_path / "no-bench.json")
    data = Store(out).get("verification.tests")["data"]
    outcome = {t["nodeid"].split("::")[-1]: (t["outcome"], t["requirements"]) for t in data["tests"]}
    assert outcome == {"test_passes": ("passed", ["SRS-001", "SRS-002"]),
                       "test_fails_on_purpose": ("failed", ["SRS-002", "SRS-003"]),
                       "test_skipped": ("skipped", ["SRS-004"])}
    reqs = data["requirements"]
    assert reqs["SRS-001"]["verdict"] == "verified"
    assert reqs["SRS-002"]["verdict"] == "not verified"
    assert reqs["SRS-002"]["reason"] == "not verified: 1 of its 2 test(s) failed or erred"
    assert reqs["SRS-003"]["verdict"] == "not verified"
    assert reqs["SRS-004"]["reason"] == "not verified: its 1 test(s) were skipped"
    assert reqs["SRS-005"]["reason"] == "not verified: no test of this run verifies it"
    perf = [r for r, e in spec.load().requirements.items() if e["category"] == "performance"]
    assert perf and all(reqs[r]["reason"].startswith("not verified: benchmark not run") for r in perf)
    assert data["counts"]["tests_verifying_requirements"] == 3 and data["counts"]["requirements_verified"] == 1
    assert data["junit"]["sha256"] == Store(out).get("verification.tests")["deps"]["files"][0]["sha256"]

    # the audit warns without --release and fails with it, naming each requirement
    from evidence import release
    lines = release.check(out)
    assert any("requirement SRS-002" in l for l in lines) and not any("SRS-001:" in l for l in lines)


def test_benchmark_figures_verify_performance_requirements(tmp_path):
    entry = {"bench": {"name": "inference", "figure": "ratio", "at_most": 1.3}}
    assert verify.bench_verdict(entry, {"inference": {"ratio": 1.1}})[0] == "verified"
    verdict, reason, _ = verify.bench_verdict(entry, {"inference": {"ratio": 1.6}})
    assert verdict == "not verified" and "inference: 1.6, required at most 1.3" in reason
    assert verify.bench_verdict(entry, {"eda": {}})[1].startswith("not verified: benchmark inference not run")
    assert verify.bench_verdict(entry, {"inference": {"error": "boom"}})[0] == "not verified"


def test_junit_without_the_trace_properties_is_refused(tmp_path):
    xml = tmp_path / "plain.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="t" name="test_a"/></testsuite></testsuites>')
    with pytest.raises(verify.VerifyError, match="no test carries the trace properties"):
        verify.read_junit(xml)
    xml.write_text("<testsuites><testsuite>")
    with pytest.raises(verify.VerifyError, match="not JUnit XML"):
        verify.read_junit(xml)


def test_release_audit_fails_without_the_record(tmp_path, capsys):
    layout.evidence(tmp_path).mkdir(parents=True)
    from evidence import release
    assert "found missing record" in release.check(tmp_path)[0]


def test_an_unknown_requirement_in_a_marker_stops_collection(tmp_path):
    (tmp_path / "test_bad.py").write_text('import pytest\n\n@pytest.mark.verifies("SRS-999")\ndef test_x():\n    pass\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "design.pytest_plugin", "-p", "no:cacheprovider",
                           "-o", "markers=verifies", str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "SRS-999" in proc.stdout + proc.stderr


JUNIT = '''<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="2">
<testcase classname="tests.test_threshold" name="test_rule">
<properties><property name="nodeid" value="tests/test_threshold.py::test_rule"/>
<property name="verifies" value="SRS-013"/></properties></testcase>
<testcase classname="tests.test_dicom" name="test_view">
<properties><property name="nodeid" value="tests/test_dicom.py::test_view"/>
<property name="verifies" value="SRS-002 SRS-013"/></properties>
<failure message="assert False">deliberately failing</failure></testcase>
<testcase classname="tests.test_split" name="test_split">
<properties><property name="nodeid" value="tests/test_split.py::test_split"/>
<property name="verifies" value="SRS-015"/></properties></testcase>
</testsuite></testsuites>
'''


@pytest.mark.verifies("SRS-030", "SRS-033")
def test_the_documents_show_the_trace_or_say_it_was_not_run(tmp_path):
    """The software documentation, the risk file and the 510(k) without the record, then with one
    whose failing test leaves its requirements not verified; every number traced both times."""
    from submission.__main__ import main as submission_main
    from submission.check import check
    from test_render_evidence import build_run

    out = build_run(tmp_path / "run")
    args = ["--out", str(out), "--params", str(REPO / "params.yaml"), "--no-pdf"]
    assert submission_main(args) == 0
    sub = out / "submission"
    assert "Not verified: `make verify` was not run" in (sub / "software_documentation.md").read_text()
    assert "| not verified: make verify was not run |" in (sub / "risk_management.md").read_text()
    assert "The requirements are not verified: `make verify` was not run" in (sub / "510k_submission.md").read_text()
    assert check(out) == []

    layout.junit(out).parent.mkdir(parents=True)
    layout.junit(out).write_text(JUNIT)
    verify.run(out, bench=tmp_path / "none.json")
    assert submission_main(args) == 0
    sd = (sub / "software_documentation.md").read_text()
    assert "| SRS-015 | verified | 1 | `tests/test_split.py::test_split` | 1 test(s) passed |" in sd
    assert ("| SRS-013 | not verified | 2 | `tests/test_threshold.py::test_rule` | not verified: 1 of its 2 test(s) "
            "failed or erred; failed: `tests/test_dicom.py::test_view` |") in sd
    rm = (sub / "risk_management.md").read_text()
    assert "| SRS-015 | `tests/test_split.py::test_split` | verified |" in rm
    assert "| SRS-013 | `tests/test_threshold.py::test_rule` | not verified |" in rm
    closing = (sub / "510k_submission.md").read_text()
    n_req, n_haz = len(spec.load().requirements), len(spec.load().hazards)
    assert f"hold {n_req} software requirements, {n_haz} hazards" in closing
    assert f"3 of 3 tests verify at least one requirement, and 1 of {n_req} requirements are verified" in closing
    docs = Store(out).get("submission.documents")
    assert "verification.tests" in {d["id"] for d in docs["deps"]["records"]}
    assert check(out) == []


def test_every_requirement_but_the_performance_ones_is_named_by_a_test():
    """Read from the test files' `verifies` marks (AST), so a requirement no test names is found
    without running the suite; performance requirements are verified by benchmarks instead."""
    import ast

    named = set()
    for path in (REPO / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "verifies":
                named.update(a.value for a in node.args if isinstance(a, ast.Constant))
    d = spec.load()
    assert named <= set(d.requirements), named - set(d.requirements)
    assert [r for r in d.tests_needed() if r not in named] == []


def test_architecture_chart_reads_the_imports_and_the_stage_table(tmp_path):
    from submission import architecture

    graph = architecture.imports()
    assert graph["evidence"] == set() and "model" in graph["eda"] and "design" in graph["submission"]
    assert architecture.stages_of("design") == ["design.verify"]
    depth = architecture.layers(graph)
    assert all(depth[p] > depth[q] for p, targets in graph.items() for q in targets)
    assert architecture.draw(tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not (REPO / ".venv" / ".installed").exists(), reason="needs make and the project's .venv")
def test_make_verify_writes_the_record_even_when_a_test_fails_and_exits_with_the_failure(tmp_path):
    import shutil

    if shutil.which("make") is None:
        pytest.skip("needs make")
    suite = tmp_path / "my suite"            # a space in the path: TESTS is split on white space only
    suite.mkdir()
    (suite / "test_tiny.py").write_text(TRACE_TESTS)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    proc = subprocess.run(["make", "--no-print-directory", "verify", f"OUT={out}",
                           f"TESTS={suite / 'test_tiny.py'}", "PYTEST_ARGS=-q -p design.pytest_plugin -p no:cacheprovider"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    # TESTS is split on white space: the two halves are no files, pytest cannot run, no record
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert not layout.record(out, "verification.tests").is_file()
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "test_tiny.py").write_text(TRACE_TESTS)
    proc = subprocess.run(["make", "--no-print-directory", "verify", f"OUT={out}",
                           f"TESTS={tmp_path / 'tiny' / 'test_tiny.py'}",
                           "PYTEST_ARGS=-q -p design.pytest_plugin -p no:cacheprovider"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "1 failed" in proc.stdout, proc.stdout + proc.stderr
    # 1 of the suite's requirements, plus those that `make bench` results in the checkout verify
    assert re.search(r"verification: \d+ of \d+ requirement\(s\) verified, 3 test\(s\) \(1 failed", proc.stdout), proc.stdout
    data = Store(out).get("verification.tests")["data"]
    assert data["requirements"]["SRS-002"]["verdict"] == "not verified"
    assert data["requirements"]["SRS-001"]["verdict"] == "verified"
    assert data["junit"]["path"] == str(layout.junit(out))
