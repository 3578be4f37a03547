"""Fast image listing below a folder (os.scandir, no per-file stat beyond the directory walk)."""
from __future__ import annotations

import os
import struct
from pathlib import Path

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)


def list_images(root: str | Path, suffixes: tuple[str, ...] = (".png",)) -> dict[str, list[str]]:
    """Map file name -> absolute paths of every file below `root` whose suffix is in `suffixes`.

    Hidden folders and files (names starting with '.') are skipped; symlinked folders are followed
    once. Paths are sorted per name.
    """
    found: dict[str, list[str]] = {}
    stack = [os.path.abspath(root)]
    seen: set[str] = set()
    suffixes = tuple(s.lower() for s in suffixes)
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:                      # a symlinked folder loop or a second link to one folder
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=True):
                stack.append(entry.path)
            elif entry.name.lower().endswith(suffixes):
                found.setdefault(entry.name, []).append(entry.path)
    for paths in found.values():
        paths.sort()
    return found


def png_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from a PNG header without decoding pixels; None if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def largest(paths: list[str]) -> str:
    """The path with the most pixels (PNG header), falling back to file size; ties: first."""
    def key(p: str) -> tuple[int, int]:
        size = png_size(p)
        return (size[0] * size[1] if size else 0, os.path.getsize(p))
    return max(paths, key=key) if len(paths) > 1 else paths[0]


def header_info(path: str | Path) -> tuple[int, int, float | None]:
    """(width, height, pixel spacing in mm or None) from a PNG, JPEG or DICOM header, without decoding
    pixels. Raises ValueError when the file is not a readable image of those kinds."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        import pydicom
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            width, height = int(ds.Columns), int(ds.Rows)
        except Exception as e:  # pydicom raises several unrelated types for a bad file
            raise ValueError(f"not a readable DICOM image ({type(e).__name__})") from None
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        return width, height, (float(spacing[0]) if spacing else None)
    size = png_size(path)
    if size is None:
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(path) as im:
                size = im.size
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"not a readable PNG or JPEG image ({type(e).__name__})") from None
    return int(size[0]), int(size[1]), None
