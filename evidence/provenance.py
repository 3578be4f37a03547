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

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .canonical import sha256_file
from .errors import EvidenceError

# The folder that holds the project's top-level packages (evidence, eda, ..., templates): the
# checkout, or site-packages when the project is installed from a wheel. Source files and package
# data are found relative to it, and recorded relative to it, the same way in both cases.
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
    """(commit, dirty) of the checkout that REPO_ROOT is, or (None, None) when it is not the top
    of a git checkout (an installed wheel, even one inside a checkout's .venv)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args],
                              capture_output=True, text=True, check=True, timeout=10).stdout
    try:
        if Path(git("rev-parse", "--show-toplevel").strip()).resolve() != REPO_ROOT:
            return None, None
        return git("rev-parse", "HEAD").strip(), bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


@lru_cache(maxsize=1)
def environment() -> dict:
    """Python, platform, the device's third-party packages and every installed one.

    `runtime_packages` is the SOUP list: what the project needs at run time (its requirements and
    theirs, transitively), read from the installed distributions' metadata. `installed_packages`
    is everything in the interpreter's environment, test tools included, to reproduce the run.
    """
    installed = installed_distributions()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "runtime_packages": runtime_closure(project_distribution(), installed),
        "installed_packages": {name: dist.version for name, dist in sorted(installed.items())},
    }


def installed_distributions() -> dict[str, importlib.metadata.Distribution]:
    """{normalized name: distribution}; where a name is installed twice, the one Python imports
    (first on sys.path) wins."""
    found: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            found.setdefault(canonicalize_name(name), dist)
    return found


def project_distribution() -> str:
    """The installed distribution that provides this package (the project's name in pyproject.toml)."""
    names = set(importlib.metadata.packages_distributions().get(__package__, []))
    if len(names) != 1:
        raise EvidenceError(
            f"evidence: cannot tell which installed distribution provides the {__package__!r} package "
            f"(found {sorted(names) or 'none'}); install the project: pip install --no-deps -e ."
        )
    return canonicalize_name(names.pop())


def runtime_closure(root: str, installed: dict[str, importlib.metadata.Distribution]) -> dict[str, str]:
    """{name: version} of every distribution `root` requires at run time, transitively, `root`
    excluded. Environment markers are evaluated for this interpreter; `root`'s own extras (tests)
    are not followed, an extra that a requirement asks for (e.g. fonttools[woff]) is."""
    closure: dict[str, str] = {}
    pending = [(canonicalize_name(root), frozenset())]
    seen: set[tuple[str, frozenset]] = set()
    while pending:
        name, extras = pending.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = installed.get(name)
        if dist is None:
            raise EvidenceError(
                f"evidence: {name} is required at run time but not installed; "
                f"install the lock: pip install --require-hashes -r requirements/runtime.txt"
            )
        if name != root:
            closure[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                pending.append((canonicalize_name(req.name), frozenset(req.extras)))
    return dict(sorted(closure.items()))
