"""The software architecture chart, generated from the code: the project's packages, the imports
between them (read from every module's `import` statements, module level and inside functions)
and the stages of the stage table (`evidence.stages`) each package runs. No numbers in it."""
from __future__ import annotations

import ast
from pathlib import Path

from evidence import atomic
from evidence.provenance import REPO_ROOT
from evidence.stages import STAGES

#: the device's Python packages (pyproject's package list, templates excepted: it holds no code)
PACKAGES = ("evidence", "eda", "model", "validation", "design", "submission")


def imports(root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """{package: the other project packages its modules import}."""
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
                for name in names:
                    top = name.split(".")[0]
                    if top in graph and top != pkg:
                        graph[pkg].add(top)
    return graph


def stages_of(pkg: str) -> list[str]:
    return [s.name for s in STAGES if s.module.split(".")[0] == pkg]


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """Depth of each package: 0 for one that imports no other, else one more than its deepest import."""
    depth: dict[str, int] = {}

    def visit(p: str, seen: tuple[str, ...] = ()) -> int:
        if p not in depth:
            depth[p] = 0 if p in seen else 1 + max((visit(q, (*seen, p)) for q in graph[p]), default=-1)
        return depth[p]
    for p in graph:
        visit(p)
    return depth


def draw(path: str | Path, root: Path = REPO_ROOT) -> Path:
    """Write the chart PNG atomically and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    graph = imports(root)
    depth = layers(graph)
    rows: dict[int, list[str]] = {}
    for p in PACKAGES:
        rows.setdefault(depth[p], []).append(p)
    n_rows = max(rows) + 1
    fig, ax = plt.subplots(figsize=(10, 2.3 * n_rows))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 2.3 * n_rows)
    ax.axis("off")
    width, height, centers = 2.6, 1.6, {}
    for d, pkgs in rows.items():
        y = 2.3 * d + 0.4
        step = 10 / len(pkgs)
        for i, p in enumerate(pkgs):
            x = step * i + (step - width) / 2
            centers[p] = (x + width / 2, y + height / 2, y)
            ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.05",
                                        fc="#e2f0d9" if stages_of(p) else "#dbe9f6", ec="#333333"))
            stages = stages_of(p)
            ax.text(x + width / 2, y + height - 0.2, f"package {p}", ha="center", va="top", fontsize=8,
                    fontweight="bold")
            label = ("stages:\n" + "\n".join(stages)) if stages else "(no stage of its own)"
            ax.text(x + width / 2, y + height / 2 - 0.15, label, ha="center", va="center", fontsize=7)
    for src, targets in graph.items():
        for dst in sorted(targets):
            (x1, _, y1), (x2, _, y2) = centers[src], centers[dst]
            ax.add_patch(FancyArrowPatch((x1, y1), (x2, y2 + height), arrowstyle="-|>", mutation_scale=10,
                                         color="#555555", lw=0.8, connectionstyle="arc3,rad=0.08"))
    ax.set_title("Packages of the device software: an arrow runs from a package to each package it imports",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    plt.close(fig)
    return path
