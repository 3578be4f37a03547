"""evidence.layout against ARCHITECTURE.md's run-folder table: every listed path has one function,
and every function's path is listed (or lies below or above a listed one)."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from evidence import layout

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDERS = {"section": "<section>", "record_id": "<id>", "name": "<name>", "stage": "<stage>"}


def table_paths() -> set[str]:
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Run folder", 1)[1].split("\n## ", 1)[0]
    paths = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            for p in re.findall(r"`([^`]+)`", line.split("|")[1]):
                p = p.rstrip("/")
                paths.add(p.rsplit("/", 1)[0] if "*" in p else p)
    return paths


def layout_paths() -> dict[str, str]:
    """{function(args): path relative to the run folder} for every path function of the module."""
    out = {}
    for name, fn in inspect.getmembers(layout, inspect.isfunction):
        if fn.__module__ != layout.__name__:
            continue
        extra = [p for p in inspect.signature(fn).parameters if p != "out"]
        if extra == ["split"]:
            for split in layout.PREDICTED_SPLITS:
                out[f"{name}({split})"] = fn(Path(""), split).as_posix()
        else:
            out[name] = fn(Path(""), *(PLACEHOLDERS[p] for p in extra)).as_posix()
    return out


def test_every_table_path_has_a_function():
    produced = set(layout_paths().values())
    assert table_paths() - produced == set()


def test_every_function_path_is_in_the_table():
    listed = table_paths()
    for name, path in layout_paths().items():
        related = [p for p in listed if p == path or p.startswith(path + "/") or path.startswith(p + "/")]
        assert related, f"evidence.layout.{name} gives {path}, which ARCHITECTURE.md's run-folder table lacks"


def test_paths_are_below_the_run_folder(tmp_path):
    assert layout.manifest(tmp_path) == tmp_path / "cohort" / "manifest.csv"
    assert layout.predictions(str(tmp_path), "test") == tmp_path / "predictions" / "test.csv"
    assert layout.record(layout.heldout(tmp_path, "site_a"), "heldout.intake") == \
        tmp_path / "heldout" / "site_a" / "evidence" / "heldout.intake.json"


def test_predictions_exist_only_for_scored_splits(tmp_path):
    with pytest.raises(ValueError, match="not 'train'"):
        layout.predictions(tmp_path, "train")
