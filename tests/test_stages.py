"""The stage table (evidence/stages.py) and what is derived from it: record stages and code,
the generated make rules, the why line, and ARCHITECTURE.md's record table."""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

from evidence import EvidenceError, write_record
from evidence import layout
from evidence.make import makefile, prepare, stage_rule
from evidence.stages import (STAGES, by_name, check_dependency, code_files, markdown, run_records, upstream,
                             stage_of, why)

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"evidence", "eda", "model", "validation", "submission"}


def test_architecture_record_table_is_the_generated_one():
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- stages:begin -->\n(.*)<!-- stages:end -->", text, re.S)
    assert found, "ARCHITECTURE.md lost its stages:begin/end markers"
    assert found.group(1) == markdown(), "ARCHITECTURE.md's record table differs from evidence/stages.py"


def test_each_record_has_one_stage_and_each_stage_a_module():
    declared = [r for s in STAGES for r in s.records]
    assert len(declared) == len(set(declared))
    assert len({s.name for s in STAGES}) == len(STAGES)
    for s in STAGES:
        assert importlib.util.find_spec(s.module) is not None, s.module
        for r in s.records:
            assert stage_of(r.replace("*", "x")) is s
    assert stage_of("submission.heldout_report").name == "submission.document"
    with pytest.raises(EvidenceError, match="no stage declares it"):
        stage_of("validation.unknown")


def test_needs_point_upstream_to_declared_records():
    seen: set[str] = set()
    for s in (s for s in STAGES if s.in_run):
        assert set(s.needs) <= seen, f"{s.name} needs a record no earlier stage writes"
        seen |= set(s.records)


def _source(name: str) -> Path | None:
    """The file of project module `name`, or None when `name` is not a project module."""
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if name.split(".")[0] in PACKAGES and path.is_file():
            return path
    return None


def _imports(module: str) -> set[str]:
    """Top-level project packages a module reaches through its imports (also those inside
    functions), followed transitively."""
    reached, todo, done = set(), [module, f"{module}.__main__"], set()
    while todo:
        name = todo.pop()
        path = _source(name)
        if name in done or path is None:
            continue
        done.add(name)
        reached.add(name.split(".")[0])
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                todo += [base] + [f"{base}.{a.name}" for a in node.names]
    return reached


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_a_stage_hashes_all_the_code_it_imports(stage):
    assert _imports(stage.module) <= set(stage.code_sources), (
        f"{stage.name} imports code from folders its records do not hash: add them to its sources")


def test_every_non_python_file_of_the_code_folders_is_hashed_by_a_stage():
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", *sorted(PACKAGES), "templates"],
                            capture_output=True, text=True, check=True).stdout.split()
    hashed = {f.relative_to(REPO).as_posix() for s in STAGES for f in code_files(s)}
    loose = [f for f in listed if not f.endswith(".py") and f not in hashed]
    assert loose == [], f"files no stage hashes (name them in a stage's files): {loose}"


def test_generated_rule_makes_every_hashed_file_a_prerequisite():
    stage = by_name("validation.evaluate")
    rule = stage_rule(stage)
    head, _, recipe = rule.partition("| $(READY)\n")
    targets, _, prereqs = head.partition(" &: ")
    assert targets.endswith(" ".join(f"$(EV)/{r}.json" for r in stage.records))
    names = prereqs.replace("\\\n", " ").split()
    files = [f.relative_to(REPO).as_posix() for f in code_files(stage)]
    assert "validation/published_benchmarks.yml" in files and "evidence/record.schema.json" in files
    needs = ["validation.threshold", "validation.design", "validation.plan_lock", "model.test_predictions"]
    assert names == [*(f"$(EV)/{r}.json" for r in needs), "$(P)/validate.json", *files]
    assert recipe == "\t@$(PY) -m validation.evaluate --out $(OUT) --params $(PARAMS) --changed $?\n"
    assert 'python -m eda.cohort --data "$(DATA)"' not in makefile()
    assert '-m eda.cohort --data "$(DATA)" --out $(OUT)' in makefile()
    assert "validation.heldout" not in makefile(), "an on-demand stage is not part of the run's rules"


