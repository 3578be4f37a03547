"""Sharded held-out runs: N processes (on one machine or a cluster) each classify one share of the
set, and a merge writes the one set of records, as an unsharded run would.

    python -m validation.heldout --heldout DIR --out OUT --params PARAMS --shard K/N   (K = 1..N, each once)
    python -m validation.heldout --heldout DIR --out OUT --params PARAMS --merge N

Assignment (`model.sharding.shard_of`): a file belongs to shard 1 + (the first 16 hex of sha256 of its
path relative to DIR, as an integer) mod N, so every file lands in exactly one shard whatever machine computes it,
and each shard classifies its files in sorted path order. Inference is the expensive part; it is the
only part sharded. A shard first checks that the plan files still match the locked plan (as the
unsharded run does before reading the set), then writes its results, atomically, to
`OUT/heldout/.shards/<name>/shard-K-of-N.json` (`<name>` as the held-out folder's: the set's
folder name and content hash, so shards of different sets never mix; a hidden folder that the
audit does not read). Each shard file names the set's content hash, the model sha256, the
threshold, the header checks and the plan record sha256 it ran under.

The merge runs `validation.heldout` itself (plan lock record, labels, statistics, records, report)
with the classification read from the N shard files instead of computed; it refuses shards that are
missing, of another set, model, threshold, header checks or plan, or that do not cover every file
exactly once. Predictions use fixed-size batches (`model.batching.FixedBatch`) sharded or not, so a
file's probability does not depend on which files shared its batch, and the merged records equal
an unsharded run's in everything but `VOLATILE_FIELDS`. After a merge the shard folder is removed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from evidence import Store, EvidenceError, atomic, console, layout
from evidence.prespecified import LOCK, plan_file_failures
from model.sharding import parse_shard, shard_of  # noqa: F401 (one rule for model.infer and the held-out run)

#: Record fields that differ between two runs of the same set (sharded or not): when and where the
#: record was written, and the hashes that cover those fields: the record's own `sha256` and, in
#: `deps.records`, the sha256 of a parent record written by the same run (a `heldout.*` record).
VOLATILE_FIELDS = ("created_utc", "environment", "sha256")
VOLATILE_PARENTS = "heldout."
SHARD_FORMAT = "heldout-shard/1"


def parse_count(text) -> int:
    from .heldout import HeldoutError

    try:
        n = int(str(text).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise HeldoutError(f"--merge {text}: expected the number of shards N (a whole number >= 1)")
    return n


def relative(folder: Path, path: Path) -> str:
    """The path of a held-out file relative to the set's folder (posix), the key shards agree on."""
    return Path(path).relative_to(folder).as_posix()


def assign(folder: Path, files: list[Path], k: int, n: int) -> list[Path]:
    """The files of shard `k` of `n`, sorted by relative path."""
    return sorted((f for f in files if shard_of(relative(folder, f), n) == k), key=lambda f: relative(folder, f))


def shard_dir(out: Path, name: str) -> Path:
    return layout.heldout_shards(out, name)


def shard_file(out: Path, name: str, k: int, n: int) -> Path:
    return shard_dir(out, name) / f"shard-{k}-of-{n}.json"


def classify_set(files: list[Path], device) -> dict[Path, dict]:
    """{resolved path: classification result} of `files`, predicted in fixed-size batches."""
    from model.batching import fixed_batch
    from model.infer import classify

    bar = console.Progress("heldout", len(files))
    try:
        return {Path(r["file"]).resolve(): r for r in classify(files, fixed_batch(device), progress=bar.update)}
    finally:
        bar.close()


def _lock(out: Path) -> dict:
    """The plan lock record, its plan files re-hashed (as `heldout.lock_plan` does, without a record)."""
    from .heldout import HeldoutError

    try:
        lock = Store(out).get(LOCK)
    except EvidenceError as e:
        raise HeldoutError(f"{e} (the validation plan must be rendered and locked first: make plan)") from None
    failures = plan_file_failures(out, lock)
    if failures:
        raise HeldoutError(f"{failures[0]}: refusing to run the held-out set")
    return lock


def _context(device, plan_sha256: str, name: str, digest: str, n: int) -> dict:
    """What every shard of one run must share; the merge compares it field by field."""
    return {"format": SHARD_FORMAT, "name": name, "content_sha256": digest, "shards": n,
            "model_sha256": device.model_sha256, "threshold": device.threshold,
            "header_checks": json.loads(json.dumps({**device.rules, "source": device.rules_source}, default=str)),
            "plan_record_sha256": plan_sha256}


