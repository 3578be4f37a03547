"""python -m evidence audit [--out DIR] [--no-code-check] [--partial] [--inputs auto|always|never]
                           [--trusted ALLOWED_SIGNERS] [--release]

Prints one line per signature (who signed which record, in which role, when, demo or not), and one
WARN line per requirement not verified by record `verification.tests` (`make verify`), or for that
record's absence; with `--release` these are failures (`evidence.release`).

Exit 0 when the run verifies, 1 when the audit found failures (FAIL lines), 2 when the run folder
cannot be read, 70 on a bug (`evidence.cli.guarded`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import inputs, release, signing
from .audit import audit, run_dirs
from .cli import EXIT_FAILED, EXIT_OK, guarded
from .recompute import check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evidence", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("audit", help="verify every record, file and dependency of a run")
    a.add_argument("--out", default="build", help="run folder (default: build)")
    a.add_argument("--no-code-check", action="store_true",
                   help="do not flag records whose producing code changed since")
    a.add_argument("--partial", action="store_true",
                   help="audit the records present without requiring a complete run (says PARTIAL)")
    a.add_argument("--inputs", choices=("auto", "always", "never"), default="auto",
                   help="re-hash the input images: always, never, or (auto) when estimated under a minute")
    a.add_argument("--trusted", metavar="FILE", help="OpenSSH allowed-signers file: fail on a signer not in it")
    a.add_argument("--release", action="store_true",
                   help="fail when a requirement is not verified or record verification.tests is missing "
                        "(without it: warnings)")
    args = parser.parse_args(argv)
    return guarded(lambda: _audit(args.out, check_code=not args.no_code_check, complete=not args.partial,
                                  hash_inputs=args.inputs, trusted=args.trusted, release_build=args.release))


def _audit(out: str, *, check_code: bool, complete: bool = True, hash_inputs: str = "auto",
           trusted: str | None = None, release_build: bool = False) -> int:
    failures, n = audit(out, check_code=check_code, complete=complete)
    failures += check(out)
    failures += inputs.check(out, hash_inputs)
    for d in run_dirs(out):
        lines, bad = signing.check(d, trusted)
        prefix = "" if d == Path(out) else f"[{d.name}] "
        for line in lines:
            print(prefix + line)
        failures += [prefix + line for line in bad]
    unverified = release.check(out) if Path(out).is_dir() else []
    if release_build:
        failures += unverified
    else:
        for line in unverified:
            print(f"WARN {line} (a release audit, --release, fails on it)")
    for line in failures:
        print(f"FAIL {line}")
    if failures:
        print(f"audit: {len(failures)} failure(s) in {n} record(s) under {out}", file=sys.stderr)
        return EXIT_FAILED
    partial = "" if complete else " (PARTIAL: completeness not checked)"
    print(f"audit: OK, {n} record(s) under {out} verified{partial}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
