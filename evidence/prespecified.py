"""Pre-specification proven by the trail: the validation plan is locked before test scores exist.

Record `validation.plan_lock` (written by the plan stage, `python -m submission.plan`, right after
`submission.plan`) holds the sha256 of every plan file (the validation plan's documents and the
record files of `LOCKED_RECORDS`, the other pre-specified criteria: the change control plan's
acceptance criteria, `pccp.plan`), the record the plan was rendered from,
the `validate` parameters it fixes (those of `validation.design`), `locked_utc` and `locked_by`.
The trail proves that the analysis was pre-specified when:

- the plan files still match the lock's hashes;
- the record of the test-split scores (`model.test_predictions`) depends on the lock, its stage
  declares the lock among its needs, and it was created at or after the lock (`created_utc`);
- each evaluate record that claims it (`data.prespecified`) names this lock and these scores.

`write_lock` writes the lock; `require_lock` and `proof` are what a stage runs before it writes
test-split scores or results (they raise `NotPrespecified`); `check` gives the audit's failure lines.
"""
from __future__ import annotations

import time
from pathlib import Path

from . import layout
from .canonical import sha256_file
from .errors import EvidenceError, MissingRecord
from .provenance import resolve_run_path
from .record import read_record, write_record
from .stages import PLAN_LOCKED_RECORDS, stage_of, upstream

LOCK, PLAN, DESIGN, SCORES = "validation.plan_lock", "submission.plan", "validation.design", "model.test_predictions"
#: The evaluate records whose `data.prespecified` lets the documents say "pre-specified".
CLAIMS = ("validation.test", "validation.acceptance")
RELOCK = "lock the plan again (make plan) and rescore the test split (make submission)"
#: Records of pre-specified criteria that the lock hashes beside the plan documents (their files, as
#: plan files): a criterion rewritten after the lock is then caught like an edited plan document.
LOCKED_RECORDS = PLAN_LOCKED_RECORDS


class NotPrespecified(EvidenceError):
    """The trail does not prove that the plan was locked before the test split was scored."""


def write_lock(out: str | Path, *, params: dict, locked_by: str, locked_by_source: str,
               sign: dict | None = None) -> dict:
    """Write `validation.plan_lock` from the `submission.plan` record (its outs are the plan files)
    and the `validation.design` record (the parameters the plan fixes), signed as it is written with
    the `sign` configuration (params `submission.signing`)."""
    out = Path(out)
    plan, design = read_record(out, PLAN), read_record(out, DESIGN)
    files = [{"path": o["path"], "sha256": o["sha256"], "size": o["size"]} for o in plan["outs"]]
    if not files:
        raise NotPrespecified(f"record {PLAN}: lists no plan file in its outs; rerun `python -m submission.plan`")
    for rid in LOCKED_RECORDS:
        path = layout.record(out, rid)
        if not path.is_file():
            raise NotPrespecified(f"record {rid}: not found under {layout.evidence(out)}; the plan lock hashes it "
                                  f"with the plan (run its stage {stage_of(rid).name} first, or make plan)")
        files.append({"path": layout.record("", rid).as_posix(), "sha256": sha256_file(path),
                      "size": path.stat().st_size})
    previous = read_record(out, LOCK)["sha256"] if layout.record(out, LOCK).is_file() else None
    data = {
        "plan_record": PLAN, "plan_record_sha256": plan["sha256"], "plan_files": files,
        "rendered_from": plan["deps"]["records"],
        "design_record": DESIGN, "design_record_sha256": design["sha256"],
        "params_section": "validate", "params": design["params"],
        "acceptance_criteria": design["data"]["acceptance_criteria"],
        "locked_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "locked_by": locked_by, "locked_by_source": locked_by_source,
        "test_scores_present": layout.predictions(out, "test").is_file(),
    }
    if previous:
        data["previous_lock_sha256"] = previous
    return write_record(out, LOCK, data=data, params=params, dep_records=[PLAN, DESIGN],
                        deps=[resolve_run_path(f["path"], out) for f in files], sign=sign)


def plan_file_failures(out: str | Path, lock: dict) -> list[str]:
    """One line per plan file whose content differs from the lock's hash."""
    failures = []
    for entry in lock["data"]["plan_files"]:
        path = resolve_run_path(entry["path"], out)
        found = sha256_file(path) if path.is_file() else "missing file"
        if found != entry["sha256"]:
            failures.append(f"record {LOCK}: plan file {entry['path']}: expected {entry['sha256']} found {found} "
                            "(the plan changed after it was locked)")
    return failures


