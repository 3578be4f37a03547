"""Completeness: a run holds exactly the records the stage table declares and no output file that no
record lists; a stage killed at any write leaves a run the audit fails and the next `make` repairs.

Fault injection: a stage runs in a subprocess whose `os.replace` (the step that makes every atomic
write land, `evidence.atomic`, and the model file's move in `model.train`) exits the process with
status 9 at its k-th write into the run folder, before the file lands: the state a kill leaves.
By default the `submission` stage is killed at its first write and at its record write (the first
write into evidence/, which comes after every output: `test_every_output_is_written_before_the_record_
that_lists_it`); the other stages take minutes each to repair in a test. Set FAULT_MATRIX=1 to kill
every stage of the run at its first write, its last output write and its record write, or
FAULT_MATRIX=all to kill every stage at every write (long: the demo stage alone writes one file per
image).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audit_demo import audit, copy_run, make, rehash, small_build
from evidence import completeness, layout
from evidence.stages import STAGES, by_name, out_declared

pytestmark = [pytest.mark.slow, pytest.mark.verifies("SRS-037")]

MATRIX = os.environ.get("FAULT_MATRIX", "")
DEFAULT_STAGES = ("submission",)

#: runs a stage's main() with os.replace patched: FAULT_AT=k exits with status 9 at the k-th write
#: into FAULT_OUT (before it lands), FAULT_AT=record at its first write into FAULT_OUT/evidence/;
#: FAULT_LOG lists every write's destination, one per line (the last one is where it was killed).
RECORD = "record"
WRAPPER = r"""
import importlib, os, sys
out, at, log = os.path.realpath(os.environ["FAULT_OUT"]), os.environ["FAULT_AT"], os.environ["FAULT_LOG"]
real, count = os.replace, [0]
def replace(src, dst, *a, **k):
    if os.path.realpath(os.fspath(dst)).startswith(out + os.sep):
        count[0] += 1
        where = os.path.relpath(os.path.realpath(os.fspath(dst)), out)
        with open(log, "a") as f:
            f.write(where + "\n")
        if (where.startswith("evidence" + os.sep) if at == "record" else count[0] == int(at)):
            os._exit(9)
    return real(src, dst, *a, **k)
os.replace = replace
module = importlib.import_module(sys.argv[1])
module = module if hasattr(module, "main") else importlib.import_module(sys.argv[1] + ".__main__")
sys.exit(module.main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return small_build(tmp_path_factory)


def stage_args(stage, out: Path, params: Path) -> list[str]:
    args = stage.args.replace("DATA", "demo").split() if stage.args else []
    return [stage.module, *args, "--out", str(out), "--params", str(params), "-q"]


def run_stage(stage, out: Path, params: Path, at: int | str, log: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FAULT_OUT": str(out), "FAULT_AT": str(at), "FAULT_LOG": str(log),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", WRAPPER, *stage_args(stage, out, params)],
                          cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, timeout=900)


def fresh(stage, out: Path) -> None:
    """Remove the stage's records and the files it declares, as before its first run."""
    for rid in stage.records:
        layout.record(out, rid).unlink(missing_ok=True)
    for path in [p for p in out.rglob("*") if p.is_file()]:
        if out_declared(stage, path.relative_to(out).as_posix()):
            path.unlink()


