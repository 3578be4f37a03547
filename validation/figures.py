"""Validation figures (PNG, written atomically): ROC and PR with the operating point, reliability, forest."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
