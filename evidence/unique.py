"""One image, one row: the identity of an input file, shared by `model.infer`, the held-out set
(`validation.heldout`) and the folder data source (`eda.sources.folder`).

An input is identified twice: by its resolved path (`os.path.realpath`: symlinks, `./x`, `a//x`
and `a/../x` all reach one path) and by the sha256 of its bytes (a copy under another name is the
same image). `group` keeps the first item of each identity and reports every later one as a
duplicate of it; two items of one identity with different labels are a conflict, which the caller
turns into an error naming both rows.

A name read from a label file is resolved against its folder (`resolve_in`); a name that leads
outside the folder as written (`../`, an absolute path) is refused unless the caller allows it
(`--allow-outside`, params `cohort.nih.allow_paths_outside_folder`). A symlink inside the folder
is followed wherever it points: whoever can place a file in the folder chose it, while a label
file's author can only name paths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .canonical import sha256_file
from .errors import ToolkitError

SAME_FILE = "same file"
SAME_CONTENT = "same content"


class OutsideFolderError(ToolkitError, ValueError):
    """A path from a label file resolves outside its data folder."""


def real(path: str | Path) -> Path:
    """The resolved path (every symlink followed, `.`/`..`/`//` collapsed), absolute."""
    return Path(os.path.realpath(path))


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """True when the resolved `path` lies in (or is) the resolved `folder`."""
    path, folder = real(path), real(folder)
    return path == folder or folder in path.parents


def leads_outside(name: str) -> bool:
    """True when `name`, as written, is absolute or climbs above its folder (`..`), symlinks aside."""
    return os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == os.pardir


def resolve_in(folder: str | Path, name: str, *, allow_outside: bool = False, where: str = "",
               flag: str = "--allow-outside") -> Path:
    """The resolved path of `name` (as written in a label file) relative to `folder`. A name that
    leads outside `folder` (`leads_outside`) raises `OutsideFolderError` (naming `where`, the path
    and `flag`) unless `allow_outside`."""
    path = real(Path(folder) / name)
    if not allow_outside and leads_outside(name):
        prefix = f"{where}: " if where else ""
        raise OutsideFolderError(
            f"{prefix}{name!r} resolves to {path}, outside the data folder {real(folder)}; move the file "
            f"into the folder and name it relative to it, or allow paths outside the folder with {flag}")
    return path


@dataclass(frozen=True)
class Item:
    """One input: `key` the caller's handle (a row number, an index), `name` as the user wrote it."""
    key: Any
    name: str
    path: Path
    sha256: str | None = None
    label: Any = None


@dataclass(frozen=True)
class Duplicate:
    """`item` is the same image as `first` (kept): `how` is SAME_FILE or SAME_CONTENT."""
    item: Item
    first: Item
    how: str

    def detail(self, what: str = "row") -> str:
        digest = f" (sha256 {self.item.sha256[:12]})" if self.how == SAME_CONTENT and self.item.sha256 else ""
        return (f"{self.how} as {what} {self.first.key} ({self.first.name}){digest}: "
                f"the image is counted once, under {what} {self.first.key}")


def item(key: Any, name: str, path: str | Path, label: Any = None, *, content: bool = True) -> Item:
    """An `Item` with the resolved path and (when `content` and the file exists) its sha256."""
    path = real(path)
    digest = sha256_file(path) if content and path.is_file() else None
    return Item(key, str(name), path, digest, label)


def group(items: Iterable[Item]) -> tuple[list[Item], list[Duplicate], list[Duplicate]]:
    """(kept items in order, duplicates, conflicts): an item whose resolved path or sha256 was seen
    before is a duplicate of the first item seen with it; a duplicate whose label differs from the
    first one's is a conflict instead (neither is kept on that account: the caller stops)."""
    kept: list[Item] = []
    duplicates: list[Duplicate] = []
    conflicts: list[Duplicate] = []
    by_path: dict[Path, Item] = {}
    by_content: dict[str, Item] = {}
    for it in items:
        first, how = by_path.get(it.path), SAME_FILE
        if first is None and it.sha256:
            first, how = by_content.get(it.sha256), SAME_CONTENT
        if first is None:
            kept.append(it)
            by_path[it.path] = it
            if it.sha256:
                by_content[it.sha256] = it
            continue
        (conflicts if first.label != it.label else duplicates).append(Duplicate(it, first, how))
    return kept, duplicates, conflicts


def conflict_message(conflict: Duplicate, source: str, what: str = "row") -> str:
    """One line naming both rows of a conflict and the fix."""
    a, b = conflict.first, conflict.item
    return (f"{source}: {what} {a.key} ({a.name}, label {a.label}) and {what} {b.key} ({b.name}, label {b.label}) "
            f"are one image ({conflict.how}{', sha256 ' + b.sha256[:12] if b.sha256 else ''}) with different "
            "labels; correct the label or remove one of the rows")


def dedupe_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[Duplicate]]:
    """(the paths to read, each image once, in order; the duplicates left out), by resolved path and
    by content. Unlabelled, so never a conflict."""
    kept, duplicates, _ = group(item(i + 1, str(p), p) for i, p in enumerate(paths))
    return [Path(it.name) for it in kept], duplicates
