"""python -m evidence audit [--out DIR] [--no-code-check]"""
from __future__ import annotations

import argparse
import sys

from .audit import audit
from .recompute import check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evidence", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("audit", help="verify every record, file and dependency of a run")
    a.add_argument("--out", default="build", help="run folder (default: build)")
    a.add_argument("--no-code-check", action="store_true",
                   help="do not flag records whose producing code changed since")
    args = parser.parse_args(argv)
    failures, n = audit(args.out, check_code=not args.no_code_check)
    failures += check(args.out)
    for line in failures:
        print(f"FAIL {line}")
    if failures:
        print(f"audit: {len(failures)} failure(s) in {n} record(s) under {args.out}", file=sys.stderr)
        return 1
    print(f"audit: OK, {n} record(s) under {args.out} verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
