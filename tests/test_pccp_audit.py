"""`python -m evidence audit` verifies a change control assessment's own trail
(`OUT/pccp/<name>/evidence`) the way it verifies a held-out folder's: its records, the files they
hash (the paired predictions, the modification report, the two runs' files), completeness."""
from __future__ import annotations

from pathlib import Path

import pytest

from audit_demo import copy_run, small_build
from evidence import layout
from evidence.audit import audit, run_dirs
from evidence.params import section
from validation import pccp
from validation.pccp_plan import criteria

pytestmark = pytest.mark.slow   # the shared small demo run (audit_demo.small_build)


@pytest.fixture(scope="module")
def assessed(tmp_path_factory) -> tuple[Path, Path]:
    """(cleared run holding one assessment, its folder): the shared small demo run judged against
    a copy of itself (the same model: every call agrees)."""
    out, params = small_build(tmp_path_factory)
    root = tmp_path_factory.mktemp("pccp-audit")
    cleared, candidate = copy_run(out, root / "cleared"), copy_run(out, root / "candidate")
    record = pccp.run(cleared, candidate, params)
    folder = layout.pccp(cleared, record["data"]["name"])
    return cleared, folder


def test_the_audit_walks_and_passes_an_assessment_folder(assessed):
    cleared, folder = assessed
    assert folder in run_dirs(cleared)
    report = (folder / "submission" / "pccp_report.md").read_text(encoding="utf-8")
    assert "The decision reads the lower of the two lower bounds;" in report            # decision_interval both
    assert "The candidate's model file is the cleared one: a re-tuning of the threshold." in report
    failures, n = audit(cleared, check_code=False)
    assert failures == []
    assert n > 1 + len(list(layout.evidence(cleared).glob("*.json"))) - 1   # the run's records and the folder's
    # the report passes the document check: every number traced, no empty cell (a stratum too small
    # to judge says so in each of its cells)
    from submission.check import check
    assert check(folder) == []
    assert "| not judged | not judged | not judged | not judged (" in report


def test_the_command_exits_3_naming_an_underpowered_criterion(tmp_path_factory, tmp_path, capsys):
    """The same model judged on the small demo's few test images: every call agrees, yet the
    criteria cannot be shown; the command says underpowered with the number of images, exit 3."""
    out, params = small_build(tmp_path_factory)
    cleared, candidate = copy_run(out, tmp_path / "cleared"), copy_run(out, tmp_path / "candidate")
    code = pccp.main(["--out", str(cleared), "--new", str(candidate), "--params", str(params), "--no-report"])
    printed = capsys.readouterr().out
    assert code == pccp.EXIT_OUTSIDE_PLAN
    line = next(ln for ln in printed.splitlines() if ln.startswith("failed: sensitivity non-inferiority"))
    needed = criteria(section(params, "pccp"))["sample_size"]["sensitivity"]
    assert "(underpowered: " in line and f" positives in the test set, fewer than the {needed} the plan needs" in line


def test_the_audit_fails_an_edited_assessment_naming_the_folder(assessed, tmp_path):
    cleared, folder = assessed
    copy = copy_run(cleared, tmp_path / "cleared")
    edited = layout.pccp(copy, folder.name) / pccp.PREDICTIONS
    edited.write_text(edited.read_text().replace(",1,0", ",0,1", 1))
    stray = layout.pccp(copy, folder.name) / "submission" / "notes.md"
    stray.write_text("not listed by any record\n")
    failures, _ = audit(copy, check_code=False)
    prefix = f"[{folder.name}] "
    assert any(f.startswith(prefix + f"record pccp.assessment: field outs[{pccp.PREDICTIONS}]: expected ") for f in failures)
    assert any(f.startswith(prefix + "file submission/notes.md: field outs: expected a file a record lists")
               for f in failures)
