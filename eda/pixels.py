"""Pixel statistics on the images present (record `eda.pixels`).

A seeded sample of at most `pixel_sample_max` images is read; each is converted to one grey
channel in [0, 1] (RGB/RGBA with equal channels -> L, 16-bit -> divided by 65535, DICOM -> the
model's display units 0..255 from `model.dicom.read_pixels`, divided by 255), and the
image size, storage mode, per-image mean and sd and intensity histograms by class and by view
are measured. The pooled pixel mean and sd are measured on the training-split images of the
sample only; they are measurements, not the normalisation the model applies (the model's
preprocessing spec, `models/preprocessing.json`, states that).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from evidence import console
from evidence.errors import ToolkitError
from model.dicom import read_dataset, read_pixels

from .dataset import not_estimable, summary
from .images import DICOM_SUFFIXES

BINS = 32
MAX_PROBLEMS_LISTED = 20
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


class PixelError(ToolkitError, ValueError):
    """An image file that cannot be read as a radiograph."""


def load_gray(path: str) -> tuple[np.ndarray, str, tuple[int, int], str]:
    """(pixels in [0, 1] as float32, stored mode, (width, height), colour note).

    The colour note is "grey", "equal_channels" (RGB/RGBA with identical colour channels,
    converted to L), "unequal_channels" (converted with ITU-R 601 luma) or "transparent" (RGBA
    whose alpha is not fully opaque; alpha ignored). DICOM files are read by `load_dicom`."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return load_dicom(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode, size = im.mode, im.size
            if mode in ("RGB", "RGBA"):
                rgb = np.asarray(im)
                same = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
                note = "equal_channels" if same else "unequal_channels"
                if mode == "RGBA" and not (rgb[..., 3] == 255).all():
                    note = "transparent"
                grey = rgb[..., 0] if same else np.asarray(im.convert("RGB").convert("L"))
                return grey.astype(np.float32) / 255.0, mode, size, note
            if mode in SIXTEEN_BIT_MODES:
                arr = np.asarray(im).astype(np.float32)
                if arr.min() < 0 or arr.max() > 65535:
                    raise PixelError(f"{path}: {mode} values outside 0..65535")
                return arr / 65535.0, mode, size, "grey"
            if mode in ("L", "LA", "P", "1"):
                return np.asarray(im.convert("L")).astype(np.float32) / 255.0, mode, size, "grey"
            raise PixelError(f"{path}: unsupported image mode {mode}")
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise PixelError(f"{path}: cannot decode image ({e.__class__.__name__}: {e})") from None


def load_dicom(path: str) -> tuple[np.ndarray, str, tuple[int, int], str]:
    """A DICOM file as `load_gray` returns it: the pixels the model sees (`model.dicom.read_pixels`,
    display units 0..255) divided by 255; the mode is "DICOM <PhotometricInterpretation>"."""
    try:
        ds = read_dataset(path)
        grey = np.asarray(read_pixels(ds), dtype=np.float32) / 255.0
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    except Exception as e:  # pydicom's decoders raise many unrelated types for a bad file
        raise PixelError(f"{path}: cannot decode DICOM ({e.__class__.__name__}: {e})") from None
    return grey, f"DICOM {photometric}", (grey.shape[1], grey.shape[0]), "grey"


def sample_rows(frame: pd.DataFrame, sample_max: int, seed: int) -> pd.DataFrame:
    """At most `sample_max` rows, drawn without replacement with a seeded generator, in manifest order."""
    if len(frame) <= sample_max:
        return frame
    rng = np.random.default_rng(seed)
    return frame.iloc[np.sort(rng.choice(len(frame), size=sample_max, replace=False))]


def _histograms(hists: dict[str, np.ndarray]) -> dict:
    out = {}
    for key, counts in hists.items():
        total = counts.sum()
        out[key] = ([float(x) for x in counts / total] if total else
                    not_estimable(f"no sampled images in group {key!r}"))
    return out


