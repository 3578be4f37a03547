"""What a command shows on the terminal, and what goes to its log file instead.

A stage's own lines (its summary, `error: ...`) go to the terminal. Everything libraries say
(Python warnings, the pydicom, matplotlib, absl and TensorFlow loggers, and the C++ start-up
messages of TensorFlow, captured by `captured_stderr`) goes to `OUT/logs/<stage>.log`, appended,
one timestamp line per run; `--verbose` also shows it on the terminal. Progress on long loops
(`Progress`, `progress`) goes to stderr and `--quiet` silences it.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, TextIO, TypeVar

from . import layout

T = TypeVar("T")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that install their own terminal handler when they find the root logger unconfigured.
SELF_CONFIGURING_LOGGERS = ("tensorflow",)
# A loop on a terminal that is not interactive (make in CI, tests) prints a line at each quarter,
# and only when it has at least this many items; shorter loops print nothing.
MIN_ITEMS_FOR_MILESTONES = 1000
MILESTONES = (25, 50, 75, 100)
REFRESH_S = 0.2


class _State:
    quiet = False
    verbose = False
    active = False
    pending: list[tuple[str, str]] = []


def log_path(out: str | Path, stage: str) -> Path:
    return layout.stage_log(out, stage)


def quiet() -> bool:
    """True while a command runs with --quiet: no progress output."""
    return _State.quiet


def add_arguments(parser) -> None:
    """`-v/--verbose` and `-q/--quiet` on an argparse parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true",
                       help="also show library warnings and logs on the terminal (they always go to OUT/logs/)")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress output")


@contextmanager
def session(out: str | Path, stage: str, *, command: str = "", verbose: bool = False,
            quiet: bool = False) -> Iterator[Path]:
    """Send library warnings and logs to `OUT/logs/<stage>.log` (and to stderr when `verbose`)
    while the block runs, after a line with the time and `command`; yield the log's path.
    Everything is restored afterwards."""
    path = log_path(out, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    handlers[0].setFormatter(logging.Formatter(LOG_FORMAT))
    handlers[0].stream.write(f"==== {datetime.now(timezone.utc).isoformat(timespec='seconds')} "
                             f"{command or stage}\n")
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[1].setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_level = root.level
    adopted = _adopt_self_configuring_loggers()
    root.setLevel(logging.INFO)
    for h in handlers:
        root.addHandler(h)
    _State.quiet, _State.verbose, _State.active = quiet, verbose, True
    try:
        with warnings.catch_warnings():
            logging.captureWarnings(True)
            try:
                _flush_pending()
                yield path
            finally:
                logging.captureWarnings(False)
    finally:
        _State.quiet = _State.verbose = _State.active = False
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(saved_level)
        for logger, own in adopted:
            for h in own:
                logger.addHandler(h)


def _adopt_self_configuring_loggers() -> list[tuple[logging.Logger, list[logging.Handler]]]:
    """Detach the terminal handlers a library put on its own logger (TensorFlow does when it is
    imported before any logging is configured), so that its messages reach the log file only."""
    adopted = []
    for name in SELF_CONFIGURING_LOGGERS:
        logger = logging.getLogger(name)
        own = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
               and not isinstance(h, logging.FileHandler)]
        for h in own:
            logger.removeHandler(h)
        adopted.append((logger, own))
    return adopted


def library_output(source: str, text: str) -> None:
    """Text a library wrote straight to the process's stderr: into the log of the running command,
    or kept until a command's session starts (a library imported before `session`)."""
    text = text.strip()
    if not text:
        return
    if _State.active:
        logging.getLogger(source).info("%s", text)
    else:
        _State.pending.append((source, text))


def _flush_pending() -> None:
    pending, _State.pending = _State.pending, []
    for source, text in pending:
        library_output(source, text)


@contextmanager
def captured_stderr(source: str) -> Iterator[None]:
    """Capture what is written to file descriptor 2 while the block runs (C and C++ code included)
    and hand it to `library_output`. If the block raises, the captured text is written back to
    stderr, so that nothing explaining a failure is hidden."""
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            if failed:
                sys.stderr.write(text)
            else:
                library_output(source, text)


class Progress:
    """`label done/total (pct%)` on stderr: one line rewritten in place on an interactive
    terminal; otherwise a line at 25, 50, 75 and 100 % for loops of at least `min_items` items,
    nothing for shorter ones; nothing at all with --quiet. Call `update(done)` with the number of
    items done so far."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None,
                 min_items: int = MIN_ITEMS_FOR_MILESTONES):
        self.label, self.total = label, int(total)
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.silent = quiet() or self.total <= 0 or (not self.interactive and self.total < min_items)
        self._next_milestone = 0
        self._last_draw = 0.0
        self._start = time.perf_counter()
        self._open_line = False

    def update(self, done: int) -> None:
        if self.silent:
            return
        done = min(int(done), self.total)
        pct = 100 * done // self.total
        if self.interactive:
            now = time.perf_counter()
            if done < self.total and now - self._last_draw < REFRESH_S:
                return
            self._last_draw = now
            end = "\n" if done >= self.total else ""
            self.stream.write(f"\r{self._text(done, pct)}{end}")
            self._open_line = not end
            self.stream.flush()
            return
        passed = self._next_milestone
        while passed < len(MILESTONES) and pct >= MILESTONES[passed]:
            passed += 1
        if passed > self._next_milestone:
            self._next_milestone = passed
            self.stream.write(self._text(done, pct) + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End an in-place line left open (a loop stopped before its total)."""
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False

    def _text(self, done: int, pct: int) -> str:
        return f"{self.label}: {done}/{self.total} ({pct}%, {time.perf_counter() - self._start:.0f} s)"


def progress(items: Iterable[T], label: str, total: int | None = None, *,
             stream: TextIO | None = None, min_items: int = MIN_ITEMS_FOR_MILESTONES) -> Iterator[T]:
    """Yield `items` unchanged, reporting progress (`Progress`) as they are consumed."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    bar = Progress(label, total, stream=stream, min_items=min_items)
    done = 0
    try:
        for item in items:
            yield item
            done += 1
            bar.update(done)
    finally:
        bar.close()
