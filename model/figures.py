"""Writing a matplotlib figure as a PNG: the one place eda, model.train and validation save figures.

Imports matplotlib and `evidence.atomic` only (no TensorFlow), so that `eda` may import it.
"""
from __future__ import annotations

from pathlib import Path

from evidence.atomic import atomic_path


def save_figure(fig, path: str | Path, dpi: int, **savefig_kw) -> Path:
    """`fig` as PNG at `path`, atomically, without the library version in its metadata (so the
    bytes depend on the figure alone), then closed."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None}, **savefig_kw)
    plt.close(fig)
    return Path(path)