def unlocked_records(out: str | Path, lock: dict) -> list[str]:
    """One line per record of LOCKED_RECORDS that the run holds but the lock does not list (written
    after the plan was locked, or under a lock from before it was pre-specified)."""
    listed = {entry["path"] for entry in lock["data"]["plan_files"]}
    return [f"record {LOCK}: field data.plan_files: expected {layout.record('', rid).as_posix()} found not listed "
            f"(record {rid} is pre-specified but not locked; {RELOCK})"
            for rid in LOCKED_RECORDS
            if layout.record(out, rid).is_file() and layout.record("", rid).as_posix() not in listed]


def score_failures(scores: dict, lock: dict) -> list[str]:
    """Does the test-score record depend on the lock (record and stage) and come after it?"""
    failures = []
    dep = next((d["sha256"] for d in scores["deps"]["records"] if d["id"] == LOCK), "no such dependency")
    if dep != lock["sha256"]:
        failures.append(f"record {SCORES}: field deps.records[{LOCK}]: expected {lock['sha256']} found {dep} "
                        f"(the test split was not scored under this plan lock; {RELOCK})")
    stage = stage_of(SCORES)
    if LOCK not in upstream(stage):
        failures.append(f"stage {stage.name}: field needs: expected {LOCK} found {', '.join(stage.needs)} "
                        "(declare it in evidence/stages.py)")
    if scores["created_utc"] < lock["created_utc"]:
        failures.append(f"record {SCORES}: field created_utc: expected at or after {lock['created_utc']} "
                        f"(the plan lock) found {scores['created_utc']} (test scores existed before the plan "
                        f"was locked; {RELOCK})")
    return failures


def require_lock(out: str | Path) -> dict:
    """The lock, its plan files re-hashed; raises NotPrespecified naming the fix."""
    try:
        lock = read_record(out, LOCK)
    except MissingRecord:
        raise NotPrespecified(
            f"record {LOCK}: not found under {layout.evidence(out)}; the test split is scored and evaluated "
            "only after the validation plan is locked: run `make plan` (python -m submission.plan)") from None
    failures = plan_file_failures(out, lock)
    if failures:
        raise NotPrespecified(f"{failures[0]}: restore it, or {RELOCK}")
    return lock


def proof(out: str | Path) -> dict:
    """What an evaluate record carries as `data.prespecified`: the lock and the test scores it
    preceded. Raises NotPrespecified when the trail does not prove it."""
    lock = require_lock(out)
    scores = read_record(out, SCORES)
    failures = score_failures(scores, lock)
    if failures:
        raise NotPrespecified(failures[0])
    return {"plan_lock_sha256": lock["sha256"], "plan_locked_utc": lock["created_utc"],
            "locked_by": lock["data"]["locked_by"], "plan_record_sha256": lock["data"]["plan_record_sha256"],
            "test_scores_sha256": scores["sha256"], "test_scores_created_utc": scores["created_utc"],
            "relocked_over_test_scores": bool(lock["data"]["test_scores_present"]),
            "statement": "the validation plan was locked before the test split was scored"}


def check(out: str | Path) -> list[str]:
    """The audit's lines: empty when the run holds no lock, test score or claim, or when the trail
    proves each claim."""
    out = Path(out)
    present = [rid for rid in (LOCK, SCORES, *CLAIMS) if layout.record(out, rid).is_file()]
    if not present:
        return []
    failures: list[str] = []
    records = {}
    for rid in dict.fromkeys((LOCK, *present)):
        try:
            records[rid] = read_record(out, rid)
        except EvidenceError as e:
            failures.append(f"{e} (pre-specification cannot be shown)")
    lock = records.get(LOCK)
    if lock is None:
        return failures
    failures += plan_file_failures(out, lock)
    failures += unlocked_records(out, lock)
    scores = records.get(SCORES)
    if scores is not None:
        failures += score_failures(scores, lock)
    for rid in CLAIMS:
        if rid not in records:
            continue
        claim = records[rid]["data"].get("prespecified")
        expected = {"plan_lock_sha256": lock["sha256"],
                    "test_scores_sha256": scores["sha256"] if scores else "a model.test_predictions record"}
        if not isinstance(claim, dict):
            failures.append(f"record {rid}: field data.prespecified: expected the plan lock's proof found "
                            f"{'missing field' if claim is None else repr(claim)}")
            continue
        for key, value in expected.items():
            if claim.get(key) != value:
                failures.append(f"record {rid}: field data.prespecified.{key}: expected {value} "
                                f"found {claim.get(key)}")
    return failures
