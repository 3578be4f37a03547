"""One make at a time on a run folder: a second make on the same OUT exits at once with one line and
touches nothing of the first run's (the Makefile reruns itself under `flock OUT/.lock`)."""
from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest

from evidence import chain, layout
from evidence.stages import run_records
from demo_params import write_small

pytestmark = pytest.mark.verifies("SRS-041")

REPO = Path(__file__).resolve().parent.parent
BUSY = "error: another make is working on OUT="


def make(*args, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900, **kw)


def _hold(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    f = open(layout.run_lock(out), "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_a_second_make_exits_at_once_and_touches_nothing(tmp_path):
    out = tmp_path / "run"
    record = layout.record(out, "training.run")
    record.parent.mkdir(parents=True)
    record.write_text('{"id": "training.run"}\n')          # a first run's file, newer params would rebuild
    with _hold(out):
        before = _snapshot(out)
        for goal in ("train", "submission", "audit", "clean"):
            proc = make(goal, f"OUT={out}", "DATA=demo")
            assert proc.returncode == 2, proc.stdout + proc.stderr
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert errors == [f"{BUSY}{out} (it holds {out}/.lock): wait for it, rerun with WAIT=1 to wait, "
                              "or use another OUT"]
            assert _snapshot(out) == before, f"make {goal} changed the locked run folder"
    assert not layout.params_stamp(out, "train").exists() and not layout.stage_rules(out).exists()


def test_goals_without_a_run_folder_take_no_lock(tmp_path):
    out = tmp_path / "run"
    with _hold(out):
        proc = make("help", f"OUT={out}")
    assert proc.returncode == 0 and "submission" in proc.stdout


@pytest.mark.slow
def test_two_concurrent_make_submission_one_exits_no_record_lost(tmp_path):
    small = write_small(tmp_path / "params.yaml")
    out = tmp_path / "x"
    args = ("submission", f"OUT={out}", f"PARAMS={small}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.Popen(["make", "--no-print-directory", *args], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not _held_by_another(out) and first.poll() is None:   # wait until the first make holds the lock
        time.sleep(0.2)
    assert first.poll() is None, "the first make ended before it could be raced"
    second = make(*args)
    assert second.returncode == 2 and BUSY in second.stderr
    stdout, stderr = first.communicate(timeout=900)
    assert first.returncode == 0, stdout + stderr
    assert {p.stem for p in layout.evidence(out).glob("*.json")} == set(run_records())
    assert chain.check(out) == []
    audit = make("audit", f"OUT={out}", f"PARAMS={small}")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "signature: submission.documents signed by Demo Signer" in audit.stdout
    entries = layout.evidence_log(out).read_text()
    waited = make(*args, "WAIT=1")                            # takes the free lock, finds nothing to redo
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert layout.evidence_log(out).read_text() == entries


def _held_by_another(out: Path) -> bool:
    lock = layout.run_lock(out)
    if not lock.is_file():
        return False
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False
