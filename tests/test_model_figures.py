"""model.figures.save_figure: the one place figures are written (evidence stays free of matplotlib)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from model.figures import save_figure  # noqa: E402


def test_save_figure_leaves_out_the_library_version(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    data = save_figure(fig, tmp_path / "f.png", 50).read_bytes()
    assert data.startswith(b"\x89PNG") and b"matplotlib" not in data.lower()
    assert not plt.get_fignums() and not list(tmp_path.glob(".*"))


def test_same_figure_same_bytes(tmp_path):
    def draw(path):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [2, 0, 1])
        return save_figure(fig, path, 40).read_bytes()

    assert draw(tmp_path / "a.png") == draw(tmp_path / "b.png")
