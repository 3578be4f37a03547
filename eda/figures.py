"""EDA figures at print resolution (matplotlib Agg), each written atomically to OUT/figures/eda_*.png."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.figures import save_figure  # noqa: E402

DPI = 200
CLASS_COLOURS = {"pneumonia": "#b2182b", "no_pneumonia": "#2166ac", "AP": "#d95f02", "PA": "#1b9e77"}
CLASS_NAMES = {"pneumonia": "Pneumonia", "no_pneumonia": "No pneumonia"}


def _save(fig, path: Path) -> Path:
    return save_figure(fig, path, DPI, bbox_inches="tight")


def age_by_class(ages: dict[str, np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.arange(0, 105, 5)
    for key in ("no_pneumonia", "pneumonia"):
        values = ages[key]
        if len(values):
            ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.8, color=CLASS_COLOURS[key],
                    label=f"{CLASS_NAMES[key]} (n={len(values):,})")
    ax.set_xlabel("Age (years)")
    ax.set_ylabel("Fraction of images per year")
    ax.set_title("Age distribution by label")
    ax.legend(frameon=False, loc="upper left")
    return _save(fig, path)


def view_by_class(views: dict[str, dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    keys = ("no_pneumonia", "pneumonia")
    x = np.arange(len(keys))
    bottom = np.zeros(len(keys))
    for level in ("PA", "AP", "unknown"):
        share = np.array([_fraction(views[k][level]) for k in keys])
        ax.bar(x, share, bottom=bottom, color=CLASS_COLOURS.get(level, "#999999"), label=level, width=0.6)
        bottom += share
    ax.set_xticks(x, [f"{CLASS_NAMES[k]}\n(n={sum(v['images'] for v in views[k].values()):,})" for k in keys])
    ax.set_ylabel("Fraction of images")
    ax.set_ylim(0, 1)
    ax.set_title("View position by label")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(fig, path)


def _fraction(entry: dict) -> float:
    value = entry["fraction"]
    return float(value) if isinstance(value, (int, float)) else 0.0


def cooccurrence(rows: list[dict], path: Path) -> Path:
    rows = [r for r in rows if r["finding"] != "No Finding"]
    rows = sorted(rows, key=lambda r: r["with_pneumonia"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh([r["finding"].replace("_", " ") for r in rows], [r["with_pneumonia"] for r in rows],
            color=CLASS_COLOURS["pneumonia"])
    ax.set_xlabel("Pneumonia images also labelled with the finding")
    ax.set_title("Findings co-occurring with pneumonia")
    return _save(fig, path)


def images_per_patient(distribution: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([d["images"] for d in distribution], [d["patients"] for d in distribution], color="#4d4d4d")
    ax.set_xlabel("Images per patient")
    ax.set_ylabel("Patients")
    ax.set_title("Images per patient")
    return _save(fig, path)


def pixel_intensity(edges: np.ndarray, hist: dict[str, np.ndarray], images: dict[str, int], path: Path) -> Path:
    centres = (edges[:-1] + edges[1:]) / 2
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, keys, title in ((axes[0], ("no_pneumonia", "pneumonia"), "By label"),
                            (axes[1], ("PA", "AP"), "By view")):
        for key in keys:
            counts = hist[key]
            if counts.sum() > 0:
                ax.plot(centres, counts / counts.sum(), color=CLASS_COLOURS[key],
                        label=f"{CLASS_NAMES.get(key, key)} (n={images[key]:,} images)")
        ax.set_xlabel("Pixel intensity (scaled to [0, 1])")
        ax.set_title(title)
        ax.legend(frameon=False)
    axes[0].set_ylabel("Fraction of pixels")
    fig.suptitle("Pixel intensity histograms of the sampled images")
    return _save(fig, path)
