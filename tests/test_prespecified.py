"""Pre-specification proven by the trail: the plan lock precedes the test scores, the audit checks
it, and the submission says "pre-specified" only where the trail proves it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evidence import read_record
from evidence.audit import audit
from evidence.canonical import record_hash
from evidence.prespecified import check
from submission.__main__ import main as submission_main
from test_render_evidence import build_run

pytestmark = pytest.mark.verifies("SRS-014")

REPO = Path(__file__).resolve().parent.parent
CLAIM = "Performance goals pre-specified in the validation plan, locked by Test Engineer"
UNPROVEN = "the evidence trail does not show that they were fixed before the test split was scored"


def _render(out: Path) -> str:
    assert submission_main(["--out", str(out), "--params", str(REPO / "params.yaml"), "--no-pdf"]) == 0
    return (out / "submission" / "510k_submission.md").read_text()


def _forge(out: Path, record_id: str, change) -> None:
    """Edit a record as a forger would: change it, then recompute its sha256."""
    path = out / "evidence" / f"{record_id}.json"
    record = json.loads(path.read_text())
    change(record)
    record["sha256"] = record_hash(record)
    path.write_text(json.dumps(record))


@pytest.fixture(scope="module")
def proven(tmp_path_factory) -> Path:
    out = build_run(tmp_path_factory.mktemp("proven"))
    _render(out)
    return out


@pytest.fixture()
def copy(proven, tmp_path) -> Path:
    return Path(shutil.copytree(proven, tmp_path / "run"))


def test_submission_says_pre_specified_with_the_lock_it_was_proven_by(proven):
    text = (proven / "submission" / "510k_submission.md").read_text()
    lock = read_record(proven, "validation.plan_lock")
    scores = read_record(proven, "model.test_predictions")
    line = next(ln for ln in text.splitlines() if ln.startswith("Performance goals"))
    assert line.startswith(CLAIM) and UNPROVEN not in text
    assert f"`{lock['sha256']}`" in line and lock["created_utc"] in line and scores["created_utc"] in line
    assert check(proven) == [] and audit(proven, check_code=False, complete=False)[0] == []


def test_without_the_proof_the_submission_does_not_say_pre_specified(tmp_path):
    out = build_run(tmp_path / "run", prespecified=False)
    text = _render(out)
    assert "pre-specified in the validation plan" not in text and UNPROVEN in text
    assert check(out) == [
        f"record {rid}: field data.prespecified: expected the plan lock's proof found missing field"
        for rid in ("validation.test", "validation.acceptance")]


def test_a_plan_locked_again_over_test_scores_is_not_called_pre_specified(copy):
    from submission.plan import run as lock_plan

    lock_plan(copy, {}, by="Test Engineer", pdf=False)         # test scores exist: the lock says so
    lock = read_record(copy, "validation.plan_lock")
    assert lock["data"]["test_scores_present"] is True and "previous_lock_sha256" in lock["data"]
    assert check(copy)[0].startswith("record model.test_predictions: field deps.records[validation.plan_lock]")
    _forge(copy, "model.test_predictions", lambda r: r["deps"].update(records=[
        {"id": "validation.plan_lock", "sha256": lock["sha256"]}]) or r.update(created_utc=lock["created_utc"]))
    from evidence.prespecified import proof
    claim = proof(copy)
    assert claim["relocked_over_test_scores"] is True
    _forge(copy, "validation.acceptance", lambda r: r["data"].update(prespecified=claim))
    _forge(copy, "validation.test", lambda r: r["data"].update(prespecified=claim))
    text = _render(copy)
    assert "pre-specified in the validation plan" not in text
    assert "after the test split of this run had already been scored once" in text


def test_the_plan_cites_no_test_result(proven):
    plan = read_record(proven, "submission.plan")
    cited = {d["id"] for d in plan["deps"]["records"]}
    assert "validation.design" in cited and "validation.threshold" in cited
    assert not cited & {"validation.test", "validation.acceptance", "model.test_predictions", "validation.subgroups"}
    assert read_record(proven, "validation.plan_lock")["data"]["rendered_from"] == plan["deps"]["records"]


def test_audit_fails_when_the_scores_do_not_depend_on_the_lock(copy):
    lock = read_record(copy, "validation.plan_lock")["sha256"]
    _forge(copy, "model.test_predictions",
           lambda r: r["deps"].update(records=[d for d in r["deps"]["records"] if d["id"] != "validation.plan_lock"]))
    failures = check(copy)
    assert (f"record model.test_predictions: field deps.records[validation.plan_lock]: expected {lock} "
            "found no such dependency") in failures[0]
    assert any(f.startswith("record validation.test: field data.prespecified.test_scores_sha256") for f in failures)
    assert any("field deps.records[validation.plan_lock]" in f for f in audit(copy, check_code=False)[0])


def test_audit_fails_when_the_scores_are_older_than_the_lock(copy):
    _forge(copy, "model.test_predictions", lambda r: r.update(created_utc="2001-01-01T00:00:00Z"))
    failures = check(copy)
    assert any(f.startswith("record model.test_predictions: field created_utc: expected at or after ")
               and "found 2001-01-01T00:00:00Z (test scores existed before the plan was locked" in f for f in failures)


def test_audit_fails_when_a_plan_file_changed_after_the_lock(copy):
    (copy / "submission" / "validation_plan.md").write_text("# Clinical Validation Plan, edited\n")
    failures = check(copy)
    assert len(failures) == 1
    assert failures[0].startswith("record validation.plan_lock: plan file submission/validation_plan.md: expected ")


def test_the_lock_holds_the_change_control_plan_and_catches_it_changed_after_the_lock(copy):
    """pccp.plan is pre-specified: the lock hashes its record file, so criteria rewritten after the
    test split was scored (here a wider margin) fail the audit like an edited plan document."""
    from evidence.params import section
    from validation.pccp_plan import run as change_control

    lock = read_record(copy, "validation.plan_lock")
    assert "evidence/pccp.plan.json" in [f["path"] for f in lock["data"]["plan_files"]]
    assert check(copy) == []
    change_control(copy, {**section(REPO / "params.yaml", "pccp"), "margins": {"sensitivity": 0.2, "specificity": 0.2}})
    failures = check(copy)
    assert len(failures) == 1
    assert failures[0].startswith("record validation.plan_lock: plan file evidence/pccp.plan.json: expected ")
    assert "(the plan changed after it was locked)" in failures[0]


def test_a_change_control_plan_the_lock_does_not_list_fails_the_audit(copy):
    _forge(copy, "validation.plan_lock", lambda r: r["data"].update(
        plan_files=[f for f in r["data"]["plan_files"] if f["path"] != "evidence/pccp.plan.json"]))
    assert ("record validation.plan_lock: field data.plan_files: expected evidence/pccp.plan.json found not listed "
            "(record pccp.plan is pre-specified but not locked; lock the plan again (make plan) and rescore the test "
            "split (make submission))") in check(copy)


def test_audit_fails_on_a_claim_naming_another_lock(copy):
    _forge(copy, "validation.acceptance", lambda r: r["data"]["prespecified"].update(plan_lock_sha256="0" * 64))
    assert check(copy) == [f"record validation.acceptance: field data.prespecified.plan_lock_sha256: expected "
                           f"{read_record(copy, 'validation.plan_lock')['sha256']} found {'0' * 64}"]


def test_audit_fails_when_test_results_exist_without_a_lock(copy):
    (copy / "evidence" / "validation.plan_lock.json").unlink()
    failures = check(copy)
    assert failures[0].startswith("record validation.plan_lock: not found")


def test_submission_refuses_a_plan_that_no_longer_renders_as_locked(copy, capsys):
    record = read_record(copy, "workflow.dicom")
    _forge(copy, "workflow.dicom", lambda r: r["params"].update(min_age_years=21))
    assert record["params"]["min_age_years"] != 21
    assert submission_main(["--out", str(copy), "--params", str(REPO / "params.yaml"), "--no-pdf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: validation_plan.md: renders as sha256 ") and err.count("\n") == 1
    assert "lock the plan again (make plan)" in err


def test_plan_stage_records_who_locked_it(tmp_path, monkeypatch):
    from submission import plan

    assert plan.locked_by("A. Approver", {"locked_by": "B"}) == ("A. Approver", "--locked-by")
    assert plan.locked_by(None, {"locked_by": "B. Reviewer"}) == ("B. Reviewer", "params submission.locked_by")
    monkeypatch.setattr(plan.getpass, "getuser", lambda: "login")
    assert plan.locked_by(None, {})[0] == "login"
