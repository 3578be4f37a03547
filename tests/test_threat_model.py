"""The threat model (`submission/data/threat_model.yml`): its schema and cross-references, every test
it names exists (found by parsing the test files, not by running them), the diagram, and the
security-testing outcomes: from record `verification.tests` when present, else "not run in this build"."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

from submission import threat_model as tm

REPO = Path(__file__).resolve().parent.parent


def defined_tests(path: Path) -> set[str]:
    """Test functions of a test file, module level and in Test classes (`Class::test` ids)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {f"{node.name}::{f.name}" for f in node.body
                      if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.name.startswith("test")}
    return names


def test_the_threat_model_passes_its_schema_and_cross_checks():
    model = tm.load()
    assert {f["name"] for f in model["flows"]} >= {"DICOM input over the network", "DICOM files from disk",
                                                    "Model file to the device", "Evidence store and signatures",
                                                    "Notification channel and results to the PACS",
                                                    "Clinician images and reports"}
    assert all(set(f["stride"]) == set(tm.STRIDE) for f in model["flows"])


def test_every_named_test_exists():
    model = tm.load()
    missing, cache = [], {}
    for nodeid in tm.named_tests(model):
        file, _, name = nodeid.partition("::")
        path = REPO / file
        if path not in cache:
            cache[path] = defined_tests(path) if path.is_file() else set()
        if name not in cache[path]:
            missing.append(nodeid)
    assert missing == [], f"threat_model.yml names tests that do not exist: {missing}"
    assert len(tm.named_tests(model)) >= 20


def test_every_code_control_has_a_test_or_says_why_not():
    model = tm.load()
    for name, c in model["controls"].items():
        if c["kind"] == "code":
            assert c["tests"] or c.get("gap"), name
        else:
            assert "tests" not in c, name


@pytest.mark.parametrize("change, message", [
    (lambda m: m["flows"][0]["stride"].pop("repudiation"), "repudiation"),
    (lambda m: m["flows"][0]["stride"]["tampering"].update(controls=["C_nowhere"]), "C_nowhere"),
    (lambda m: m["flows"][0].update(to="nowhere"), "nowhere"),
    (lambda m: m["controls"]["C_paths"].update(tests=["tests/test_x.py"]), "does not match"),
    (lambda m: m["controls"]["C_atomic"].update(tests=[]), "C_atomic|is not valid|should be non-empty"),
])
def test_a_broken_threat_model_is_one_clear_error(tmp_path, change, message):
    import yaml

    model = copy.deepcopy(tm.load())
    change(model)
    path = tmp_path / "threat_model.yml"
    path.write_text(yaml.safe_dump(model, sort_keys=False))
    with pytest.raises(tm.ThreatModelError, match=message) as e:
        tm.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_an_unnamed_control_is_refused():
    model = copy.deepcopy(tm.load())
    model["controls"]["C_extra"] = {"kind": "labeling", "name": "x", "what": "y"}
    assert tm.cross_check(model) == ["control 'C_extra' is declared but no threat names it"]


def test_the_diagram_is_drawn(tmp_path):
    from PIL import Image

    path = tm.draw(tmp_path / "data_flow.png", tm.load())
    with Image.open(path) as im:
        assert im.width > 600 and im.height > 400


class _Store:
    """Just enough of a Renderer for the template globals: `fact`, `has`, `ev`."""

    def __init__(self, tests=None):
        from submission.render import Renderer, Traced

        self.tests = tests
        self._renderer = Renderer.__new__(Renderer)
        from submission.render import load_facts
        self._renderer.facts = load_facts()
        self.Traced = Traced

    def fact(self, dotted):
        return self._renderer.fact(dotted)

    def has(self, record_id, path=None):
        return record_id == tm.VERIFICATION and self.tests is not None

    def ev(self, record_id, path):
        return self.Traced(self.tests, record_id, "/data/tests", "0" * 64)


def test_outcomes_come_from_the_verification_record_or_say_not_run():
    absent = tm.template_globals(_Store())["security_controls"]()
    outcomes = {str(t["outcome"]) for c in absent for t in c["tests"]}
    assert outcomes == {tm.NOT_RUN}
    target = "tests/test_intake.py::test_rle_bomb_is_rejected_from_its_header_before_any_decoding"
    ran = [{"nodeid": target, "outcome": "failed", "requirements": []}]
    present = tm.template_globals(_Store(ran))["security_controls"]()
    shown = {t["nodeid"].value: t["outcome"] for c in present for t in c["tests"]}
    assert shown[target].value == "failed" and shown[target].record_id == tm.VERIFICATION
    assert {v for k, v in shown.items() if k != target} == {tm.NOT_RUN}
