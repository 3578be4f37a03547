"""python -m submission.sbom --out OUT --params PARAMS

The software bill of materials of the device, `OUT/submission/sbom.cdx.json` (CycloneDX 1.6 JSON),
and record `software.sbom`. Its components are the device's runtime dependencies only: every
package the hashed lock `requirements/runtime.txt` pins (name, version, package URL
`pkg:pypi/name@version`, and the sha256 of each distribution file the lock accepts), plus the
Python interpreter. Licenses come from the installed distributions' metadata (the SPDX expression
when the metadata gives one, else the license name it states); the dependency graph from their
requirements (markers evaluated for this interpreter, extras followed as asked). Support level and
end-of-support come from the manufacturer's facts file `submission/data/sbom_support.yml`, as
component properties (CycloneDX has no field for them). The known-vulnerability assessment
(`submission.vulnerabilities`) runs only when params `submission.vulnerabilities.check` is true;
its result, assessed or not and why, is in the record and, when assessed, in the SBOM.
"""
from __future__ import annotations

import json
import platform
import re
import sys
import uuid
from collections import Counter
from datetime import datetime, timezone
from importlib.metadata import Distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from evidence import atomic, layout, write_record
from evidence.cli import stage_main
from evidence.errors import ToolkitError
from evidence.params import section
from evidence.provenance import REPO_ROOT, installed_distributions, project_distribution
from evidence.safeyaml import load_file

from . import vulnerabilities

LOCK = REPO_ROOT / "requirements" / "runtime.txt"
SUPPORT = Path(__file__).resolve().parent / "data" / "sbom_support.yml"
DEVICE = Path(__file__).resolve().parent / "data" / "device.yml"
SPEC_VERSION = "1.6"
UNKNOWN = "unknown"
#: SPDX license ids that a bare License field may hold and the SBOM then gives as an id (each is in
#: the SPDX license list CycloneDX's schema enumerates); any other text is given as a license name.
SPDX_IDS = frozenset({"MIT", "MIT-0", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "MPL-2.0", "PSF-2.0",
                      "ISC", "0BSD", "Zlib", "LGPL-2.1-or-later", "LGPL-3.0-or-later", "GPL-3.0-only",
                      "Unlicense", "CC0-1.0"})
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


class SbomError(ToolkitError):
    pass


def read_lock(path: Path = LOCK) -> dict[str, dict]:
    """{normalized name: {"version", "sha256": [...]}} of every pin of a `--generate-hashes` lock."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SbomError(f"{path}: cannot be read ({e.strerror}); regenerate it with make lock") from None
    pins: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = {"version": m.group(2), "sha256": []}
        if current is not None:
            pins[current]["sha256"] += _HASH.findall(line)
    unhashed = sorted(n for n, p in pins.items() if not p["sha256"])
    if not pins or unhashed:
        raise SbomError(f"{path}: {'no pinned package' if not pins else 'no sha256 for ' + ', '.join(unhashed)}; "
                        "the lock must be generated with hashes (make lock)")
    return dict(sorted(pins.items()))


def read_support(path: Path = SUPPORT) -> dict:
    """The support facts: {namespace, default: {level, end_of_support, source}, overrides: {name: ...}}."""
    raw = load_file(path, SbomError)
    fields = {"level", "end_of_support", "source"}

    def entry(value, where: str, extra: set[str] = frozenset()) -> dict:
        if not isinstance(value, dict) or not fields <= set(value) or set(value) - fields - extra:
            raise SbomError(f"{path}: {where} must have exactly {', '.join(sorted(fields | extra))}")
        if not all(isinstance(value[k], str) and value[k].strip() for k in value):
            raise SbomError(f"{path}: {where}: every value is non-empty text (end_of_support: a date or unknown)")
        return value

    if not isinstance(raw, dict) or not isinstance(raw.get("namespace"), str) or "default" not in raw:
        raise SbomError(f"{path}: expected namespace, default and overrides")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise SbomError(f"{path}: overrides must map package names to entries")
    return {"namespace": raw["namespace"], "default": entry(raw["default"], "default"),
            "overrides": {canonicalize_name(k): entry(v, f"override {k!r}", {"versions"}) for k, v in overrides.items()}}


def support_of(name: str, version: str, support: dict) -> dict:
    entry = support["overrides"].get(canonicalize_name(name))
    if entry is None or not version.startswith(entry.get("versions", "")):
        entry = support["default"]
    return {k: entry[k] for k in ("level", "end_of_support", "source")}


def licenses_of(dist: Distribution | None) -> list[dict]:
    """CycloneDX `licenses` from the metadata: the SPDX expression (License-Expression), else the
    License field when it is one line (an id when it is a known SPDX id), else the classifiers'
    license names; [] when the metadata states none."""
    if dist is None:
        return []
    meta = dist.metadata
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return [{"expression": expression}]
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 80 and text.upper() != UNKNOWN.upper():
        return [{"license": {"id": text}}] if text in SPDX_IDS else [{"license": {"name": text}}]
    names = [c.split("::")[-1].strip() for c in (meta.get_all("Classifier") or []) if c.startswith("License ::")]
    return [{"license": {"name": n}} for n in dict.fromkeys(names) if n]


def license_label(licenses: list[dict]) -> str:
    """One text per component for the record's counts: the expression, id or name(s)."""
    if not licenses:
        return "not stated in the package metadata"
    parts = [x.get("expression") or x["license"].get("id") or x["license"].get("name") for x in licenses]
    return " / ".join(parts)


