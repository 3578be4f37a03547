"""The input images bound to the trail: their sha256, one Merkle root over them, the audit's re-hash
and the make stamp that turns a changed image into a changed dependency.

- `hash_files` hashes files in parallel (threads: `hashlib` and file reads release the GIL; a
  batch per task keeps the per-file overhead low). `eda.cohort` fills the manifest's `sha256`
  column with it and records `summary(...)` as `cohort.manifest`'s `data.inputs`.
- `merkle_root` is the single digest over every hashed image (definition below).
- `check(out)` re-hashes the images of a run's manifest for `python -m evidence audit`: one failure
  line per changed or missing image, plus one for the Merkle root.
- `write_stamp(out)` writes `OUT/cohort/inputs.json`, a fingerprint of the path, size and
  modification time of every image the manifest lists (stat only, no reading), rewritten only when
  it changed; it is a prerequisite of the `eda.cohort` stage, so `make` reruns the cohort (and
  everything after it) when an input image changes.

Merkle root (`SCHEME`): the leaves are the images with a sha256 (rows with an empty path are not
leaves), sorted by the UTF-8 bytes of `image_id`. Leaf data is the line `sha256sum` prints for the
image without its newline, `<sha256 hex, lower case>  <image_id>` (two spaces), UTF-8 encoded. The
tree is RFC 6962's (section 2.1) with SHA-256: a leaf hashes as SHA-256(0x00 || leaf data), a node
as SHA-256(0x01 || left || right), a list of n > 1 leaves splits at k = the largest power of two
below n (the first k leaves left); the root of no leaves is SHA-256 of the empty string. The root
is the lower-case hex of the top hash.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from . import atomic, layout
from .canonical import sha256_file
from .errors import EvidenceError
from .manifest import ManifestError, image_path, read_manifest
from .record import read_record

SCHEME = "rfc6962-sha256/sha256sum-lines-sorted-by-image_id"
RECORD_ID = "cohort.manifest"
#: Hashing speed for the audit's time estimate (`make bench BENCH=inputs`, serial, warm page cache, on
#: the shared 2-core development machine): 150-400 MB/s for the 1,000 real 64x64 NIH PNGs (4.6 KB
#: each: per-file cost dominates), 540-1,200 MB/s for the three 1024x1024 ones. Files read from a
#: cold disk hash slower, so the constant sits at the low end: the estimate errs towards skipping.
HASH_BYTES_PER_S = 200e6
#: `--inputs auto` re-hashes only when the estimate is under this many seconds.
AUTO_LIMIT_S = 60.0
BATCH = 64            # files per task of the pool


def sha256_and_size(path: str | Path) -> tuple[str, int]:
    return sha256_file(path), os.stat(path).st_size


def _batch(paths: list[str]) -> list[tuple[str, int]]:
    return [sha256_and_size(p) if p else ("", 0) for p in paths]


def batches(paths: list[str], workers: int) -> list[list[str]]:
    """Consecutive runs of at most BATCH paths, at least `workers` of them when there are enough paths."""
    size = max(1, min(BATCH, -(-len(paths) // workers)))
    return [paths[i:i + size] for i in range(0, len(paths), size)]


def hash_files(paths: Iterable[str], workers: int | None = None) -> list[tuple[str, int]]:
    """(sha256, size) of each path, in order; ("", 0) for an empty path. `workers` threads (default:
    the CPUs); 1, or at most BATCH paths (starting the pool costs more), hashes in this thread.
    A missing file raises FileNotFoundError naming it."""
    paths = [str(p) if p else "" for p in paths]
    workers = workers or os.cpu_count() or 1
    parts = batches(paths, workers)
    if workers == 1 or len(paths) <= BATCH:
        return _batch(paths)
    with ThreadPoolExecutor(min(workers, len(parts))) as pool:
        return [pair for part in pool.map(_batch, parts) for pair in part]


def leaf_data(image_id: str, sha256: str) -> bytes:
    return f"{sha256}  {image_id}".encode("utf-8")


def _tree(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _tree(leaves[:k]) + _tree(leaves[k:])).digest()


def merkle_root(pairs: Iterable[tuple[str, str]]) -> str:
    """The Merkle root (module docstring) of (image_id, sha256) pairs; pairs with an empty sha256 are
    not leaves."""
    leaves = [leaf_data(i, s) for i, s in sorted(((str(i), s) for i, s in pairs if s),
                                                 key=lambda p: p[0].encode("utf-8"))]
    return _tree(leaves).hex() if leaves else hashlib.sha256(b"").hexdigest()


def summary(image_ids: Iterable[str], hashes: list[tuple[str, int]]) -> dict:
    """`cohort.manifest`'s `data.inputs`: the hashed files, their bytes and the Merkle root."""
    ids = list(image_ids)
    return {"scheme": SCHEME, "files": sum(1 for s, _ in hashes if s), "bytes": sum(n for _, n in hashes),
            "merkle_root": merkle_root(zip(ids, (s for s, _ in hashes)))}


