"""The quiet console: progress lines, captured library output, TensorFlow imported in one place."""
from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evidence import console

pytestmark = pytest.mark.verifies("SRS-043")

REPO = Path(__file__).resolve().parent.parent
TF_NOISE = ("cuInit", "oneDNN", "absl", "cudart", "TF-TRT", "computation placer", "cpu_feature_guard")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(total, stream, **kw):
    return list(console.progress(range(total), "predict test", total=total, stream=stream, **kw))


def test_progress_in_a_log_prints_each_quarter_once():
    stream = io.StringIO()
    assert _run(2000, stream) == list(range(2000))
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "predict test: 500/2000", "predict test: 1000/2000", "predict test: 1500/2000", "predict test: 2000/2000"]
    assert [line.split("(")[1].split("%")[0] for line in lines] == ["25", "50", "75", "100"]


def test_progress_of_a_short_loop_in_a_log_prints_nothing():
    stream = io.StringIO()
    assert _run(console.MIN_ITEMS_FOR_MILESTONES - 1, stream) == list(range(console.MIN_ITEMS_FOR_MILESTONES - 1))
    assert stream.getvalue() == ""


def test_progress_with_coarse_updates_prints_one_line_per_update():
    stream = io.StringIO()
    bar = console.Progress("infer", 1000, stream=stream)
    for done in (64, 640, 1000):
        bar.update(done)
    assert [line.split(" (")[0] for line in stream.getvalue().splitlines()] == ["infer: 640/1000", "infer: 1000/1000"]


def test_progress_on_a_terminal_rewrites_one_line():
    stream = Terminal()
    _run(50, stream)
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("predict test: 50/50 (100%, 0 s)\n")
    assert text.count("\n") == 1


def test_progress_left_open_is_closed_with_a_newline():
    stream = Terminal()
    items = console.progress(range(10), "eda pixels", total=10, stream=stream)
    next(items), next(items)
    assert not stream.getvalue().endswith("\n")
    items.close()
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1


def test_quiet_silences_progress(tmp_path):
    for stream in (io.StringIO(), Terminal()):
        with console.session(tmp_path, "demo", quiet=True):
            _run(4000, stream)
        assert stream.getvalue() == ""


def test_captured_stderr_reaches_the_log_of_the_running_command(tmp_path, capfd):
    with console.session(tmp_path, "demo"):
        with console.captured_stderr("native"):
            os.write(2, b"E0000 failed call to cuInit: UNKNOWN ERROR (303)\n")
    assert capfd.readouterr().err == ""
    assert "INFO native: E0000 failed call to cuInit" in (tmp_path / "logs" / "demo.log").read_text()


def test_captured_stderr_before_a_command_waits_for_its_log(tmp_path, capfd):
    with console.captured_stderr("native"):
        os.write(2, b"port.cc:153] oneDNN custom operations are on\n")
    assert capfd.readouterr().err == ""
    with console.session(tmp_path, "demo"):
        pass
    assert "oneDNN custom operations are on" in (tmp_path / "logs" / "demo.log").read_text()


def test_captured_stderr_gives_the_text_back_when_the_block_fails(capfd):
    with pytest.raises(ImportError):
        with console.captured_stderr("native"):
            os.write(2, b"libcudart.so.12: cannot open shared object file\n")
            raise ImportError("no module")
    assert "libcudart.so.12: cannot open shared object file" in capfd.readouterr().err


def test_importing_tensorflow_prints_nothing_on_the_terminal():
    code = "import model.tf as m; m.tf.constant([1.0]) + 1; print(m.keras.__version__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert not [w for w in TF_NOISE if w in proc.stdout]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_tensorflow_and_keras_are_imported_only_by_model_tf():
    offenders = []
    for package in ("eda", "evidence", "model", "validation", "submission", "bench"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == REPO / "model" / "tf.py":
                continue
            if _imports(path) & {"tensorflow", "keras", "tf_keras"}:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == [], f"import TensorFlow and Keras through model.tf: {offenders}"
    assert {"tensorflow", "keras"} <= _imports(REPO / "model" / "tf.py")


def test_model_tf_does_not_hide_devices():
    text = (REPO / "model" / "tf.py").read_text()
    assert "CUDA_VISIBLE_DEVICES" not in text and "set_visible_devices" not in text
