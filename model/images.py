"""Image files -> 2-D float32 display units 0..255 (PNG, JPEG via tf.io; DICOM via model.dicom).

`decode_display` is the graph-mode decoder the tf.data pipeline uses; `load_pixels` runs the very
same decoder eagerly for one file, so training, prediction and inference see identical pixels.
Colour handling: grayscale, gray+alpha, and RGB/RGBA whose colour channels are equal (as in
NIH PNGs) give the gray channel; a true colour image gives ITU-R BT.601 luma. 16-bit PNGs are
scaled to 0..255 (value * 255 / 65535).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evidence.errors import ToolkitError

PNG_SUFFIXES = (".png",)
JPEG_SUFFIXES = (".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom", "")


class ImageError(ToolkitError, ValueError):
    """An image file is missing or cannot be decoded; the message names the file."""


def kind_of(path: str | Path) -> str:
    """'png', 'jpeg' or 'dicom' by file suffix (a file without suffix is taken as DICOM)."""
    suffix = Path(str(path)).suffix.lower()
    if suffix in PNG_SUFFIXES:
        return "png"
    if suffix in JPEG_SUFFIXES:
        return "jpeg"
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    raise ImageError(f"image file {path}: unsupported type {suffix!r} (use PNG, JPEG or DICOM .dcm)")


def to_gray(x):
    """(H, W, C) float tensor -> (H, W): the gray channel, or BT.601 luma for a true colour image."""
    from .tf import tf

    def from_colour():
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        equal = tf.reduce_all(tf.equal(r, g)) & tf.reduce_all(tf.equal(g, b))
        return tf.cond(equal, lambda: r, lambda: 0.299 * r + 0.587 * g + 0.114 * b)

    return tf.cond(tf.shape(x)[-1] >= 3, from_colour, lambda: x[..., 0])


def decode_display(contents, kind: str):
    """Encoded PNG/JPEG bytes (string tensor) -> (H, W) float32 display units 0..255."""
    from .tf import tf

    if kind == "png":  # decoding as uint16 maps 8-bit v to v*257, so /257 is exact for both depths
        x = tf.cast(tf.io.decode_png(contents, channels=0, dtype=tf.uint16), tf.float32) / 257.0
    elif kind == "jpeg":
        x = tf.cast(tf.io.decode_jpeg(contents, channels=0, dct_method="INTEGER_ACCURATE"), tf.float32)
    else:
        raise ImageError(f"decode_display: kind must be png or jpeg, got {kind!r}")
    return to_gray(x)


def read_dicom_display(path: str | Path) -> np.ndarray:
    """DICOM -> display units via model.dicom.read_pixels (modality LUT, VOI window, MONOCHROME1)."""
    from model.dicom import read_pixels

    return np.asarray(read_pixels(path), dtype=np.float32)


def load_pixels(path: str | Path) -> np.ndarray:
    """One image file -> 2-D float32 display units 0..255. Raises ImageError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path} (check the manifest path column)")
    kind = kind_of(path)
    try:
        if kind == "dicom":
            pixels = read_dicom_display(path)
        else:
            from .tf import tf

            pixels = decode_display(tf.io.read_file(str(path)), kind).numpy()
    except ImageError:
        raise
    except Exception as e:  # any decoder failure becomes one message naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImageError(f"cannot read image file {path}: {first} (replace or remove the file)") from None
    if pixels.ndim != 2:
        raise ImageError(f"image file {path}: expected a 2-D grayscale image, got shape {pixels.shape}")
    return pixels.astype(np.float32, copy=False)
