"""The command line every stage shares: `python -m pkg.stage --out OUT --params PARAMS [-v|-q] [...]`.

Exit codes, for every command of the project (`guarded`):

- 0: done;
- 1: a check ran and found failures (`python -m evidence audit`, `python -m submission.check`);
- 2: bad or missing input: a `ToolkitError` (a params key, a data file, a record) or an `OSError`
  (a file that cannot be read or written, a full disk); one line `error: ...`, no traceback;
  argparse's usage errors are 2 as well;
- 70 (EX_SOFTWARE): anything else is a bug: the full traceback, then one `error:` line saying so.

A stage supplies what it does (`call`) and a one-line summary; library warnings and logs go to
`OUT/logs/<stage>.log` (`evidence.console`).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any, Callable

from . import console
from .errors import ToolkitError
from .stages import why

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SOFTWARE = 0, 1, 2, 70


def error_line(e: BaseException) -> str:
    """The one-line message of a known error; an OSError names its file and the system's reason."""
    if isinstance(e, OSError) and e.strerror:
        files = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        return f"{files}: {e.strerror}" if files else e.strerror
    return str(e)


def guarded(body: Callable[[], int]) -> int:
    """Run a command's body and return its exit code; a known error (`ToolkitError`, `OSError`)
    prints one `error:` line and gives 2, any other exception its traceback and 70."""
    try:
        return body()
    except (ToolkitError, OSError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:
        traceback.print_exc()
        print(f"error: unexpected {type(e).__name__} (a bug, not bad input; the traceback above shows where)",
              file=sys.stderr)
        return EXIT_SOFTWARE


def stage_main(
    argv: list[str] | None,
    *,
    prog: str,
    doc: str | None,
    call: Callable[[argparse.Namespace], Any],
    summary: Callable[[Any, argparse.Namespace], str],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").strip().split("\n\n")[0])
    parser.add_argument("--out", default="build", help="run folder (default: build)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--changed", nargs="*", metavar="FILE",
                        help="the prerequisites make found newer than the stage's records: the summary "
                             "line then says why the stage ran")
    console.add_arguments(parser)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    stage = prog.split()[-1]
    command = " ".join([prog, *(sys.argv[1:] if argv is None else argv)])

    def body() -> int:
        reason = None if args.changed is None else why(stage, args.out, args.changed)
        with console.session(args.out, stage, command=command, verbose=args.verbose, quiet=args.quiet):
            result = call(args)
        line = summary(result, args)
        if reason is not None:
            line = f"[{stage}] {line} ({reason})"
        print(line)
        return EXIT_OK

    return guarded(body)
