"""The device flowchart figure (no numbers in it): DICOM in, checks, model, triage flag out."""
from __future__ import annotations

from pathlib import Path

from evidence import atomic

STEPS = [
    ("DICOM chest radiograph\nfrom the modality or PACS", "io"),
    ("Header checks\nmodality, body part, view, age", "check"),
    ("Preprocessing\ngrayscale, resize, intensity scaling", "proc"),
    ("Convolutional neural network\npneumonia score", "proc"),
    ("Locked operating threshold\n(chosen on the validation split)", "check"),
    ("Triage flag to the worklist\nradiologist reads every image", "io"),
]
REJECT = "Rejected: not analyzed,\nreason returned to the user"
COLORS = {"io": "#dbe9f6", "check": "#fbe5c8", "proc": "#e2f0d9"}


def draw(path: str | Path) -> Path:
    """Write the flowchart PNG atomically and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    n = len(STEPS)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 * n))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, n)
    ax.axis("off")
    box_w, box_h, x0 = 4.6, 0.72, 0.6
    centers = []
    for i, (label, kind) in enumerate(STEPS):
        y = n - i - 0.5
        centers.append(y)
        ax.add_patch(FancyBboxPatch((x0, y - box_h / 2), box_w, box_h, boxstyle="round,pad=0.04",
                                    facecolor=COLORS[kind], edgecolor="#333333", linewidth=1))
        ax.text(x0 + box_w / 2, y, label, ha="center", va="center", fontsize=9)
    for a, b in zip(centers, centers[1:]):
        ax.annotate("", xy=(x0 + box_w / 2, b + box_h / 2 + 0.04), xytext=(x0 + box_w / 2, a - box_h / 2 - 0.04),
                    arrowprops=dict(arrowstyle="->", color="#333333"))
    ry = centers[1]
    ax.add_patch(FancyBboxPatch((6.4, ry - box_h / 2), 3.2, box_h, boxstyle="round,pad=0.04",
                                facecolor="#f4cccc", edgecolor="#333333", linewidth=1))
    ax.text(8.0, ry, REJECT, ha="center", va="center", fontsize=8.5)
    ax.annotate("", xy=(6.35, ry), xytext=(x0 + box_w + 0.08, ry),
                arrowprops=dict(arrowstyle="->", color="#aa0000"))
    ax.text(5.8, ry + 0.12, "fails", ha="center", fontsize=8, color="#aa0000")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)