def dependency_graph(root: str, installed: dict[str, Distribution], names: set[str]) -> dict[str, list[str]]:
    """{name: [names it requires]} from `root` over the installed metadata, restricted to `names`
    (the lock), markers evaluated for this interpreter, extras followed where a requirement asks
    for them (as `evidence.provenance.runtime_closure` does); `root`'s own extras are not followed."""
    edges: dict[str, set[str]] = {}
    pending, seen = [(canonicalize_name(root), frozenset())], set()
    while pending:
        name, extras = pending.pop()
        if (name, extras) in seen or name not in installed:
            continue
        seen.add((name, extras))
        for text in installed[name].requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                dep = canonicalize_name(req.name)
                if dep in names:
                    edges.setdefault(name, set()).add(dep)
                pending.append((dep, frozenset(req.extras)))
    return {k: sorted(v) for k, v in edges.items()}


def purl(name: str, version: str) -> str:
    return f"pkg:pypi/{name}@{version}"


def _properties(namespace: str, support: dict) -> list[dict]:
    return [{"name": f"{namespace}:support_level", "value": support["level"]},
            {"name": f"{namespace}:end_of_support", "value": support["end_of_support"]},
            {"name": f"{namespace}:support_source", "value": support["source"]}]


def build(*, lock: dict[str, dict] | None = None, installed: dict[str, Distribution] | None = None,
          support: dict | None = None, device: dict | None = None, vulnerability: dict | None = None,
          timestamp: str | None = None) -> dict:
    """The CycloneDX document (a dict). Every pin of the lock must be installed at its locked
    version: the licenses and the graph are read from what is installed."""
    lock = read_lock() if lock is None else lock
    installed = installed_distributions() if installed is None else installed
    support = read_support() if support is None else support
    if device is None:
        device = load_file(DEVICE, SbomError)
    ns = support["namespace"]
    other = sorted(n for n, p in lock.items() if n not in installed or installed[n].version != p["version"])
    if other:
        raise SbomError(f"the environment is not the lock {LOCK.name}: {', '.join(other[:8])}"
                        f"{' ...' if len(other) > 8 else ''} not installed at the locked version; "
                        "install it (make venv) before building the SBOM")
    root = project_distribution()
    device_ref = "device"
    components = []
    for name, pin in lock.items():
        ref = purl(name, pin["version"])
        components.append({
            "type": "library", "bom-ref": ref, "name": name, "version": pin["version"], "purl": ref,
            "hashes": [{"alg": "SHA-256", "content": h} for h in pin["sha256"]],
            "licenses": licenses_of(installed.get(name)),
            "properties": _properties(ns, support_of(name, pin["version"], support)),
        })
    py_version = platform.python_version()
    components.append({
        "type": "platform", "bom-ref": f"python@{py_version}", "name": "python", "version": py_version,
        "description": f"CPython interpreter ({platform.python_implementation()}, {sys.platform})",
        "licenses": [{"license": {"id": "PSF-2.0"}}],
        "properties": _properties(ns, support_of("python", py_version, support)),
    })
    graph = dependency_graph(root, installed, set(lock))
    direct = graph.pop(canonicalize_name(root), [])
    refs = {n: purl(n, p["version"]) for n, p in lock.items()}
    dependencies = [{"ref": device_ref, "dependsOn": [refs[n] for n in direct] + [f"python@{py_version}"]}]
    dependencies += [{"ref": refs[n], "dependsOn": [refs[d] for d in graph.get(n, [])]} for n in lock]
    bom = {
        "bomFormat": "CycloneDX", "specVersion": SPEC_VERSION, "serialNumber": uuid.uuid4().urn, "version": 1,
        "metadata": {
            "timestamp": timestamp or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lifecycles": [{"phase": "build"}],
            "tools": {"components": [{"type": "application", "name": "cxr-510k-toolkit submission.sbom",
                                      "version": str(device.get("version", ""))}]},
            "authors": [{"name": str(device["manufacturer"])}],
            "supplier": {"name": str(device["manufacturer"])},
            "component": {"type": "application", "bom-ref": device_ref, "name": str(device["name"]),
                          "version": str(device["version"]),
                          "supplier": {"name": str(device["manufacturer"])},
                          "description": "Software as a medical device: chest radiograph triage and notification"},
            "properties": [
                {"name": f"{ns}:scope", "value": "runtime dependencies of the device only (requirements/runtime.txt "
                                                 "and the interpreter); test and build tools are not part of the device"},
                {"name": f"{ns}:hashes", "value": "each library's hashes are the sha256 of every distribution file "
                                                  "the hashed lock requirements/runtime.txt accepts for it"},
                {"name": f"{ns}:support_properties", "value": f"{ns}:support_level, {ns}:end_of_support and "
                                                              f"{ns}:support_source give the support level and "
                                                              "end-of-support date of each component "
                                                              "(submission/data/sbom_support.yml)"},
            ],
        },
        "components": components,
        "dependencies": dependencies,
    }
    if vulnerability and vulnerability.get("assessed"):
        bom["vulnerabilities"] = [
            {"bom-ref": f"{vid}@{f['component']}", "id": vid,
             "source": {"name": vulnerability["source"], "url": f"https://osv.dev/vulnerability/{vid}"},
             "affects": [{"ref": refs[f["component"]]}]}
            for f in vulnerability["findings"] for vid in f["ids"]]
    return bom