def run_shard(out: str | Path, heldout: str | Path, params_file: str | Path, k: int, n: int) -> dict:
    """Classify shard `k` of `n` of the set and write its shard file; return a summary."""
    from model.infer import DeviceError, load_device

    from .heldout import HeldoutError, already_run, content_sha256, folder_name, heldout_files

    out, folder = Path(out), Path(heldout)
    if not folder.is_dir():
        raise HeldoutError(f"--heldout {folder}: not a folder (pass the folder with the DICOM files and labels.csv)")
    lock = _lock(out)                                # the plan checked before the set is read
    digest = content_sha256(folder)
    name = folder_name(folder, digest)
    if layout.heldout(out, name).exists():
        raise already_run(layout.heldout(out, name))
    try:
        device = load_device(out, params_file)
    except DeviceError as e:
        raise HeldoutError(str(e)) from None
    mine = assign(folder, heldout_files(folder), k, n)
    results = classify_set(mine, device)
    rows = [{**results[f.resolve()], "file": relative(folder, f)} for f in mine]
    path = shard_file(out, name, k, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {**_context(device, lock["sha256"], name, digest, n), "shard": k, "files": [r["file"] for r in rows], "results": rows}
    atomic.write_text(path, json.dumps(body, ensure_ascii=False, allow_nan=False, sort_keys=True) + "\n")
    return {"shard": k, "shards": n, "files": len(rows), "path": path,
            "statuses": {s: sum(r["status"] == s for r in rows) for s in ("accepted", "rejected", "error")}}


def shard_results(out: Path, n: int):
    """The merge's source of classifications for `heldout._run`: a function (folder, files, digest,
    device, lock) -> {resolved path: result} reading and checking the `n` shard files."""
    from .heldout import HeldoutError, folder_name

    def load(folder: Path, files: list[Path], digest: str, device, lock: dict) -> dict[Path, dict]:
        name = folder_name(folder, digest)
        expected = _context(device, lock["data"]["plan_record_sha256"], name, digest, n)  # heldout.plan_lock
        rows: dict[str, dict] = {}
        for k in range(1, n + 1):
            path = shard_file(out, name, k, n)
            if not path.is_file():
                raise HeldoutError(f"{path}: missing; run `python -m validation.heldout --heldout {folder} --out {out} "
                                   f"--shard {k}/{n}` first (every shard 1..{n}), then the merge")
            try:
                body = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise HeldoutError(f"{path}: not a readable shard file ({e}); rerun shard {k}/{n}") from None
            differs = [key for key, value in expected.items() if body.get(key) != value]
            if body.get("shard") != k:
                differs.append("shard")
            if differs:
                raise HeldoutError(f"{path}: {', '.join(differs)} differ from this merge's (another set, model, "
                                   f"threshold, header checks or plan); rerun shard {k}/{n}")
            for row in body["results"]:
                if shard_of(row["file"], n) != k or row["file"] in rows:
                    raise HeldoutError(f"{path}: file {row['file']!r} does not belong to shard {k}/{n} or is listed "
                                       "twice; rerun the shards")
                rows[row["file"]] = row
        wanted = {relative(folder, f) for f in files}
        missing = sorted(wanted - set(rows))
        extra = sorted(set(rows) - wanted)
        if missing or extra:
            raise HeldoutError(f"the shard files of {name} do not cover the set: {len(missing)} file(s) missing "
                               f"(first: {(missing or extra)[0]!r}), {len(extra)} not in the set; rerun the shards")
        return {(folder / rel).resolve(): {**row, "file": str(folder / rel)} for rel, row in rows.items()}

    return load


def merge(out: str | Path, heldout: str | Path, params_file: str | Path, n: int, *, render: bool = True) -> dict:
    """The held-out run with the classification read from the `n` shard files; the shard folder is
    removed once the records are in place. Returns the records."""
    from .heldout import run

    out, folder = Path(out), Path(heldout)
    records = run(out, folder, params_file, render=render, classified=shard_results(out, n))
    name = records["heldout.intake"]["data"]["name"]
    shutil.rmtree(shard_dir(out, name), ignore_errors=True)
    parent = shard_dir(out, name).parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
    return records


def comparable(record: dict) -> dict:
    """A record without its `VOLATILE_FIELDS` (and the sha256 of its parents of the same run): what a
    sharded and an unsharded run must share."""
    kept = {k: v for k, v in record.items() if k not in VOLATILE_FIELDS}
    deps = dict(kept.get("deps") or {})
    if "records" in deps:
        deps["records"] = [{k: v for k, v in d.items() if not (k == "sha256" and d["id"].startswith(VOLATILE_PARENTS))}
                           for d in deps["records"]]
        kept["deps"] = deps
    return kept


def summary(result: dict) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in result["statuses"].items())
    return f"heldout: shard {result['shard']}/{result['shards']}: {result['files']} files ({counts}) -> {result['path']}"


# ----------------------------------------------------------------------------- N local processes

def run_local(out: str | Path, heldout: str | Path, params_file: str | Path, n: int, *,
              render: bool = True, quiet: bool = True, python: str | None = None) -> int:
    """`make heldout SHARDS=N`: N local `--shard K/N` processes at once, then the merge; the exit
    code of the first shard that failed (the merge does not run), else the merge's."""
    import subprocess
    import sys

    common = ["--out", str(out), "--heldout", str(heldout), "--params", str(params_file)]
    python = python or sys.executable
    procs = [subprocess.Popen([python, "-m", "validation.heldout", *common, "--shard", f"{k}/{n}",
                               *(["-q"] if quiet else [])]) for k in range(1, n + 1)]
    codes = [p.wait() for p in procs]
    failed = [(k, rc) for k, rc in enumerate(codes, 1) if rc != 0]
    if failed:
        print(f"error: shard(s) {', '.join(f'{k}/{n} (exit {rc})' for k, rc in failed)} failed (see above); "
              "no records written; fix the cause and rerun", file=sys.stderr)
        return failed[0][1]
    return subprocess.run([python, "-m", "validation.heldout", *common, "--merge", str(n),
                           *([] if render else ["--no-report"])]).returncode


def main(argv: list[str] | None = None) -> int:
    """python -m validation.shards --shards N --heldout DIR [--out OUT] [--params PARAMS] [--no-report]"""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m validation.shards",
                                     description="run a held-out set as N local shard processes, then merge")
    parser.add_argument("--shards", required=True, type=int, help="number of local processes (>= 1)")
    parser.add_argument("--heldout", required=True, help="folder with DICOM files and labels.csv")
    parser.add_argument("--out", default="build", help="run folder (default: build)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-report", action="store_true", help="write the records only")
    args = parser.parse_args(argv)
    if args.shards < 1:
        print(f"error: --shards {args.shards}: expected a whole number >= 1 (SHARDS=N)", file=sys.stderr)
        return 2
    return run_local(args.out, args.heldout, args.params, args.shards, render=not args.no_report)


if __name__ == "__main__":
    import sys

    sys.exit(main())
