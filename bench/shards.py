"""Benchmark: a held-out run as 2 local shard processes and a merge versus one process, same set.

`python -m validation.heldout` (one process) against `python -m validation.shards --shards 2` (two
`--shard K/2` processes at once, then `--merge 2`) on the same held-out set of DICOM files made
from the real 1024x1024 NIH images, under a locked run folder built in a temporary folder (the
locked model of `build/` when present, else params.yaml's architecture untrained: timing only; the
validation plan of params.yaml, locked). Both write their records without the report. Prints the
wall time of each and their ratio (sharded / one process) and checks that the two runs wrote the
same records (`validation.shards.comparable`) and the same `predictions.csv`. On a machine with
fewer free cores than shards the ratio shows the cost of the extra process starts, not a gain.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.inference import _model_and_spec, _write_files

REPO = Path(__file__).resolve().parent.parent
RECORDS = ("heldout.plan_lock", "heldout.intake", "heldout.metrics", "heldout.subgroups", "heldout.acceptance")


def locked_run(out: Path, build: Path = REPO / "build") -> Path:
    """A run folder with a model, its spec, a locked threshold and a locked plan (params.yaml)."""
    from evidence import atomic, layout, write_record
    from evidence.params import section
    from evidence.prespecified import write_lock
    from validation.sample_size import run as design

    model, spec, _ = _model_and_spec(build)
    layout.model_file(out).parent.mkdir(parents=True, exist_ok=True)
    model.save(layout.model_file(out))
    atomic.write_text(layout.preprocessing_spec(out), spec.to_json())
    write_record(out, "cohort.manifest", data={"source": {"kind": "bench"}}, synthetic=True)
    write_record(out, "training.run", data={"architecture": "bench"}, dep_records=["cohort.manifest"],
                 outs=[layout.model_file(out), layout.preprocessing_spec(out)])
    write_record(out, "validation.threshold", data={"threshold": 0.5}, dep_records=["training.run"])
    design(out, section(REPO / "params.yaml", "validate"))
    plan = atomic.write_text(layout.submission(out) / "validation_plan.md", "# Clinical Validation Plan (benchmark)\n")
    write_record(out, "submission.plan", data={"document": "validation_plan"}, outs=[plan], dep_records=["validation.design"])
    write_lock(out, params={}, locked_by="bench", locked_by_source="bench")
    return out


def _held_out_set(folder: Path, n: int) -> Path:
    files = _write_files(folder, n)
    rows = ["file,label"] + [f"{f.relative_to(folder).as_posix()},{i % 2}" for i, f in enumerate(files)]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - start


def main(n_files: int = 96, shards: int = 2) -> dict:
    from evidence import layout, read_record
    from validation import heldout
    from validation.shards import comparable

    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        tmp = Path(tmp)
        out = locked_run(tmp / "run")
        folder = _held_out_set(tmp / "set", n_files)
        params = REPO / "params.yaml"
        common = ["--out", str(out), "--heldout", str(folder), "--params", str(params), "--no-report"]
        one = _timed([sys.executable, "-m", "validation.heldout", *common, "-q"])
        hout = layout.heldout(out, heldout.folder_name(folder))
        single = hout.with_name(hout.name + ".single")
        os.rename(hout, single)
        sharded = _timed([sys.executable, "-m", "validation.shards", "--shards", str(shards), *common])
        same = all(comparable(read_record(single, r)) == comparable(read_record(hout, r)) for r in RECORDS) and \
            (single / "predictions.csv").read_bytes() == (hout / "predictions.csv").read_bytes()
    result = {"files": n_files, "shards": shards, "cpus": os.cpu_count(), "one_process_s": round(one, 1),
              "sharded_s": round(sharded, 1), "ratio_sharded_to_one": round(sharded / one, 2),
              "identical_records": same}
    print(f"shards: {n_files} files, 1 process {result['one_process_s']} s, {shards} shards + merge "
          f"{result['sharded_s']} s (ratio {result['ratio_sharded_to_one']}, {os.cpu_count()} CPUs); "
          f"records {'identical' if same else 'DIFFER'}")
    if not same:
        raise AssertionError("the sharded run's records differ from the one-process run's")
    return result


if __name__ == "__main__":
    main()
