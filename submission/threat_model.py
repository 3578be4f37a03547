"""The threat model (`submission/data/threat_model.yml`): read and checked here once, drawn as the
data-flow diagram, and laid out for the cybersecurity document.

Checked against `submission/threat_model.schema.json`, then across entries: a flow joins two
declared elements, every control a threat names is declared and every declared control is named.
That each named test exists is checked by `tests/test_threat_model.py` (the device does not ship
its tests). The document shows each test's outcome from record `verification.tests` when the run
holds it, and "not run in this build" otherwise.
"""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from evidence import atomic
from evidence.errors import ToolkitError
from evidence.safeyaml import load_file

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "threat_model.yml"
SCHEMA = HERE / "threat_model.schema.json"
#: STRIDE, in its order, with the words the document prints for each key.
STRIDE = {"spoofing": "Spoofing", "tampering": "Tampering", "repudiation": "Repudiation",
          "information_disclosure": "Information disclosure", "denial_of_service": "Denial of service",
          "elevation_of_privilege": "Elevation of privilege"}
KINDS = {"code": "device code", "labeling": "labeling, for the user facility"}
VERIFICATION = "verification.tests"
NOT_RUN = "not run in this build"


class ThreatModelError(ToolkitError):
    pass


def load(path: Path = DATA) -> dict:
    """The threat model, checked; every problem is one line naming the file and the entry."""
    model = load_file(path, ThreatModelError)
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(model))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ThreatModelError(f"{path}: at {where}: {error.message} (schema {SCHEMA.name})")
    problems = cross_check(model)
    if problems:
        raise ThreatModelError(f"{path}: " + "; ".join(problems))
    return model


def cross_check(model: dict) -> list[str]:
    elements = [e["id"] for e in model["elements"]]
    flows = [f["id"] for f in model["flows"]]
    problems = [f"element {e!r} is declared twice" for e in sorted({e for e in elements if elements.count(e) > 1})]
    problems += [f"flow {f!r} is declared twice" for f in sorted({f for f in flows if flows.count(f) > 1})]
    named = set()
    for f in model["flows"]:
        for end in ("from", "to"):
            if f[end] not in elements:
                problems.append(f"flow {f['id']}: {end} {f[end]!r} is not a declared element")
        for category, a in f["stride"].items():
            for c in a.get("controls", []):
                named.add(c)
                if c not in model["controls"]:
                    problems.append(f"flow {f['id']} {category}: control {c!r} is not declared under controls")
    problems += [f"control {c!r} is declared but no threat names it" for c in model["controls"] if c not in named]
    return problems


def named_tests(model: dict) -> list[str]:
    """Every test node id the controls name, once, in order."""
    return list(dict.fromkeys(t for c in model["controls"].values() for t in c.get("tests", [])))


def draw(path: str | Path, model: dict) -> Path:
    """The data-flow diagram: external elements left (sources) and right (receivers), the device's
    elements inside a dashed trust boundary, one numbered arrow per flow. No numbers besides the
    flow ids; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Rectangle

    names = {e["id"]: e["name"] for e in model["elements"]}
    inside = [e["id"] for e in model["elements"] if e["inside"]]
    sources = {f["from"] for f in model["flows"]}
    left = [e["id"] for e in model["elements"] if not e["inside"] and e["id"] in sources]
    right = [e["id"] for e in model["elements"] if not e["inside"] and e["id"] not in left]
    columns = [(left, 1.6), (inside, 6.0), (right, 10.4)]
    rows = max(len(c) for c, _ in columns)
    height = 1.6 * rows + 0.8
    fig, ax = plt.subplots(figsize=(9.5, height * 0.85))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, height)
    ax.axis("off")
    w, h = 2.7, 0.8
    pos = {}
    for ids, x in columns:
        step = (height - 0.8) / max(len(ids), 1)
        for i, eid in enumerate(ids):
            pos[eid] = (x, height - 0.4 - step * (i + 0.5))
    ax.add_patch(Rectangle((6.0 - w / 2 - 0.35, 0.1), w + 0.7, height - 0.35, fill=False, linestyle="--",
                           edgecolor="#aa0000", linewidth=1.2))
    ax.text(6.0 + w / 2 + 0.45, height - 0.3, "trust boundary\nof the device", ha="left", va="top", fontsize=8,
            color="#aa0000")
    for eid, (x, y) in pos.items():
        color = "#e2f0d9" if eid in inside else "#dbe9f6"
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04",
                                    facecolor=color, edgecolor="#333333", linewidth=1))
        ax.text(x, y, names[eid], ha="center", va="center", fontsize=8, wrap=True)
    for k, f in enumerate(model["flows"]):
        (x1, y1), (x2, y2) = pos[f["from"]], pos[f["to"]]
        dx = (w / 2 + 0.05) * (1 if x2 > x1 else -1 if x2 < x1 else 0)
        dy = 0 if dx else (h / 2 + 0.05) * (1 if y2 > y1 else -1)
        start, end = (x1 + dx, y1 + dy), (x2 - dx, y2 - dy)
        if f["from"] == f["to"] or start == end:
            continue
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color="#333333",
                                                              connectionstyle=f"arc3,rad={0.08 * (k % 3 - 1)}"))
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx, my, f"{f['id']}", ha="center", va="center", fontsize=8, fontweight="bold",
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="#888888"))
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def template_globals(renderer) -> dict:
    """`threat_flows()` and `security_controls()`: the threat model laid out for the templates,
    every text traced to the facts file (and each test outcome to `verification.tests`)."""

    def model():
        load()  # checked before anything of it is printed
        return renderer.fact("threat_model")

    def outcomes() -> dict:
        if not renderer.has(VERIFICATION):
            return {}
        return {t.child("nodeid").value: t.child("outcome") for t in renderer.ev(VERIFICATION, "tests")}

    def threat_flows() -> list[dict]:
        tm = model()
        names = {e.child("id").value: e.child("name") for e in tm.child("elements")}
        flows = []
        for f in tm.child("flows"):
            rows = []
            for key, words in STRIDE.items():
                a = f.child("stride").child(key)
                if "not_applicable" in a.value:
                    rows.append({"category": words, "applies": False, "reason": a.child("not_applicable")})
                else:
                    rows.append({"category": words, "applies": True, "threat": a.child("threat"),
                                 "exploitability": a.child("exploitability"), "residual": a.child("residual"),
                                 "controls": [tm.child("controls").child(c.value).child("name") for c in a.child("controls")]})
            flows.append({"id": f.child("id"), "name": f.child("name"), "source": names[f.value["from"]],
                          "destination": names[f.value["to"]], "stride": rows})
        return flows

    def security_controls() -> list[dict]:
        tm, found = model(), outcomes()
        controls = []
        for cid, c in tm.child("controls").items():
            tests = [{"nodeid": t, "outcome": found.get(t.value, NOT_RUN)} for t in
                     (c.child("tests") if "tests" in c.value else [])]
            controls.append({"name": c.child("name"), "kind": KINDS[c.value["kind"]], "what": c.child("what"),
                             "tests": tests, "gap": c.child("gap") if "gap" in c.value else None})
        return controls

    return {"threat_flows": threat_flows, "security_controls": security_controls,
            "verification_record": lambda: renderer.has(VERIFICATION)}
