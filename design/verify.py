"""python -m design.verify --out OUT [--junit FILE] [--bench FILE]: the verification record.

Reads the JUnit XML of a test run (`make verify` writes `OUT/verification/junit.xml`; each test
carries the requirements it verifies as a property, `design.pytest_plugin`) and writes record
`verification.tests`:

- `tests`: per test `{nodeid, outcome (passed, failed, error, skipped), requirements}`;
- `requirements`: per requirement of design/requirements.yml `{verdict ("verified" or "not
  verified"), tests (node ids), reason}`. A requirement is verified only when at least one of its
  tests passed and none failed or erred; a performance requirement only by its benchmark figure
  in the results of `make bench` (`--bench`, default `build/bench/results.json`), within its
  limit, and "not verified: benchmark not run" without that file;
- `counts`, the XML's sha256 (the XML is a dependency of the record, and so is the benchmark file
  when read), and the revision history of the checkout (git tags and recent commits).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from evidence import layout, write_record
from evidence.canonical import sha256_file
from evidence.cli import stage_main
from evidence.errors import ToolkitError
from evidence.provenance import REPO_ROOT

from . import spec
from .pytest_plugin import NODEID, PROPERTY

RECORD = "verification.tests"
BENCH = Path("build") / "bench" / "results.json"
OUTCOMES = ("passed", "failed", "error", "skipped")
COMMITS = 20           # recent commits listed in the revision history
LIMITS = {"at_most": "at most", "at_least": "at least", "below": "below"}


class VerifyError(ToolkitError):
    pass


def read_junit(path: Path) -> list[dict]:
    """One entry per test of the XML, in file order: {nodeid, outcome, requirements}; a test named
    twice (a failing teardown after a pass) keeps its worst outcome."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise VerifyError(f"{path}: not JUnit XML ({e}); rerun make verify") from None
    except OSError as e:
        raise VerifyError(f"{path}: cannot be read ({e.strerror}); run make verify first") from None
    tests: dict[str, dict] = {}
    traced = False
    for case in root.iter("testcase"):
        props = {p.get("name"): p.get("value", "") for p in case.iter("property")}
        traced = traced or NODEID in props
        nodeid = props.get(NODEID) or f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            outcome = "failed"
        elif case.find("error") is not None:
            outcome = "error"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        entry = tests.setdefault(nodeid, {"nodeid": nodeid, "outcome": outcome,
                                          "requirements": sorted(props.get(PROPERTY, "").split())})
        if _worse(outcome, entry["outcome"]):
            entry["outcome"] = outcome
    if not tests:
        raise VerifyError(f"{path}: holds no test case; run make verify with tests to run (TESTS=...)")
    if not traced:
        raise VerifyError(f"{path}: no test carries the trace properties (node id, requirements); write the XML "
                          "with make verify (plugin design.pytest_plugin, junit_family xunit1)")
    return list(tests.values())


def _worse(a: str, b: str) -> bool:
    rank = {"failed": 3, "error": 2, "passed": 1, "skipped": 0}
    return rank[a] > rank[b]


def bench_verdict(entry: dict, results: dict | None) -> tuple[str, str, float | None]:
    """(verdict, reason, figure) of a performance requirement from `make bench`'s results."""
    b = entry["bench"]
    if results is None:
        return "not verified", "not verified: benchmark not run (make bench)", None
    found = results.get(b["name"])
    if not isinstance(found, dict):
        return "not verified", f"not verified: benchmark {b['name']} not run (make bench BENCH={b['name']})", None
    if "error" in found:
        return "not verified", f"not verified: benchmark {b['name']} failed ({found['error']})", None
    value = found
    for key in b["figure"].split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "not verified", f"not verified: benchmark {b['name']} gave no value for the figure it names", None
    (kind, limit), = [(k, b[k]) for k in LIMITS if k in b]
    ok = value <= limit if kind == "at_most" else value >= limit if kind == "at_least" else value < limit
    words = f"benchmark {b['name']}: {value:g}, required {LIMITS[kind]} {limit:g}"
    return ("verified", words, float(value)) if ok else ("not verified", f"not verified: {words}", float(value))