# --- the audit ---------------------------------------------------------------------------------

def _manifest_rows(path: Path) -> list[dict]:
    """image_id, path, sha256 of every manifest row (`evidence.manifest.read_manifest`)."""
    return read_manifest(path, ["path", "sha256"]).to_dict("records")


def estimate_s(n_bytes: int) -> float:
    return n_bytes / HASH_BYTES_PER_S


def check(out: str | Path, when: str = "always", say: Callable[[str], None] = print) -> list[str]:
    """Failure lines for the input images of run folder `out`.

    Always: `data.inputs` of `cohort.manifest` against the manifest's sha256 column. Then, with
    `when` "always" (or "auto" when the estimate is under AUTO_LIMIT_S), every image is re-hashed:
    one line per changed or missing image naming its id, path, expected and found sha256, and one for
    the Merkle root recomputed from the files. `say` gets one line saying what was done or skipped.
    """
    out = Path(out)
    if when not in ("always", "auto", "never"):
        raise ValueError(f"when must be always, auto or never, not {when!r}")
    if when == "never" or not layout.record(out, RECORD_ID).is_file():
        return []
    try:
        record = read_record(out, RECORD_ID)
    except EvidenceError:
        return []  # the record audit names it
    recorded = record["data"].get("inputs")
    field = f"record {RECORD_ID}: field data.inputs"
    manifest = layout.manifest(out)
    if recorded is None and not any(o["path"] == manifest.relative_to(out).as_posix() for o in record["outs"]):
        return []  # a record that binds no manifest binds no inputs
    try:
        rows = _manifest_rows(manifest)
    except ManifestError as e:
        return [f"{field}: cannot be checked: {e}"]
    if not isinstance(recorded, dict) or not {"files", "bytes", "merkle_root"} <= recorded.keys():
        return [f"{field}: expected the sha256 of the input images found none (rerun `python -m eda.cohort`)"]
    failures = []
    listed = merkle_root((r["image_id"], r["sha256"]) for r in rows)
    if listed != recorded["merkle_root"]:
        failures.append(f"{field}.merkle_root: expected {recorded['merkle_root']} found {listed} "
                        f"(recomputed from the sha256 column of {manifest})")
    seconds = estimate_s(recorded["bytes"])
    if when == "auto" and seconds >= AUTO_LIMIT_S:
        say(f"inputs: not re-hashed: {recorded['files']} images, {recorded['bytes'] / 1e9:.1f} GB, about "
            f"{seconds:.0f} s at {HASH_BYTES_PER_S / 1e6:.0f} MB/s; force it with `make audit INPUTS=1` "
            "(python -m evidence audit --inputs always)")
        return failures
    present = [r for r in rows if r["path"]]
    files = [image_path(r["path"], record["data"]["source"], out) for r in present]
    exists = [f.is_file() for f in files]
    found = hash_files(str(f) if e else "" for f, e in zip(files, exists))
    for r, f, e, (sha, _) in zip(present, files, exists, found):
        if not e or sha != r["sha256"]:
            failures.append(f"input {r['image_id']}: {f}: expected sha256 {r['sha256'] or '(none)'} "
                            f"found {sha if e else 'missing file'}")
    root = merkle_root((r["image_id"], sha) for r, (sha, _) in zip(present, found))
    if root != recorded["merkle_root"]:
        failures.append(f"{field}.merkle_root: expected {recorded['merkle_root']} found {root} "
                        f"(recomputed from the {sum(exists)} input files found)")
    say(f"inputs: {len(present)} images re-hashed ({sum(n for _, n in found) / 1e6:.1f} MB), "
        f"{len(failures)} failure(s), Merkle root {recorded['merkle_root'][:16]}...")
    return failures


# --- the make stamp ----------------------------------------------------------------------------

def fingerprint(out: str | Path) -> dict:
    """{files, missing, fingerprint}: the path, size and mtime_ns of every image the run's manifest
    lists, hashed into one value (stat only); an absent or unreadable manifest has its own value."""
    path = layout.manifest(out)
    try:
        rows = _manifest_rows(path)
    except ManifestError:
        state = "no manifest" if not path.exists() else "unreadable manifest"
        return {"files": 0, "missing": 0, "fingerprint": hashlib.sha256(state.encode()).hexdigest()}
    h = hashlib.sha256()
    files = missing = 0
    for r in rows:
        if not r["path"]:
            continue
        files += 1
        try:
            st = os.stat(r["path"])
            h.update(f"{r['path']}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            missing += 1
            h.update(f"{r['path']}\tmissing\n".encode("utf-8", "surrogateescape"))
    return {"files": files, "missing": missing, "fingerprint": h.hexdigest()}


def write_stamp(out: str | Path) -> bool:
    """Write `OUT/cohort/inputs.json` when the fingerprint changed; True when written."""
    path = layout.input_stamp(out)
    text = json.dumps(fingerprint(out), sort_keys=True) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic.write_text(path, text)
    return True

