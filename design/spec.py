"""The design files, read and checked once: `load()` gives the requirements, hazards and anomalies.

Each file is read as plain YAML (`evidence.safeyaml`), checked against its JSON schema
(`design/<name>.schema.json`), then across files: ids unique; a hazard's severity and
probabilities on the declared scales; every requirement a risk control names exists (an unknown
one is an error naming the hazard and the id); every hazard an anomaly names exists.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jsonschema

from evidence.errors import ToolkitError
from evidence.safeyaml import load_file

FOLDER = Path(__file__).resolve().parent
REQUIREMENTS = FOLDER / "requirements.yml"
HAZARDS = FOLDER / "hazards.yml"
ANOMALIES = FOLDER / "anomalies.yml"
FILES = (REQUIREMENTS, HAZARDS, ANOMALIES)
LEVELS = ("Basic", "Enhanced")


class DesignError(ToolkitError):
    """A design file does not have the shape or the cross-references this module reads."""


@dataclass(frozen=True)
class Design:
    requirements: dict[str, dict]   # id -> entry, in file order
    hazards: dict[str, dict]
    anomalies: dict[str, dict]
    scales: dict[str, list[dict]]
    documentation_level: dict

    def level(self) -> tuple[str, list[str]]:
        """(the documentation level, the hazards that decide it): Enhanced when a hazard's harm,
        before risk controls, is at least the declared severity."""
        at = self.documentation_level["enhanced_from_severity"]
        deciding = [h for h, e in self.hazards.items() if e["severity"] >= at]
        return (LEVELS[1] if deciding else LEVELS[0]), deciding

    def tests_needed(self) -> list[str]:
        """The requirements verified by tests (every category except performance)."""
        return [r for r, e in self.requirements.items() if e["category"] != "performance"]


def _read(path: Path, schema: Path) -> dict:
    data = load_file(path, DesignError)
    validator = jsonschema.Draft202012Validator(json.loads(schema.read_text(encoding="utf-8")))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "top level"
        raise DesignError(f"{path}: at {where}: {e.message} (schema {schema.name}; "
                          f"{len(errors)} problem(s) in all)")
    return data


def _unique(entries: list[dict], path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for e in entries:
        if e["id"] in out:
            raise DesignError(f"{path}: id {e['id']} is given twice; give each entry its own id")
        out[e["id"]] = e
    return out


def parse(requirements: Path = REQUIREMENTS, hazards: Path = HAZARDS, anomalies: Path = ANOMALIES) -> Design:
    """The three files checked, alone and against each other."""
    raw_r = _read(requirements, FOLDER / "requirements.schema.json")
    raw_h = _read(hazards, FOLDER / "hazards.schema.json")
    raw_a = _read(anomalies, FOLDER / "anomalies.schema.json")
    reqs = _unique(raw_r["requirements"], requirements)
    hazs = _unique(raw_h["hazards"], hazards)
    anos = _unique(raw_a["anomalies"], anomalies)
    scales = raw_h["scales"]
    levels = {name: [s["level"] for s in scale] for name, scale in scales.items()}
    for name, found in levels.items():
        if found != list(range(1, len(found) + 1)):
            raise DesignError(f"{hazards}: scales.{name}: levels must be numbered 1 to {len(found)} in order, "
                              f"found {found}")
    at = raw_h["documentation_level"]["enhanced_from_severity"]
    if at not in levels["severity"]:
        raise DesignError(f"{hazards}: documentation_level.enhanced_from_severity {at} is not a level of the "
                          f"severity scale ({levels['severity']})")
    for hid, h in hazs.items():
        for key, scale in (("severity", "severity"), ("probability_before", "probability"),
                           ("probability_after", "probability")):
            if h[key] not in levels[scale]:
                raise DesignError(f"{hazards}: hazard {hid}: {key} {h[key]} is not a level of the {scale} scale "
                                  f"({levels[scale]})")
        for c in h["controls"]:
            for rid in c["requirements"]:
                if rid not in reqs:
                    raise DesignError(f"{hazards}: hazard {hid}: risk control {c['control'][:60]!r} names "
                                      f"requirement {rid}, which {requirements.name} does not define")
    for aid, a in anos.items():
        for hid in a["hazards"]:
            if hid not in hazs:
                raise DesignError(f"{anomalies}: anomaly {aid} names hazard {hid}, which {hazards.name} does not define")
        for key, scale in (("severity", "severity"), ("probability", "probability")):
            if a[key] not in levels[scale]:
                raise DesignError(f"{anomalies}: anomaly {aid}: {key} {a[key]} is not a level of the {scale} scale "
                                  f"({levels[scale]})")
    return Design(reqs, hazs, anos, scales, raw_h["documentation_level"])


@lru_cache(maxsize=1)
def load() -> Design:
    """The design of this checkout (read once per process)."""
    return parse()
