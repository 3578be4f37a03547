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


from evidence import chain, layout
from evidence.canonical import record_hash, sha256_bytes, sha256_file
from evidence.stages import STAGES, out_declared
from demo_params import write_small

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
        path = write_small(folder / "params.yaml")
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
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    path.write_text(text)
    rechain(out, record, text.encode("utf-8"))
    return record


def rechain(out: Path, record: dict, file_bytes: bytes) -> None:
    """Make the hash-chained log agree with a rewritten record, as a careful forger would: the
    record's last entry takes the new hashes and every entry from there is re-linked (the log
    holds hashes only, so without a signature anyone can recompute it); a record the log does not
    know gets a new last entry."""
    log = layout.evidence_log(out)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    mine = [i for i, e in enumerate(entries) if e.get("record_id") == record["id"]]
    if not mine:   # a forged extra record gets an entry of its own at the end
        entries.append({"seq": len(entries), "record_id": record["id"], "created_utc": record["created_utc"]})
        mine = [len(entries) - 1]
    last = mine[-1]
    entries[last].update(record_sha256=record["sha256"], file_sha256=sha256_bytes(file_bytes))
    for i in range(last, len(entries)):
        entries[i]["prev"] = entries[i - 1]["entry_sha256"]
        entries[i]["entry_sha256"] = chain.entry_hash(entries[i])
    log.write_text("".join(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n" for e in entries))


def audit(out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`make audit OUT=out` (the evidence audit, the metric check and the replay)."""
    return make("audit", f"OUT={out}", *extra, check=False)
