"""Atomic file writes: a temporary file in the same folder, fsync, then rename; folders the same way
(`staged_folder` filled, then `publish_folder` renamed into place).

A reader never sees a half-written file, and a failure leaves the previous file (or none). A full
disk or an exhausted quota (ENOSPC, EDQUOT), met while writing, syncing or renaming, is reported as
an OSError that names the file being written (not the temporary one) and what to do.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        if e.errno in DISK_FULL:
            raise disk_full(path, e) from e
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def disk_full(path: Path, e: OSError) -> OSError:
    """The error for a full disk or quota met while writing `path`: names the file and the fix."""
    return OSError(e.errno, f"{e.strerror or os.strerror(e.errno)} while writing this file; it was not written "
                            f"(a previous version, if any, is unchanged): free space on the disk that holds "
                            f"{path.parent} (df -h shows it), or use a run folder (OUT) on another disk, then rerun",
                   str(path))


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))



@contextlib.contextmanager
def staged_folder(root: str | Path, name: str) -> Iterator[Path]:
    """Yield a new hidden folder `ROOT/.NAME.*.partial` (created, with ROOT, as needed) to fill; it
    is removed when the block ends, so whatever `publish_folder` did not rename away is never seen
    (a failed run leaves nothing)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))
    staging.chmod(0o755)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_folder(staging: Path, final: Path, exists: Exception) -> None:
    """Rename the filled `staging` folder to `final` in one step; raise `exists` (never overwrite)
    when `final` is already there, before or at the rename."""
    if final.exists():
        raise exists
    try:
        os.rename(staging, final)
    except OSError:
        if final.exists():
            raise exists from None
        raise
