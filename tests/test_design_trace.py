"""The design files and the trace from tests to requirements (design.spec, design.pytest_plugin,
design.verify, the audit's release gate)."""
from __future__ import annotations

import json
import os
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
