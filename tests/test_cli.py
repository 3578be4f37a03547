"""Exit codes and error lines of every command: 2 and one `error:` line for bad input, 70 and the
traceback for a bug (evidence.cli.guarded), 1 for a check that found failures."""
from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from evidence.cli import EXIT_BAD_INPUT, EXIT_SOFTWARE, stage_main
from evidence.errors import ToolkitError

pytestmark = pytest.mark.verifies("SRS-042")

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("eda", "evidence", "model", "validation", "submission")


def _stage(tmp_path, call, *extra):
    params = tmp_path / "params.yaml"
    params.write_text("any: {}\n")
    return stage_main(["--out", str(tmp_path / "out"), "--params", str(params), *extra], prog="python -m pkg.demo",
                      doc="Doc.", call=call, summary=lambda result, args: f"done {result}")


def _raise(error):
    def call(*args, **kwargs):
        raise error
    return call


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_known_error_is_one_line_and_exit_2(tmp_path, capsys):
    class DemoError(ToolkitError):
        pass

    assert _stage(tmp_path, _raise(DemoError("manifest.csv row 3: label 'x' is not 0 or 1"))) == EXIT_BAD_INPUT
    assert _one_error_line(capsys.readouterr().err) == "error: manifest.csv row 3: label 'x' is not 0 or 1"


def test_os_error_names_the_file_and_the_reason(tmp_path, capsys):
    missing = tmp_path / "labels.csv"
    assert _stage(tmp_path, _raise(FileNotFoundError(2, "No such file or directory", str(missing)))) == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: {missing}: No such file or directory"
    assert _stage(tmp_path, lambda a: open(tmp_path / "no" / "such.csv")) == 2
    assert "No such file or directory" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("error", [ValueError("operands could not be broadcast"), KeyError("score"),
                                   ZeroDivisionError("division by zero")])
def test_unexpected_error_prints_the_traceback_and_exit_70(tmp_path, capsys, error):
    assert _stage(tmp_path, _raise(error)) == EXIT_SOFTWARE
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert f"{type(error).__name__}: " in err and ", in call" in err
    assert err.strip().splitlines()[-1].startswith(f"error: unexpected {type(error).__name__} (a bug")


def test_success_prints_the_summary(tmp_path, capsys):
    assert _stage(tmp_path, lambda a: 3) == 0
    captured = capsys.readouterr()
    assert captured.out == "done 3\n" and captured.err == ""


def test_a_stage_with_a_bug_in_run_exits_70(tmp_path, capsys, monkeypatch):
    from validation import sample_size

    monkeypatch.setattr(sample_size, "run", _raise(ValueError("cannot convert float NaN to integer")))
    params = tmp_path / "p.yaml"
    params.write_text("validate: {}\n")
    assert sample_size.main(["--out", str(tmp_path), "--params", str(params)]) == EXIT_SOFTWARE
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: cannot convert float NaN to integer" in err


