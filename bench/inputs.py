"""Benchmark: hashing the input images, serial against parallel, in one run.

Data: the 1,000 real NIH 64x64 PNGs (`../shared/data/nih/images_64px`, about 4.6 MB) and the three
1024x1024 ones (`images_1024`, about 0.5 MB), read from the page cache (one warm-up pass first).
Task: the sha256 of every file, as `eda.cohort` and the audit compute it (`evidence.inputs.hash_files`):
  (a) serial: one thread;
  (b) parallel, threads: `hash_files`'s batches on one thread per CPU, the pool started per call (what
      the cohort stage and the audit do for more than `evidence.inputs.BATCH` files; fewer are hashed
      serially, so for the three 1024 px files this row shows what a pool would cost);
  (c) parallel, processes: the same batches on a process pool started once (the alternative).
Each timing is the best of REPEATS, the three variants interleaved (the machine is shared). The serial rate of the 64 px set is the figure behind
`evidence.inputs.HASH_BYTES_PER_S` (the audit's estimate of how long a re-hash takes).
`python -m bench.inputs` prints the lines; `main()` returns the timings and ratios.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from evidence import inputs

REPO = Path(__file__).resolve().parent.parent
NIH = REPO.parent / "shared" / "data" / "nih"
SETS = {"64px": NIH / "images_64px", "1024px": NIH / "images_1024"}
REPEATS = 20


def _best_of(variants: dict, repeats: int = REPEATS) -> dict:
    """The best time of each variant, the variants interleaved so that each meets the same load."""
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _pooled(paths: list[str], pool, workers: int) -> list:
    """`hash_files`'s batches on `pool`, whatever the number of paths."""
    return [pair for part in pool.map(inputs._batch, inputs.batches(paths, workers)) for pair in part]


def measure(paths: list[str], workers: int, processes: ProcessPoolExecutor) -> dict:
    serial = inputs.hash_files(paths, workers=1)
    assert inputs.hash_files(paths, workers=workers) == serial == _pooled(paths, processes, workers)
    n_bytes = sum(n for _, n in serial)

    def threads():
        with ThreadPoolExecutor(workers) as pool:   # started per call, as hash_files does
            return _pooled(paths, pool, workers)

    best = _best_of({"serial": lambda: inputs.hash_files(paths, workers=1), "threads": threads,
                     "processes": lambda: _pooled(paths, processes, workers)})
    s, t, p = best["serial"], best["threads"], best["processes"]
    return {"files": len(paths), "bytes": n_bytes, "serial_s": s, "threads_s": t, "processes_s": p,
            "serial_mb_s": n_bytes / s / 1e6, "threads_mb_s": n_bytes / t / 1e6, "processes_mb_s": n_bytes / p / 1e6,
            "ratio_threads": s / t, "ratio_processes": s / p}


def main() -> dict:
    workers = os.cpu_count() or 1
    result = {"workers": workers, "hash_bytes_per_s_constant": inputs.HASH_BYTES_PER_S}
    with ProcessPoolExecutor(workers) as pool:
        for name, folder in SETS.items():
            paths = sorted(str(p) for p in folder.glob("*.png"))
            if not paths:
                raise FileNotFoundError(f"no PNG files in {folder} (expected ../shared/data beside the repository)")
            r = result[name] = measure(paths, workers, pool)
            print(f"bench.inputs: {name}: {r['files']} files, {r['bytes'] / 1e6:.1f} MB: "
                  f"serial {r['serial_s'] * 1e3:.1f} ms ({r['serial_mb_s']:.0f} MB/s), {workers} threads {r['threads_s'] * 1e3:.1f} ms "
                  f"(ratio {r['ratio_threads']:.2f}x), {workers} processes {r['processes_s'] * 1e3:.1f} ms "
                  f"(ratio {r['ratio_processes']:.2f}x)")
    print(f"bench.inputs: audit estimate uses {inputs.HASH_BYTES_PER_S / 1e6:.0f} MB/s; "
          f"measured serial on the 64 px set: {result['64px']['serial_mb_s']:.0f} MB/s")
    return result


if __name__ == "__main__":
    main()
