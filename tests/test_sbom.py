"""The SBOM (`submission.sbom`): CycloneDX-valid, the runtime closure only, hashed into the trail;
the vulnerability assessment says "not assessed" offline and reports findings when a source answers."""
from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from evidence import Store, layout
from evidence.audit import audit
from submission import sbom, vulnerabilities

REPO = Path(__file__).resolve().parent.parent
TEST_ONLY = ("pytest", "hypothesis", "pypdf", "scikit-learn", "cyclonedx-python-lib")


def validate(bom: dict) -> None:
    """Validate against the official CycloneDX 1.6 JSON schema (strict), as cyclonedx-python-lib ships it
    (the test extra; a venv made before it was added skips, CI fails)."""
    try:
        import cyclonedx  # noqa: F401
    except ImportError:
        message = "cyclonedx-python-lib is not installed: make venv installs requirements/test.txt"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom))
    assert error is None, str(error)


@pytest.fixture(scope="module")
def sbom_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sbom") / "run"
    [record] = sbom.run(out, {"vulnerabilities": {"check": False}})
    return out, record


def test_sbom_validates_against_the_cyclonedx_schema_and_lists_the_runtime_only(sbom_run):
    out, record = sbom_run
    bom = json.loads(layout.sbom(out).read_text())
    validate(bom)
    names = {c["name"] for c in bom["components"]}
    assert {"tensorflow", "pydicom", "numpy", "keras", "pynetdicom", "python"} <= names
    assert [n for n in TEST_ONLY if n in names] == []
    locked = sbom.read_lock()
    libraries = {c["name"]: c for c in bom["components"] if c["type"] == "library"}
    assert set(libraries) == set(locked) and "cxr-510k-toolkit" not in names
    tf = libraries["tensorflow"]
    assert tf["purl"] == f"pkg:pypi/tensorflow@{locked['tensorflow']['version']}" == tf["bom-ref"]
    assert {h["content"] for h in tf["hashes"]} == set(locked["tensorflow"]["sha256"])
    assert all(h["alg"] == "SHA-256" for c in libraries.values() for h in c["hashes"])
    assert bom["metadata"]["component"]["name"] == "PneumoTriage CXR"
    assert record["data"]["components"] == len(bom["components"]) == len(locked) + 1
    assert record["data"]["component_names"] == [c["name"] for c in bom["components"]]


def test_the_validator_rejects_a_broken_sbom(sbom_run):
    bom = json.loads(layout.sbom(sbom_run[0]).read_text())
    bom["components"][0]["licenses"] = [{"license": {"id": "Not-An-SPDX-Id"}}]
    with pytest.raises(AssertionError):
        validate(bom)


def test_licenses_graph_and_support_come_from_metadata_and_facts(sbom_run):
    out, record = sbom_run
    bom = json.loads(layout.sbom(out).read_text())
    by_name = {c["name"]: c for c in bom["components"]}
    # numpy's metadata gives an SPDX expression; pydicom only a classifier
    assert by_name["numpy"]["licenses"] == [{"expression": "BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0"}]
    assert by_name["pydicom"]["licenses"] == [{"license": {"name": "MIT License"}}]
    graph = {d["ref"]: set(d["dependsOn"]) for d in bom["dependencies"]}
    tf_ref, keras_ref = by_name["tensorflow"]["bom-ref"], by_name["keras"]["bom-ref"]
    assert keras_ref in graph[tf_ref] and tf_ref in graph["device"]
    assert by_name["pydicom"]["bom-ref"] in graph[by_name["pynetdicom"]["bom-ref"]]
    props = {c["name"]: {p["name"]: p["value"] for p in c["properties"]} for c in bom["components"]}
    assert props["tensorflow"]["cxr-510k:end_of_support"] == "unknown"
    assert props["python"]["cxr-510k:end_of_support"] == ("2027-10" if by_name["python"]["version"].startswith("3.11")
                                                          else "unknown")
    data = record["data"]
    assert data["end_of_support_known"] + data["end_of_support_unknown"] == data["components"]
    assert sum(data["licenses"].values()) == data["components"] == sum(data["support_levels"].values())


def test_support_override_applies_to_its_versions_only():
    support = {"namespace": "x", "default": {"level": "d", "end_of_support": "unknown", "source": "s"},
               "overrides": {"python": {"versions": "3.11", "level": "p", "end_of_support": "2027-10", "source": "t"}}}
    assert sbom.support_of("python", "3.11.7", support)["end_of_support"] == "2027-10"
    assert sbom.support_of("python", "3.12.1", support)["end_of_support"] == "unknown"
    assert sbom.support_of("numpy", "2.0", support)["level"] == "d"


def test_the_audit_verifies_the_sbom_hash(sbom_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(sbom_run[0], out)
    failures, _ = audit(out, complete=False)
    assert not [f for f in failures if "software.sbom" in f or "sbom.cdx.json" in f]
    path = layout.sbom(out)
    path.write_text(path.read_text().replace('"tensorflow"', '"tensorflow-fork"', 1))
    failures, _ = audit(out, complete=False)
    assert any("sbom.cdx.json" in f for f in failures), failures


def test_offline_build_says_not_assessed_and_never_no_vulnerability(sbom_run, tmp_path):
    assessment = sbom_run[1]["data"]["vulnerability_assessment"]
    assert assessment["assessed"] is False and "switched off" in assessment["reason"]
    assert "findings" not in assessment and assessment["checked_utc"]
    # asked, but nothing listens at the source: not assessed, with the reason
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = vulnerabilities.assess({"numpy": "2.0.0"}, check=True, url=f"http://127.0.0.1:{port}/v1/querybatch",
                                    timeout_s=2)
    assert result["assessed"] is False and "could not be reached" in result["reason"] and "findings" not in result


class _FakeOsv(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        queries = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["queries"]
        results = [{"vulns": [{"id": "PYSEC-0000-1", "modified": "2026-01-01T00:00:00Z"}]}
                   if q["package"]["name"] == "pillow" else {} for q in queries]
        body = json.dumps({"results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_findings_from_a_reachable_source_go_into_the_record_and_the_sbom(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _FakeOsv)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/querybatch"
        [record] = sbom.run(tmp_path / "run", {"vulnerabilities": {"check": True, "url": url, "timeout_s": 5}})
    finally:
        server.shutdown()
    assessment = record["data"]["vulnerability_assessment"]
    assert assessment["assessed"] is True and assessment["components_checked"] == len(sbom.read_lock())
    assert [f["component"] for f in assessment["findings"]] == ["pillow"]
    bom = json.loads(layout.sbom(tmp_path / "run").read_text())
    validate(bom)
    assert [(v["id"], v["affects"][0]["ref"].split("@")[0]) for v in bom["vulnerabilities"]] == \
        [("PYSEC-0000-1", "pkg:pypi/pillow")]
    assert Store(tmp_path / "run").value("software.sbom", "vulnerability_assessment.components_with_findings") == 1


def test_a_lock_without_hashes_is_one_clear_error(tmp_path):
    lock = tmp_path / "runtime.txt"
    lock.write_text("numpy==2.0.0\n")
    with pytest.raises(sbom.SbomError, match="no sha256 for numpy.*make lock"):
        sbom.read_lock(lock)