def summary(bom: dict) -> dict:
    """The record's view of the SBOM: counts of components, licenses and support status."""
    ns_props = [{p["name"].split(":", 1)[1]: p["value"] for p in c.get("properties", [])} for c in bom["components"]]
    libraries = [c for c in bom["components"] if c["type"] == "library"]
    eos = [p["end_of_support"] for p in ns_props]
    return {
        "format": "CycloneDX", "spec_version": bom["specVersion"],
        "components": len(bom["components"]), "libraries": len(libraries),
        "platforms": len(bom["components"]) - len(libraries),
        "hashes": sum(len(c.get("hashes", [])) for c in bom["components"]),
        "dependency_edges": sum(len(d["dependsOn"]) for d in bom["dependencies"]),
        "direct_dependencies": len(next(d for d in bom["dependencies"] if d["ref"] == "device")["dependsOn"]),
        "licenses": dict(sorted(Counter(license_label(c.get("licenses", [])) for c in bom["components"]).items())),
        "license_not_stated": sum(1 for c in bom["components"] if not c.get("licenses")),
        "support_levels": dict(sorted(Counter(p["support_level"] for p in ns_props).items())),
        "end_of_support_known": sum(1 for e in eos if e != UNKNOWN),
        "end_of_support_unknown": sum(1 for e in eos if e == UNKNOWN),
        "end_of_support_dates": sorted({f"{c['name']} {c['version']}: {p['end_of_support']}"
                                        for c, p in zip(bom["components"], ns_props) if p["end_of_support"] != UNKNOWN}),
        "component_names": [c["name"] for c in bom["components"]],
    }


def run(out: str | Path, params: dict) -> list[dict]:
    out = Path(out)
    lock = read_lock()
    checks = params.get("vulnerabilities") or {}
    vulnerability = vulnerabilities.assess(
        {n: p["version"] for n, p in lock.items()}, check=bool(checks.get("check", False)),
        url=checks.get("url", vulnerabilities.OSV_BATCH_URL), timeout_s=float(checks.get("timeout_s", 10)))
    bom = build(lock=lock, vulnerability=vulnerability)
    path = atomic.write_text(layout.sbom(out), json.dumps(bom, indent=2, ensure_ascii=False) + "\n")
    data = {"file": path.relative_to(out).as_posix(), **summary(bom), "vulnerability_assessment": vulnerability}
    return [write_record(out, "software.sbom", params=params, data=data, outs=[path])]


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m submission.sbom", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "submission")),
        summary=lambda records, a: (
            f"sbom: {records[0]['data']['components']} components in {records[0]['data']['file']}; vulnerabilities "
            + ("assessed" if records[0]["data"]["vulnerability_assessment"]["assessed"] else
               "not assessed: " + records[0]["data"]["vulnerability_assessment"]["reason"])))


if __name__ == "__main__":
    sys.exit(main())
