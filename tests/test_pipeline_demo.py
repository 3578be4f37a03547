"""End to end on a small demo cohort: `make submission`, the audit, tampering, and up-to-date checks.

One build per session (about a minute): the demo is made smaller and trained for fewer epochs
than the default, everything else is the real pipeline driven through the Makefile.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evidence import Store
from demo_params import write_small

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def make(*args, cwd=REPO, check=True):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def demo_params(tmp_path_factory) -> Path:
    return write_small(tmp_path_factory.mktemp("params") / "params.yaml", n_patients=160, epochs=6, resamples=500, pdf=True)


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory, demo_params) -> Path:
    out = tmp_path_factory.mktemp("demo") / "build"
    make("submission", f"OUT={out}", f"PARAMS={demo_params}")
    return out


@pytest.mark.verifies("SRS-030", "SRS-033")
def test_submission_writes_documents_and_trace(demo_build):
    sub = demo_build / "submission"
    for name in ("510k_submission", "validation_plan"):
        for ext in ("md", "html", "pdf"):
            assert (sub / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    trace = json.loads((sub / "traceability.json").read_text())["documents"]
    assert set(trace) >= {"510k_submission", "validation_plan"}
    assert all(trace[name]["traces"] for name in trace), "a document without traced values"


def test_every_record_of_a_demo_run_is_synthetic(demo_build):
    store = Store(demo_build)
    derived = [rid for rid in store.ids() if store.get(rid)["deps"]["records"] or rid == "cohort.manifest"]
    assert "validation.test" in derived and "training.run" in derived
    assert [rid for rid in derived if not store.get(rid)["synthetic"]] == []


def test_pdf_shows_sensitivity_and_specificity_cis_equal_to_evidence(demo_build):
    from pypdf import PdfReader

    text = " ".join((p.extract_text() or "") for p in PdfReader(demo_build / "submission" / "510k_submission.pdf").pages)
    text = " ".join(text.split())
    entries = json.loads((demo_build / "submission" / "traceability.json").read_text())["documents"]["510k_submission"]["traces"]
    store = Store(demo_build)
    for metric in ("sensitivity", "specificity"):
        wilson = store.value("validation.test", f"metrics.{metric}.wilson")
        assert "wilson" in wilson["method"] and wilson["ci_level"] == 0.95
        shown = [e for e in entries if e["record_id"] == "validation.test"
                 and e["pointer"] == f"/data/metrics/{metric}/wilson"]
        assert shown, f"the Wilson interval of {metric} is not rendered in the submission"
        for e in shown:
            assert e["value"] == wilson
            for key in ("estimate", "ci_low", "ci_high"):
                assert f"{wilson[key] * 100:.1f}%" in e["text"], (key, e["text"])
            assert "95% CI" in e["text"]
            assert " ".join(e["text"].split()) in text, f"{e['text']!r} not in the PDF text"


def _body_text(reader) -> str:
    """The PDF's text without its running headers and footers (lines found on most pages, and the
    page numbers), so that a value broken across a page boundary reads in one piece."""
    import re
    from collections import Counter
    pages = [(p.extract_text() or "").splitlines() for p in reader.pages]
    seen = Counter(line.strip() for lines in pages for line in set(lines))
    running = {line for line, k in seen.items() if line and k >= max(2, len(pages) // 2)}
    return "\n".join(line for lines in pages for line in lines
                     if line.strip() not in running and not re.fullmatch(r"\s*Page \d+ of \d+\s*", line))


def test_test_scores_follow_the_plan_lock_and_the_pdf_says_pre_specified(demo_build):
    from pypdf import PdfReader
    from evidence.canonical import sha256_file
    from evidence.prespecified import check

    store = Store(demo_build)
    lock, scores = store.get("validation.plan_lock"), store.get("model.test_predictions")
    assert {"id": "validation.plan_lock", "sha256": lock["sha256"]} in scores["deps"]["records"]
    assert scores["created_utc"] >= lock["created_utc"] and lock["data"]["test_scores_present"] is False
    assert {f["path"] for f in lock["data"]["plan_files"]} >= {"submission/validation_plan.md",
                                                               "submission/validation_plan.pdf"}
    assert all(sha256_file(demo_build / f["path"]) == f["sha256"] for f in lock["data"]["plan_files"])
    assert check(demo_build) == []
    claim = store.value("validation.acceptance", "prespecified")
    assert claim["plan_lock_sha256"] == lock["sha256"] and claim["test_scores_sha256"] == scores["sha256"]
    text = " ".join(_body_text(PdfReader(demo_build / "submission" / "510k_submission.pdf")).split())
    assert "Performance goals pre-specified in the validation plan, locked by" in text
    assert lock["sha256"] in text.replace(" ", "")


def test_audit_passes_then_rebuild_is_a_no_op(demo_build, demo_params):
    proc = make("audit", f"OUT={demo_build}", f"PARAMS={demo_params}")
    assert "OK" in proc.stdout
    q = make("-q", "submission", f"OUT={demo_build}", f"PARAMS={demo_params}", check=False)
    assert q.returncode == 0, "a second `make submission` would redo work although nothing changed"


@pytest.fixture()
def build_copy(demo_build, tmp_path) -> Path:
    copy = tmp_path / "build"
    shutil.copytree(demo_build, copy)
    return copy


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("target", ["figure", "predictions", "model", "record"])
def test_audit_fails_and_names_what_was_changed(build_copy, demo_params, target):
    if target == "figure":
        path = sorted((build_copy / "figures").glob("*.png"))[0]
        _flip_last_byte(path)
        expected = path.relative_to(build_copy).as_posix()
    elif target == "predictions":
        path = build_copy / "predictions" / "test.csv"
        _flip_last_byte(path)
        expected = "predictions/test.csv"
    elif target == "model":
        path = build_copy / "models" / "model.keras"
        _flip_last_byte(path)
        expected = "models/model.keras"
    else:
        path = build_copy / "evidence" / "validation.test.json"
        record = json.loads(path.read_text())
        record["data"]["confusion"]["tp"] += 1
        path.write_text(json.dumps(record))
        expected = "record validation.test: field sha256"
    proc = make("audit", f"OUT={build_copy}", f"PARAMS={demo_params}", check=False)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr


def test_records_of_a_run_are_those_the_stage_table_declares(demo_build):
    from evidence.stages import code_files, out_declared, run_records, stage_of

    store = Store(demo_build)
    assert sorted(store.ids()) == sorted(run_records())
    for rid in run_records():
        record, stage = store.get(rid), stage_of(rid)
        assert record["stage"] == stage.name
        assert [f["path"] for f in record["code"]["files"]] == [
            f.relative_to(REPO).as_posix() for f in code_files(stage)], rid
        undeclared = [o["path"] for o in record["outs"] if not out_declared(stage, o["path"])]
        assert undeclared == [], f"{rid} writes files its stage does not declare: {undeclared}"


@pytest.fixture()
def repo_copy(demo_build, tmp_path) -> tuple[Path, Path]:
    """A copy of the checkout (tracked files, modification times kept, the same .venv) and of the
    demo run, so that a test can edit code files without touching the checkout."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split()
    repo = tmp_path / "repo"
    for name in listed:
        if (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    (repo / ".venv").symlink_to((REPO / ".venv").resolve())
    out = tmp_path / "build"
    shutil.copytree(demo_build, out)
    return repo, out


def _reran(proc) -> list[str]:
    return re.findall(r"^\[([\w.]+)\] .* \((.*)\)$", proc.stdout, re.M)


def test_editing_a_yml_file_reruns_exactly_the_stages_that_hash_it(repo_copy, demo_params):
    from evidence.stages import hashed_by

    repo, out = repo_copy
    assert [s.name for s in hashed_by("validation/published_benchmarks.yml")] == ["validation.evaluate"]
    with (repo / "validation" / "published_benchmarks.yml").open("a") as f:
        f.write("# a reviewer's note\n")
    proc = make("submission", f"OUT={out}", f"PARAMS={demo_params}", cwd=repo)
    assert _reran(proc) == [
        ("validation.evaluate", "code changed: validation/published_benchmarks.yml"),
        ("submission", "record validation.acceptance, validation.benchmark, validation.calibration, "
                       "validation.subgroups, validation.test changed")]
    assert "OK" in make("audit", f"OUT={out}", cwd=repo).stdout


def test_editing_a_json_schema_reruns_every_stage(repo_copy, demo_params):
    from evidence.stages import STAGES, hashed_by

    repo, out = repo_copy
    in_run = [s.name for s in STAGES if s.in_run]
    assert [s.name for s in hashed_by("evidence/record.schema.json") if s.in_run] == in_run
    schema = repo / "evidence" / "record.schema.json"
    schema.write_text(schema.read_text() + "\n")
    dry = make("-n", "submission", f"OUT={out}", f"PARAMS={demo_params}", cwd=repo)
    ran = re.findall(r"-m (\S+) .*--changed", dry.stdout)
    assert sorted(ran) == sorted(in_run)
