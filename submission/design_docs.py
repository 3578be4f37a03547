"""Template globals of the software documentation and the risk management file: the documentation
level decided from the hazards file, and the verification of each requirement from record
`verification.tests` (`make verify`) when the run folder holds it.

Every printed value is traced: requirement, hazard and anomaly text to the design files (facts
files, `design/*.yml`), verdicts, test names and counts to the record. Counts of a list print the
list's length, traced to the list.
"""
from __future__ import annotations

from dataclasses import dataclass

from .render import Renderer, Traced, TracedText, unwrap

RECORD = "verification.tests"


def count_of(value: Traced) -> Traced:
    """The number of entries of a traced list or mapping, traced to it."""
    return Traced(len(value.value), value.record_id, value.pointer, value.sha256, value.source)


@dataclass(frozen=True)
class Level:
    level: TracedText           # Basic or Enhanced, traced to the rule of hazards.yml
    threshold: Traced           # the lowest severity level that decides Enhanced
    deciding: list[Traced]      # the hazards whose severity before controls decides it


@dataclass(frozen=True)
class Row:
    requirement: Traced         # the entry of design/requirements.yml
    result: Traced | None       # its verdict in the record, None when the record lacks it
    passing: list[Traced]       # node ids of its passing tests (at most SHOWN)
    failing: list[Traced]       # node ids of its failed or erred tests (at most SHOWN)


SHOWN = 3


def documentation_level(renderer: Renderer) -> Level:
    """The documentation level (June 2023 guidance), decided before risk controls by
    `design.spec.Design.level` from the hazards' severities."""
    from design.spec import load

    level, deciding = load().level()
    rule = renderer.fact("hazards.documentation_level")
    hazards = {h.value["id"]: h for h in renderer.fact("hazards.hazards")}
    return Level(TracedText(level, rule.child("rule")), rule.child("enhanced_from_severity"),
                 [hazards[h] for h in deciding])


def verification_rows(renderer: Renderer) -> dict[str, Row] | None:
    """{requirement id: its row}, in the order of design/requirements.yml, with the verdict from
    record verification.tests; None when the run folder does not hold the record (make verify was
    not run)."""
    if not renderer.has(RECORD):
        return None
    results = renderer.ev(RECORD, "/data/requirements")
    tests = {t.value["nodeid"]: t for t in renderer.ev(RECORD, "/data/tests")}
    rows = {}
    for req in renderer.fact("requirements.requirements"):
        rid = req.value["id"]
        result = results.child(rid) if rid in results.value else None
        names = result.value["tests"] if result is not None else []
        passing = [tests[n].child("nodeid") for n in names if tests[n].value["outcome"] == "passed"]
        failing = [tests[n].child("nodeid") for n in names if tests[n].value["outcome"] in ("failed", "error")]
        rows[rid] = Row(req, result, passing[:SHOWN], failing[:SHOWN])
    return rows


def hazard_levels(renderer: Renderer) -> dict[int, dict[int, Traced]]:
    """{"severity"|"probability": {level: its scale entry}} for printing a level's name."""
    scales = renderer.fact("hazards.scales")
    return {name: {e.value["level"]: e for e in scales.child(name)} for name in ("severity", "probability")}


def template_globals(renderer: Renderer) -> dict:
    return {"count_of": count_of, "plain": unwrap,
            "documentation_level": lambda: documentation_level(renderer),
            "verification_rows": lambda: verification_rows(renderer),
            "hazard_levels": lambda: hazard_levels(renderer)}