def test_why_names_what_changed(tmp_path):
    out = tmp_path / "run"
    assert why("eda.split", out, []) == "no record yet"
    (out / "evidence").mkdir(parents=True)
    (out / "evidence" / "split.patients.json").write_text("{}")
    line = why("eda.split", out, [str(out / "params" / "split.json"), str(out / "evidence" / "cohort.manifest.json"),
                                  "eda/split.py", "eda/a.py", "eda/b.py", "eda/c.py"])
    assert line == ("params section split changed; record cohort.manifest changed; "
                    "code changed: eda/split.py, eda/a.py, eda/b.py (+1 more)")
    assert why("eda.split", out, []) == "nothing it depends on changed (forced)"


def test_prepare_rewrites_only_what_changed(tmp_path):
    out = tmp_path / "run"
    prepare(REPO / "params.yaml", out, "demo")
    files = [layout.stage_rules(out), layout.data_source(out), layout.params_stamp(out, "train")]
    past = 1_000_000_000
    for f in files:
        os.utime(f, (past, past))
    prepare(REPO / "params.yaml", out, "demo")
    assert [f.stat().st_mtime for f in files] == [past] * 3
    prepare(REPO / "params.yaml", out, "other")
    assert (out / "cohort" / "source.txt").read_text() == "other\n"
    assert (out / "cohort" / "source.txt").stat().st_mtime != past
    assert layout.stage_rules(out).read_text() == makefile()


def test_write_record_takes_stage_and_code_from_the_table(tmp_path):
    record = write_record(tmp_path, "validation.sample_size", data={"n": 1}, synthetic=False)
    assert record["stage"] == "validation.sample_size"
    assert [f["path"] for f in record["code"]["files"]] == [
        f.relative_to(REPO).as_posix() for f in code_files(by_name("validation.sample_size"))]
    with pytest.raises(EvidenceError, match="depends on workflow.dicom, which stage eda.split does not declare"):
        check_dependency("split.patients", "workflow.dicom")
    check_dependency("validation.threshold", "training.run")   # upstream through model.predictions
    check_dependency("validation.acceptance", "validation.test")   # earlier record of the same stage


def test_the_plan_is_locked_before_any_test_split_score():
    plan, scores = by_name("submission.plan"), by_name("model.score_test")
    assert stage_of("validation.plan_lock") is plan and stage_of("model.test_predictions") is scores
    assert "validation.plan_lock" in scores.needs and "model.test_predictions" in by_name("validation.evaluate").needs
    after_lock = {r for s in STAGES if "validation.plan_lock" in upstream(s) for r in s.records}
    assert after_lock >= {"model.test_predictions", "validation.test", "validation.acceptance", "submission.documents"}
    assert not upstream(plan) & after_lock, "the plan may cite no record written after the lock"
    with pytest.raises(EvidenceError, match="depends on validation.test, which stage submission.plan does not declare"):
        check_dependency("submission.plan", "validation.test")
    order = run_records()
    assert order.index("validation.plan_lock") < order.index("model.test_predictions") < order.index("validation.test")
    assert by_name("model.predict").outs == ("predictions/val.csv",) and scores.outs == ("predictions/test.csv",)


def test_run_records_in_pipeline_order():
    records = run_records()
    assert records[0] == "cohort.manifest" and records[-1] == "submission.documents"
    assert not any(r.startswith("heldout.") for r in records)


def test_prepare_names_a_missing_section_a_stage_reads(tmp_path):
    import yaml
    from evidence.params import ParamsError

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["latency"]
    file = tmp_path / "params.yaml"
    file.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="section 'latency' is missing; stage validation.latency reads it"):
        prepare(file, tmp_path / "run", "demo")
    assert not (tmp_path / "run").exists()
