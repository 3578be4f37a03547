"""A small demo run shared by the audit tests (completeness, semantic audit, replay): built once per
test process with `make submission` in a temporary folder, then copied by each test that changes it.

Smaller than tests/test_pipeline_demo.py's build (80 patients, 2 epochs, 200 bootstrap resamples):
these tests need a complete, honest run, not a good model.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from evidence import layout
from evidence.canonical import record_hash, sha256_file
from evidence.stages import STAGES, out_declared

REPO = Path(__file__).resolve().parent.parent
_BUILT: dict[str, Path] = {}


def make(*args: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def small_build(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, params file) of the shared small demo run."""
    if not _BUILT:
        folder = tmp_path_factory.mktemp("audit-demo")
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["cohort"]["demo"]["n_patients"] = 80
        params["train"]["epochs"] = 2
        params["validate"]["bootstrap_resamples"] = 200
        path = folder / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        out = folder / "build"
        make("submission", f"OUT={out}", f"PARAMS={path}")
        _BUILT.update(out=out, params=path)
    return _BUILT["out"], _BUILT["params"]


def copy_run(out: Path, dest: Path) -> Path:
    shutil.copytree(out, dest, symlinks=True)
    return dest


#: {split: the record that lists its predictions file}, from the stage table.
SCORES = {split: stage.records[0] for split in layout.PREDICTED_SPLITS for stage in STAGES
          if stage.in_run and out_declared(stage, layout.predictions("", split).as_posix())}


def rehash(out: Path, record_id: str, change=None) -> dict:
    """Rewrite a record as a forger would: `change(record)` edits it, then the sha256 and size of
    each of its outs and deps files are recomputed from the files, and its own sha256."""
    path = out / "evidence" / f"{record_id}.json"
    record = json.loads(path.read_text())
    if change is not None:
        change(record)
    for entry in [*record["outs"], *record["deps"]["files"]]:
        file = out / entry["path"]
        if file.is_file():
            entry["sha256"], entry["size"] = sha256_file(file), file.stat().st_size
    record["sha256"] = record_hash(record)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def audit(out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`make audit OUT=out` (the evidence audit, the metric check and the replay)."""
    return make("audit", f"OUT={out}", *extra, check=False)
