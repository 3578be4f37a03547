"""python -m bench [NAME ...]: run the benchmarks (all by default) and print their ratios.

Each benchmark module exposes `main() -> dict` and prints its own lines; this runner adds a
summary and writes `build/bench/results.json`. Names: eda, bootstrap, inference, pneumoniamnist, inputs, replay, node, demo, intake, shards.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

ALL = ("eda", "bootstrap", "inference", "pneumoniamnist", "inputs", "replay", "node", "demo", "intake", "shards")


def main(argv: list[str] | None = None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"error: unknown benchmark {', '.join(unknown)} (choose from {', '.join(ALL)})", file=sys.stderr)
        return 2
    results, failed = {}, []
    for name in names:
        print(f"== bench {name}", flush=True)
        start = time.perf_counter()
        try:
            results[name] = importlib.import_module(f"bench.{name}").main()
        except Exception as e:  # a failing benchmark is reported, the others still run
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            failed.append(name)
        results[name]["wall_s"] = round(time.perf_counter() - start, 1)
    out = Path("build/bench/results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"== results written to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