def test_a_stage_with_bad_params_exits_2_from_the_shell(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("validate:\n  sample_size: {sensitivity: 0.9, specificity: 0.9, prevalence: 0.1,"
                      " half_width: 2}\n")
    proc = subprocess.run([sys.executable, "-m", "validation.sample_size", "--out", str(tmp_path / "out"),
                           "--params", str(params)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "half_width" in _one_error_line(proc.stderr)


def test_audit_exit_codes(tmp_path, capsys, monkeypatch):
    import evidence.__main__ as audit_cli
    from evidence.errors import EvidenceError

    assert audit_cli.main(["audit", "--out", str(tmp_path)]) == 1          # ran, found failures
    assert "FAIL" in capsys.readouterr().out
    monkeypatch.setattr(audit_cli, "audit", _raise(EvidenceError("record x: unreadable")))
    assert audit_cli.main(["audit", "--out", str(tmp_path)]) == 2
    assert _one_error_line(capsys.readouterr().err) == "error: record x: unreadable"
    monkeypatch.setattr(audit_cli, "audit", _raise(KeyError("sha256")))
    assert audit_cli.main(["audit", "--out", str(tmp_path)]) == 70
    assert "Traceback" in capsys.readouterr().err


def test_submission_check_exit_codes(tmp_path, capsys, monkeypatch):
    from submission import check

    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "traceability.json").write_text("{not json")
    assert check.main(["--out", str(tmp_path)]) == 2
    assert "traceability.json: not valid JSON" in _one_error_line(capsys.readouterr().err)
    (folder / "traceability.json").write_text(json.dumps({"documents": {"plan": {"markdown": "plan.md"}}}))
    assert check.main(["--out", str(tmp_path)]) == 2
    assert "markdown_sha256" in _one_error_line(capsys.readouterr().err)
    monkeypatch.setattr(check, "check", _raise(ValueError("bad regex group")))
    assert check.main(["--out", str(tmp_path)]) == 70
    assert "Traceback" in capsys.readouterr().err


def test_infer_exit_codes(tmp_path, capsys, monkeypatch):
    from model import infer

    assert infer.main(["--out", str(tmp_path), str(tmp_path)]) == 2
    assert "no model in" in _one_error_line(capsys.readouterr().err)
    monkeypatch.setattr(infer, "load_device", _raise(ValueError("shapes (3,) and (4,) not aligned")))
    assert infer.main(["--out", str(tmp_path), "-q", str(tmp_path)]) == 70
    assert "Traceback" in capsys.readouterr().err
    assert (tmp_path / "logs" / "model.infer.log").read_text().count("==== ") == 2


def test_heldout_exit_codes(tmp_path, capsys, monkeypatch):
    from validation import heldout

    params = tmp_path / "p.yaml"
    params.write_text("validate: {}\n")
    argv = ["--out", str(tmp_path), "--heldout", str(tmp_path / "missing"), "--params", str(params)]
    assert heldout.main(argv) == 2
    assert "not a folder" in _one_error_line(capsys.readouterr().err)
    monkeypatch.setattr(heldout, "run", _raise(IndexError("index 3 is out of bounds")))
    assert heldout.main([*argv, "-v"]) == 70
    assert "IndexError: index 3 is out of bounds" in capsys.readouterr().err


def _error_classes():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Error")]
            if names:
                module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                yield from ((module, name) for name in names)


def test_every_project_error_is_a_toolkit_error():
    found = list(_error_classes())
    assert len(found) >= 20, found
    for module, name in found:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, ToolkitError), f"{module}.{name} does not subclass evidence.errors.ToolkitError"


def test_stage_log_gets_library_warnings_and_the_terminal_does_not(tmp_path, capsys):
    import logging

    def call(args):
        warnings.warn("Invalid value for VR UI", UserWarning)
        logging.getLogger("pydicom").warning("Expected explicit VR, but found implicit VR")
        logging.getLogger("matplotlib.font_manager").info("generated new fontManager")
        return 1

    assert _stage(tmp_path, call) == 0
    assert capsys.readouterr().err == ""
    log = (tmp_path / "out" / "logs" / "pkg.demo.log").read_text()
    assert log.startswith("==== ") and "python -m pkg.demo --out" in log.splitlines()[0]
    for text in ("UserWarning: Invalid value for VR UI", "WARNING pydicom: Expected explicit VR",
                 "INFO matplotlib.font_manager: generated new fontManager"):
        assert text in log
    assert _stage(tmp_path, call, "-v") == 0
    err = capsys.readouterr().err
    assert "Invalid value for VR UI" in err and "WARNING pydicom: Expected explicit VR" in err
    assert (tmp_path / "out" / "logs" / "pkg.demo.log").read_text().count("==== ") == 2


def test_stage_main_leaves_logging_as_it_found_it(tmp_path):
    import logging

    root = logging.getLogger()
    before = (list(root.handlers), root.level, warnings.showwarning)
    _stage(tmp_path, lambda a: 1)
    _stage(tmp_path, _raise(ValueError("x")))
    assert (list(root.handlers), root.level, warnings.showwarning) == before
