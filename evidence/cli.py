"""The command line every stage shares: `python -m pkg.stage --out OUT --params PARAMS [...]`.

A stage supplies what it does (`call`), the errors that mean bad input, and a one-line summary.
Bad input prints one line `error: ...` and exits 1, never a traceback; parameter and evidence
errors are always among them.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Iterable

from .errors import EvidenceError
from .params import ParamsError


def stage_main(
    argv: list[str] | None,
    *,
    prog: str,
    doc: str | None,
    call: Callable[[argparse.Namespace], Any],
    summary: Callable[[Any, argparse.Namespace], str],
    errors: Iterable[type[BaseException]] = (),
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").strip().split("\n\n")[0])
    parser.add_argument("--out", default="build", help="run folder (default: build)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        result = call(args)
    except (ParamsError, EvidenceError, *errors) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(result, args))
    return 0