def verdicts(design: spec.Design, tests: list[dict], bench: dict | None) -> dict[str, dict]:
    by_req: dict[str, list[dict]] = {rid: [] for rid in design.requirements}
    for t in tests:
        for rid in t["requirements"]:
            if rid not in by_req:
                raise VerifyError(f"test {t['nodeid']} verifies {rid}, which design/requirements.yml does not define")
            by_req[rid].append(t)
    out = {}
    for rid, entry in design.requirements.items():
        mine = by_req[rid]
        names = [t["nodeid"] for t in mine]
        if entry["category"] == "performance":
            verdict, reason, figure = bench_verdict(entry, bench)
            out[rid] = {"verdict": verdict, "tests": names, "reason": reason,
                        **({"figure": figure} if figure is not None else {})}
            continue
        n = {o: sum(t["outcome"] == o for t in mine) for o in OUTCOMES}
        bad = [t["nodeid"] for t in mine if t["outcome"] in ("failed", "error")]
        if bad:
            verdict, reason = "not verified", f"not verified: {len(bad)} of its {len(mine)} test(s) failed or erred"
        elif n["passed"]:
            verdict, reason = "verified", f"{n['passed']} test(s) passed"
        elif mine:
            verdict, reason = "not verified", f"not verified: its {len(mine)} test(s) were skipped"
        else:
            verdict, reason = "not verified", "not verified: no test of this run verifies it"
        out[rid] = {"verdict": verdict, "tests": names, "reason": reason}
    return out


def revisions(root: Path = REPO_ROOT) -> dict:
    """The checkout's tags and its most recent commits, or why they are not available."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout
    try:
        if Path(git("rev-parse", "--show-toplevel").strip()).resolve() != root.resolve():
            raise subprocess.CalledProcessError(1, "git")
        fmt = "%H%x1f%cI%x1f%s"
        commits = [dict(zip(("commit", "date", "subject"), line.split("\x1f")))
                   for line in git("log", f"-{COMMITS}", f"--format={fmt}").splitlines() if line]
        tags = [dict(zip(("tag", "commit"), line.split("\x1f")))
                for line in git("tag", "--list", "--format=%(refname:short)%1f%(objectname)").splitlines() if line]
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
        total = int(git("rev-list", "--count", "HEAD").strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return {"available": False, "reason": "the code is not a git checkout (an installed copy): "
                                              "no revision history can be read"}
    return {"available": True, "commits": commits, "tags": tags, "dirty": dirty, "total_commits": total}


def read_bench(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VerifyError(f"{path}: not the JSON `make bench` writes ({e}); rerun make bench or remove it") from None
    if not isinstance(data, dict):
        raise VerifyError(f"{path}: expected a mapping of benchmark names to results")
    return data


def run(out: str | Path, params: dict | None = None, *, junit: Path | None = None, bench: Path = BENCH) -> list[dict]:
    out = Path(out)
    junit = junit or layout.junit(out)
    design = spec.load()
    tests = read_junit(junit)
    results = read_bench(bench)
    reqs = verdicts(design, tests, results)
    outcomes = {o: sum(t["outcome"] == o for t in tests) for o in OUTCOMES}
    verified = [r for r, v in reqs.items() if v["verdict"] == "verified"]
    data = {
        "junit": {"path": str(junit), "sha256": sha256_file(junit)},
        "bench": {"read": True, "path": str(bench), "sha256": sha256_file(bench)} if results is not None
        else {"read": False, "reason": f"no benchmark results at {bench} (make bench was not run)"},
        "tests": tests,
        "requirements": reqs,
        "counts": {
            "tests": len(tests), **{f"tests_{o}": n for o, n in outcomes.items()},
            "tests_verifying_requirements": sum(bool(t["requirements"]) for t in tests),
            "requirements": len(reqs), "requirements_verified": len(verified),
            "requirements_not_verified": len(reqs) - len(verified),
            "hazards": len(design.hazards), "anomalies": len(design.anomalies),
        },
        "revisions": revisions(),
    }
    deps = [junit] + ([bench] if results is not None else [])
    return [write_record(out, RECORD, data=data, deps=deps)]


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--junit", type=Path, help="the JUnit XML (default: OUT/verification/junit.xml)")
    parser.add_argument("--bench", type=Path, default=BENCH, help=f"make bench's results (default: {BENCH})")


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m design.verify", doc=__doc__, add_arguments=_arguments,
        call=lambda a: run(a.out, junit=a.junit, bench=a.bench),
        summary=lambda records, a: "verification: {requirements_verified} of {requirements} requirement(s) "
                                   "verified, {tests} test(s) ({tests_failed} failed, {tests_error} error(s))".format(
                                       **records[0]["data"]["counts"]))


if __name__ == "__main__":
    sys.exit(main())
