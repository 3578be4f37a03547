"""The Makefile passes FILES and HELDOUT to the commands as data: a name with spaces is one path and
nothing in a value runs in a shell. The recipes run for real, with PY standing in for the device's
Python (it records the arguments it was given) and the stage rules left empty."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.skipif(shutil.which("make") is None or not (REPO / ".venv" / ".installed").exists(),
                                reason="needs make and the project's .venv"), pytest.mark.verifies("SRS-045")]


def run_make(tmp_path: Path, goal: str, **variables: str) -> tuple[subprocess.CompletedProcess, list[str] | None]:
    out = tmp_path / "out"
    (out / ".make").mkdir(parents=True, exist_ok=True)
    (out / ".make" / "stages.mk").write_text("")            # no stage rules: the recipe alone runs
    args_file = tmp_path / "args"
    fake = tmp_path / "fake python"
    fake.write_text('#!/bin/bash\n[ "$2" = evidence.make ] && exit 0\nprintf "%s\\0" "$@" > "$ARGS_FILE"\n')
    fake.chmod(0o755)
    args_file.unlink(missing_ok=True)
    cmd = ["make", "-C", str(REPO), "--no-print-directory", goal, f"PY={fake}".replace(" ", "\\ "), f"OUT={out}",
           "OUT_LOCKED=1", *(f"{k}={v}" for k, v in variables.items())]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ARGS_FILE": str(args_file)})
    argv = args_file.read_text().split("\0")[:-1] if args_file.exists() else None
    return proc, argv


@pytest.mark.parametrize("value", ["x; touch {p}", "x $(shell touch {p})", "x `touch {p}`", "x\"; touch {p}; \"",
                                   "$$(touch {p})", "x' ; touch {p} ; '"])
def test_infer_files_never_run_a_shell(tmp_path, value):
    witness = tmp_path / "P"
    proc, argv = run_make(tmp_path, "infer", FILES=value.format(p=witness))
    assert not witness.exists(), proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert argv[-1] == value.format(p=witness) and argv[-2] == "--"


def test_infer_files_one_path_with_spaces_or_one_per_line(tmp_path):
    proc, argv = run_make(tmp_path, "infer", FILES="a b.dcm")
    assert proc.returncode == 0, proc.stderr
    assert argv == ["-m", "model.infer", "--run", str(tmp_path / "out"), "--", "a b.dcm"]
    proc, argv = run_make(tmp_path, "infer", FILES="first file.dcm\n\nsecond/dir\n-odd.dcm\n")
    assert argv[-4:] == ["--", "first file.dcm", "second/dir", "-odd.dcm"]


def test_infer_without_files_is_one_error_line(tmp_path):
    proc, argv = run_make(tmp_path, "infer")
    assert proc.returncode != 0 and argv is None
    assert "error: set FILES=" in proc.stderr


def test_heldout_folder_with_spaces_and_shell_text(tmp_path):
    witness = tmp_path / "P"
    folder = f"my set; touch {witness} $(touch {witness})"
    proc, argv = run_make(tmp_path, "heldout", HELDOUT=folder)
    assert proc.returncode == 0, proc.stderr
    assert not witness.exists()
    assert argv == ["-m", "validation.heldout", "--out", str(tmp_path / "out"), "--heldout", folder,
                    "--params", "params.yaml"]