def analyse(frame: pd.DataFrame, sample_max: int, seed: int) -> tuple[dict, dict, dict]:
    """(`eda.pixels` data, quality input, figure arrays). The quality input is {problems, n_checked,
    converted_to_l, converted_by_luma, transparent}: the image ids of each colour conversion."""
    listed = frame[frame["path"] != ""]
    exists = np.fromiter((os.path.isfile(p) for p in listed["path"]), dtype=bool, count=len(listed))
    problems = [{"image_id": i, "path": p, "problem": "missing", "reason": "file does not exist"}
                for i, p in zip(listed["image_id"][~exists], listed["path"][~exists])]
    sample = sample_rows(listed[exists], sample_max, seed)

    edges = np.linspace(0.0, 1.0, BINS + 1)
    hist = {k: np.zeros(BINS) for k in ("pneumonia", "no_pneumonia", "AP", "PA")}
    modes, sizes, notes, group_images = Counter(), Counter(), Counter(), Counter()
    means, sds, labels = [], [], []
    colour_ids = {"equal_channels": [], "unequal_channels": [], "transparent": []}
    pooled = {"train": [0.0, 0.0, 0], "all": [0.0, 0.0, 0]}
    for row in console.progress(sample.itertuples(index=False), "eda pixels", total=len(sample)):
        try:
            pixels, mode, size, note = load_gray(row.path)
        except PixelError as e:
            problems.append({"image_id": row.image_id, "path": row.path, "problem": "unreadable", "reason": str(e)})
            continue
        modes[mode] += 1
        sizes[size] += 1
        notes[note] += 1
        if note in colour_ids:
            colour_ids[note].append(row.image_id)
        means.append(float(pixels.mean()))
        sds.append(float(pixels.std()))
        labels.append(int(row.pneumonia))
        counts = np.histogram(pixels, bins=edges)[0]
        groups = ["pneumonia" if row.pneumonia == 1 else "no_pneumonia"] + (
            [row.view] if row.view in ("AP", "PA") else [])
        for group in groups:
            hist[group] += counts
            group_images[group] += 1
        for key in ("train", "all") if row.split == "train" else ("all",):
            pooled[key][0] += float(pixels.sum(dtype=np.float64))
            pooled[key][1] += float(np.square(pixels, dtype=np.float64).sum())
            pooled[key][2] += pixels.size

    n_read = len(means)
    data = {
        "images_listed_with_path": int(len(listed)),
        "files_missing": int((~exists).sum()),
        "sample": {"max": int(sample_max), "seed": int(seed), "drawn": int(len(sample)),
                   "method": "numpy default_rng choice without replacement among existing files"},
        "images_read": n_read,
        "images_unreadable": sum(p["problem"] == "unreadable" for p in problems),
        "problems": problems[:MAX_PROBLEMS_LISTED],
        "modes": dict(sorted(modes.items())),
        "sizes": [{"width": w, "height": h, "images": n} for (w, h), n in sizes.most_common(10)],
        "colour": {"grey": notes["grey"], "rgb_equal_channels_converted_to_l": notes["equal_channels"],
                   "rgb_unequal_channels_converted_by_luma": notes["unequal_channels"],
                   "rgba_with_transparency": notes["transparent"]},
    }
    means_a, labels_a = np.array(means), np.array(labels)
    if n_read == 0:
        reason = "no readable image files in the cohort (manifest paths empty, missing or unreadable)"
        data.update({"per_image_mean": not_estimable(reason), "per_image_sd": not_estimable(reason),
                     "per_image_mean_by_class": not_estimable(reason), "histograms": not_estimable(reason),
                     "normalisation": not_estimable(reason)})
        figure = None
    else:
        data["per_image_mean"] = summary(means_a)
        data["per_image_sd"] = summary(np.array(sds))
        data["per_image_mean_by_class"] = {"pneumonia": summary(means_a[labels_a == 1]),
                                           "no_pneumonia": summary(means_a[labels_a == 0])}
        data["histograms"] = {"bin_edges": [float(x) for x in edges], "by_class": _histograms(
            {k: hist[k] for k in ("pneumonia", "no_pneumonia")}), "by_view": _histograms(
            {k: hist[k] for k in ("AP", "PA")})}
        data["normalisation"] = normalisation(pooled)
        data["histograms"]["images"] = {k: group_images[k] for k in hist}
        figure = {"edges": edges, "hist": hist, "images": dict(data["histograms"]["images"])}
    quality_input = {"problems": problems, "n_checked": int(len(sample)),
                     "converted_to_l": colour_ids["equal_channels"],
                     "converted_by_luma": colour_ids["unequal_channels"], "transparent": colour_ids["transparent"]}
    return data, quality_input, figure


def normalisation(pooled: dict) -> dict:
    """Pooled pixel mean and sd of the sampled training images on the [0, 1] scale (measured)."""
    key = "train" if pooled["train"][2] > 0 else "all"
    total, total_sq, n = pooled[key]
    mean = total / n
    std = float(np.sqrt(max(total_sq / n - mean * mean, 0.0)))
    if std == 0.0:
        return not_estimable("every sampled pixel has the same value: no spread to standardise with")
    computed_on = ("sampled training-split images" if key == "train" else
                   "all sampled images (no training split assigned yet; recompute after eda.split)")
    return {
        "method": "pooled_mean_sd_after_scale_to_unit",
        "scale": ("divide by the bit-depth maximum (255 for 8-bit, 65535 for 16-bit) after conversion to L; "
                  "DICOM: display units 0..255 (model.dicom.read_pixels) divided by 255"),
        "mean": float(mean), "std": std, "computed_on": computed_on, "pixels": int(n),
        "reason": ("measured; the model's preprocessing spec states the normalisation applied "
                   "(models/preprocessing.json, record training.run)"),
    }
