"""Provenance of a record: code (git commit, dirty flag, source-file hashes), environment, files.

File paths inside the run folder are stored relative to it (the run folder can be moved);
files outside it are stored as absolute paths.
"""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from .canonical import sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent


def file_entry(path: str | Path, out_dir: str | Path) -> dict:
    """{path, sha256, size} for an existing file; raises FileNotFoundError naming it."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"evidence: file to record does not exist: {p}")
    return {"path": relative_to_run(p, out_dir), "sha256": sha256_file(p), "size": p.stat().st_size}


def relative_to_run(path: str | Path, out_dir: str | Path) -> str:
    p = Path(path).resolve()
    try:
        return p.relative_to(Path(out_dir).resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def resolve_run_path(stored: str, out_dir: str | Path) -> Path:
    p = Path(stored)
    return p if p.is_absolute() else Path(out_dir) / p


def code_entry(files: tuple[Path, ...]) -> dict:
    """Git state and {path, sha256, size} of each code file (hashed once per process)."""
    commit, dirty = git_state()
    return {"git_commit": commit, "git_dirty": dirty,
            "files": [{"path": path, "sha256": sha, "size": size} for path, sha, size in _code_files(tuple(files))]}


@lru_cache(maxsize=None)
def _code_files(files: tuple[Path, ...]) -> tuple[tuple[str, str, int], ...]:
    return tuple((f.relative_to(REPO_ROOT).as_posix(), sha256_file(f), f.stat().st_size) for f in files)


@lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the repository, or (None, None) outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


@lru_cache(maxsize=1)
def environment() -> dict:
    """Python, platform and every installed distribution with its version (the SOUP list)."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            packages[name.lower()] = dist.version
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": dict(sorted(packages.items())),
    }
