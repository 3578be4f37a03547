"""Validation figures (PNG, written atomically): ROC and PR with the operating point, reliability,
score histogram by class, forest."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from model.figures import save_figure  # noqa: E402

from .threshold import candidate_curve  # noqa: E402

def _save(fig, path: Path) -> Path:
    return save_figure(fig, path, 120)


def _curve(labels, scores):
    """Points (fpr, tpr, precision) of the rule score >= t for t over the distinct scores (descending)."""
    c = candidate_curve(labels, scores)
    tp, fp = c["tp"], c["fp"]
    P, N = max(int(tp[0] + c["fn"][0]), 1), max(int(fp[0] + c["tn"][0]), 1)
    return fp / N, tp / P, tp / (tp + fp)


def roc(labels, scores, threshold: float, point: dict, path: Path, *, auc: float | None = None,
        title: str = "ROC, test split") -> Path:
    """ROC curve marking the locked operating point {"sensitivity", "specificity"}."""
    fpr, tpr, _ = _curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(np.r_[0, fpr], np.r_[0, tpr], lw=1.5, label="ROC" + (f" (AUC {auc:.3f})" if auc is not None else ""))
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.plot(1 - point["specificity"], point["sensitivity"], "o", c="crimson",
            label=f"locked threshold {threshold:.3g}")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(title, parse_math=False)
    ax.legend(loc="lower right")
    return _save(fig, path)


def roc_pr(labels, scores, threshold: float, point: dict, roc_path: Path, pr_path: Path, *,
           auc: float | None = None) -> list[Path]:
    """ROC and precision-recall curves, each marking the locked operating point.

    point: {"sensitivity": float, "specificity": float, "ppv": float or None}."""
    paths = [roc(labels, scores, threshold, point, roc_path, auc=auc)]
    _, tpr, prec = _curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(tpr, prec, lw=1.5, label="precision-recall")
    prevalence = float(np.mean(np.asarray(labels)))
    ax.axhline(prevalence, ls=":", c="grey", lw=1, label=f"prevalence {prevalence:.3f}")
    if point.get("ppv") is not None:
        ax.plot(point["sensitivity"], point["ppv"], "o", c="crimson", label=f"locked threshold {threshold:.3g}")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(0, 1), ylim=(0, 1.01),
           title="Precision-recall, test split")
    ax.legend(loc="upper right")
    paths.append(_save(fig, pr_path))
    return paths


def reliability(bins: list[dict], path: Path) -> Path:
    """Reliability diagram: observed positive rate against mean score per non-empty bin."""
    full = [b for b in bins if b["n"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="perfect calibration")
    ax.plot([b["mean_score"] for b in full], [b["observed_rate"] for b in full], "o-", label="test split")
    ax.set(xlabel="mean predicted score", ylabel="observed pneumonia rate", xlim=(0, 1), ylim=(0, 1),
           title="Reliability diagram")
    ax.legend(loc="upper left")
    return _save(fig, path)


def score_histogram(labels, scores, threshold: float, path: Path, *, window: float | None = None) -> Path:
    """Histogram of the test scores by class with the locked threshold: over [0, 1] (40 equal
    bins) and, when the scores span less than half of [0, 1], a second panel zoomed on their range
    (30 equal bins) so that scores crowded in a narrow band stay visible."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 1.0)
    zoom = hi - lo < 0.5
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(10 if zoom else 5.5, 4), squeeze=False)
    spans = [((0.0, 1.0), 40, "test scores on [0, 1]")]
    if zoom:
        pad = max((hi - lo) * 0.05, 1e-3)
        left, right = min(lo - pad, threshold - pad), max(hi + pad, threshold + pad)
        spans.append(((left, right), 30, f"zoom on {left:.3f} to {right:.3f}"))
    for ax, ((a, b), n_bins, title) in zip(axes[0], spans):
        edges = np.linspace(a, b, n_bins + 1)
        for cls, name, colour in ((0, "no pneumonia", "tab:blue"), (1, "pneumonia", "tab:red")):
            ax.hist(s[y == cls], bins=edges, alpha=0.55, color=colour, label=f"{name} (n = {int(np.sum(y == cls))})")
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"locked threshold {threshold:.3g}")
        if window is not None:
            ax.axvspan(threshold - window, threshold + window, color="grey", alpha=0.15,
                       label=f"threshold +/- {window:g}")
        ax.set(xlim=(a, b), xlabel="score", ylabel="test images")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, parse_math=False)
    axes[0][0].legend(loc="upper right", fontsize=7)
    fig.suptitle("Score distribution by class, test split")
    fig.tight_layout()
    return _save(fig, path)


def forest(rows: list[tuple[str, dict, dict]], path: Path, *, level: float = 0.95) -> Path:
    """Forest plot: per subgroup (label, sensitivity estimate, specificity estimate); a
    not-estimable value is drawn as a text note."""
    h = max(3.0, 0.28 * len(rows) + 1.2)
    fig, axes = plt.subplots(1, 2, figsize=(9, h), sharey=True)
    ys = np.arange(len(rows))[::-1]
    for ax, idx, name in ((axes[0], 1, "sensitivity"), (axes[1], 2, "specificity")):
        for yv, row in zip(ys, rows):
            est = row[idx]
            if isinstance(est, dict) and "estimate" in est:
                # max(0, .): a Wilson bound at 0 or 1 can sit a rounding error inside the estimate
                ax.errorbar(est["estimate"], yv, xerr=[[max(0.0, est["estimate"] - est["ci_low"])],
                                                       [max(0.0, est["ci_high"] - est["estimate"])]],
                            fmt="s", c="black", ms=4, capsize=2)
            else:
                ax.text(0.02, yv, "not estimable", va="center", fontsize=7, color="grey")
        ax.set(xlim=(0, 1), title=f"{name} ({level:.0%} Wilson CI)")
        ax.grid(axis="x", ls=":", lw=0.5)
    axes[0].set_yticks(ys, [r[0] for r in rows], fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
