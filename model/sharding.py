"""Work split between processes: `--shard K/N` of `python -m model.infer` (and of
`python -m validation.heldout`, `validation/shards.py`).

A file belongs to shard 1 + (the first 16 hex of sha256 of its key, as an integer) mod N, so every
file lands in exactly one shard, whichever machine computes it. The key of `model.infer` is the
file's resolved path (realpath); the held-out run keys on the path relative to the set's folder.

`python -m model.infer --shard K/N FILES...` classifies only its share of FILES (the same FILES
on every shard) and writes its result lines, as printed, to `OUT/infer/.shards/shard-K-of-N.jsonl`
as well; `python -m model.infer --merge N FILES...` classifies nothing: it reads the N shard files,
checks that they cover FILES exactly once with one model, prints the lines in the order one
process would, the summary line, and writes `index.html`. Predictions use fixed-size batches
(`model.batching`), so a file's probability is the same sharded or not.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from evidence import atomic, layout
from evidence.errors import ToolkitError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ToolkitError, ValueError):
    """A shard argument or shard file that cannot be used; the message names the fix."""


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` -> (K, N) with 1 <= K <= N."""
    m = _SHARD.match(str(text))
    k, n = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if not m or n < 1 or not 1 <= k <= n:
        raise ShardError(f"--shard {text}: expected K/N with 1 <= K <= N (e.g. --shard 1/4 ... --shard 4/4)")
    return k, n


def shard_of(key: str, n: int) -> int:
    """1-based shard of a file from its key: stable across machines and runs."""
    return 1 + int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16) % n


def key(path: Path) -> str:
    return str(Path(path).resolve())


def select(files: list[Path], k: int, n: int) -> list[Path]:
    """The files of shard `k` of `n`, in their given order."""
    return [f for f in files if shard_of(key(f), n) == k]


def shard_file(out, k: int, n: int) -> Path:
    return layout.inference_shards(out) / f"shard-{k}-of-{n}.jsonl"


def write_shard(out, k: int, n: int, rows: list[dict]) -> Path:
    path = shard_file(out, k, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(path, "".join(json.dumps({**r, "shard_key": key(Path(r["file"]))}, ensure_ascii=False,
                                                      allow_nan=False) + "\n" for r in rows))


def merged_rows(out, files: list[Path], n: int, device: tuple[str, float]) -> list[dict]:
    """The rows of the N shard files, in the order of `files`; refused unless they cover `files`
    exactly once, each row in its own shard, all with `device` (model sha256, threshold)."""
    rows: dict[str, dict] = {}
    for k in range(1, n + 1):
        path = shard_file(out, k, n)
        if not path.is_file():
            raise ShardError(f"{path}: missing; run `python -m model.infer --run {out} --shard {k}/{n} FILES...` "
                             f"(every shard 1..{n}, with the same FILES), then the merge")
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            name = row.pop("shard_key")
            if shard_of(name, n) != k or name in rows:
                raise ShardError(f"{path}: {name!r} does not belong to shard {k}/{n} or is listed twice; rerun the shards")
            rows[name] = row
    others = {(r["model_sha256"], r["threshold"]) for r in rows.values()} - {tuple(device)}
    if others:
        raise ShardError(f"the shard files under {shard_file(out, 1, n).parent} come from another model or threshold "
                         f"than the locked device of {out}; rerun every shard with this --out")
    wanted = [key(f) for f in files]
    missing, extra = [w for w in wanted if w not in rows], sorted(set(rows) - set(wanted))
    if missing or extra:
        raise ShardError(f"the shard files do not cover FILES: {len(missing)} missing (first: {(missing or extra)[0]!r}), "
                         f"{len(extra)} not among FILES; run every shard with the same FILES")
    return [rows[w] for w in wanted]


def remove(out, n: int) -> None:
    for k in range(1, n + 1):
        shard_file(out, k, n).unlink(missing_ok=True)
    folder = shard_file(out, 1, n).parent
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