def writes_of(stage, out: Path, params: Path, tmp_path: Path) -> list[str]:
    """The destinations of the stage's writes, in order, from a run that is not killed."""
    log = tmp_path / f"{stage.name}.writes"
    proc = run_stage(stage, out, params, 0, log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return log.read_text().split()


def kill_points(writes: list[str]) -> list[int]:
    """1-based write numbers to kill at: the first write, the last output write, the last record write."""
    if MATRIX == "all":
        return list(range(1, len(writes) + 1))
    records = [i for i, w in enumerate(writes, 1) if w.startswith("evidence/")]
    outputs = [i for i, w in enumerate(writes, 1) if not w.startswith("evidence/")]
    return sorted({1, *(outputs[-1:]), *(records[-1:])})


STAGE_NAMES = [s.name for s in STAGES if s.in_run and (MATRIX or s.name in DEFAULT_STAGES)]


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_a_stage_killed_at_a_write_fails_the_audit_and_make_repairs_it(demo, tmp_path, name):
    out, params = demo
    stage = by_name(name)
    if MATRIX:
        probe = copy_run(out, tmp_path / "probe")
        fresh(stage, probe)
        writes = writes_of(stage, probe, params, tmp_path)
        assert writes[-1].startswith("evidence/"), f"{name} writes {writes[-1]} after its last record"
        points = kill_points(writes)
    else:
        points = [1, RECORD]
    for at in points:
        run = tmp_path / f"kill{at}"
        copy_run(out, run)
        fresh(stage, run)
        log = tmp_path / f"kill{at}.log"
        killed = run_stage(stage, run, params, at, log)
        assert killed.returncode == 9, f"{name} was not killed at write {at}: {killed.stderr[-2000:]}"
        where = log.read_text().split()[-1]
        if at == RECORD:
            assert where.startswith("evidence/"), where
        broken = audit(run)
        assert broken.returncode != 0, f"audit passed on {name} killed at write {at} ({where})"
        assert "FAIL record" in broken.stdout or "FAIL file" in broken.stdout
        make("submission", f"OUT={run}", f"PARAMS={params}")
        repaired = audit(run)
        assert repaired.returncode == 0, (f"{name} killed at write {at} ({where}), then make submission: "
                                          f"audit fails:\n{repaired.stdout[-3000:]}{repaired.stderr[-2000:]}")
        shutil.rmtree(run)


def test_every_output_is_written_before_the_record_that_lists_it(demo, tmp_path):
    """Each record is written after every file it lists (a kill between them leaves no record
    that vouches for a file not yet written); shown for the stages of the default fault test."""
    out, params = demo
    for name in DEFAULT_STAGES:
        stage = by_name(name)
        run = copy_run(out, tmp_path / name)
        fresh(stage, run)
        writes = writes_of(stage, run, params, tmp_path)
        for rid in stage.records:
            at = writes.index(f"evidence/{rid}.json")
            listed = {o["path"] for o in json.loads(layout.record(run, rid).read_text())["outs"]}
            late = [w for w in writes[at + 1:] if w in listed]
            assert late == [], f"{rid} lists {late}, written after the record"


# ---------------------------------------------------------------- the tamper cases of completeness

def test_the_honest_run_passes_also_as_an_auditors_copy(demo, tmp_path):
    out, _ = demo
    proc = audit(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "audit: OK" in proc.stdout and "replay: OK" in proc.stdout
    copy = copy_run(out, tmp_path / "auditor" / "copy")
    away = out.with_name(out.name + ".away")
    out.rename(away)     # the copy must not need the original folder
    try:
        proc = audit(copy)
    finally:
        away.rename(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "replay: OK" in proc.stdout


def test_a_forged_extra_record_fails(demo, tmp_path):
    out, _ = demo
    run = copy_run(out, tmp_path / "run")
    record = json.loads(layout.record(run, "eda.pixels").read_text())
    record["id"] = "eda.extra"
    layout.record(run, "eda.extra").write_text(json.dumps(record))
    rehash(run, "eda.extra")
    proc = audit(run)
    assert proc.returncode != 0
    assert "FAIL record eda.extra: field evidence/eda.extra.json: expected one of the records" in proc.stdout


def test_a_deleted_record_fails(demo, tmp_path):
    out, _ = demo
    run = copy_run(out, tmp_path / "run")
    layout.record(run, "eda.quality").unlink()
    proc = audit(run)
    assert proc.returncode != 0
    assert "FAIL record eda.quality: field evidence/eda.quality.json: expected a record (stage eda) " \
           "found missing record" in proc.stdout


def test_a_deleted_documents_record_and_an_edited_document_fail(demo, tmp_path):
    out, _ = demo
    run = copy_run(out, tmp_path / "run")
    layout.record(run, "submission.documents").unlink()
    with open(layout.submission(run) / "510k_submission.html", "ab") as f:
        f.write(b"<!-- sensitivity 100% -->\n")
    proc = audit(run)
    assert proc.returncode != 0
    assert "FAIL record submission.documents: field evidence/submission.documents.json" in proc.stdout
    assert "FAIL file submission/510k_submission.html: field outs: expected a file a record lists" in proc.stdout


def test_a_rendered_file_no_record_lists_fails(demo, tmp_path):
    out, _ = demo
    run = copy_run(out, tmp_path / "run")
    (layout.submission(run) / "510k_submission_v2.html").write_text("<p>AUC 1.000</p>")
    (layout.figures(run) / "roc_best.png").write_bytes(b"\x89PNG")
    proc = audit(run)
    assert proc.returncode != 0
    for rel in ("submission/510k_submission_v2.html", "figures/roc_best.png"):
        assert f"FAIL file {rel}: field outs: expected a file a record lists" in proc.stdout


def test_files_that_are_not_outputs_are_named_with_a_reason():
    assert all(reason for reason in completeness.NOT_OUTPUTS.values())
    folders = completeness.output_folders(tuple(s for s in STAGES if s.in_run))
    assert {"submission", "figures", "predictions", "models", "workflow", "cohort", "evidence"} <= set(folders)


def test_an_interrupted_record_write_is_not_a_record(tmp_path):
    from evidence.record import record_ids

    folder = layout.evidence(tmp_path)
    folder.mkdir()
    (folder / "eda.quality.json").write_text("{}")
    (folder / ".model.predictions.json.agkvl4ib.tmp.json").write_text("{")  # a kill before the rename
    assert record_ids(tmp_path) == ["eda.quality"]
    assert completeness._excluded("evidence/.model.predictions.json.agkvl4ib.tmp.json")
    assert not completeness._excluded("evidence/model.predictions.json")
