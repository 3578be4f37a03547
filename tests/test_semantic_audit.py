"""Semantic audit: a record's own summaries are recomputed from its files, and its params compared
with the run's params stamp; a forger who rehashes everything is still caught."""
from __future__ import annotations

import csv
import io
import json

import pytest

from audit_demo import SCORES, audit, copy_run, make, rehash, small_build
from evidence import layout, semantic

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return small_build(tmp_path_factory)


def fabricate(run, split: str) -> None:
    """Score 0.97 for every positive and 0.03 for every negative."""
    path = layout.predictions(run, split)
    rows = list(csv.DictReader(path.open(newline="")))
    for row in rows:
        row["score"] = "0.97" if row["label"] == "1" else "0.03"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def test_the_honest_run_has_no_semantic_failure(demo):
    out, _ = demo
    records = {p.stem: json.loads(p.read_text()) for p in layout.evidence(out).glob("*.json")}
    assert semantic.check(out, records) == []


def test_fabricated_predictions_rehashed_and_rerun_fail_on_the_score_summary(demo, tmp_path):
    out, params = demo
    run = copy_run(out, tmp_path / "run")
    for split in layout.PREDICTED_SPLITS:
        fabricate(run, split)
    for record_id in SCORES.values():
        rehash(run, record_id)
    make("submission", f"OUT={run}", f"PARAMS={params}")   # the documents now report AUC 1.000
    assert json.loads(layout.record(run, "validation.test").read_text())["data"]["metrics"]["auc"]
    proc = audit(run)
    assert proc.returncode != 0
    assert f"FAIL record {SCORES['val']}: field data.val.score_mean: expected " in proc.stdout
    # the changed val record reran the plan lock, so the test split was scored again, honestly
    scores = {row["score"] for row in csv.DictReader(layout.predictions(run, "test").open(newline=""))}
    assert not scores <= {"0.97", "0.03"}


def test_a_rehashed_split_summary_fails(demo, tmp_path):
    out, _ = demo
    run = copy_run(out, tmp_path / "run")
    found = rehash(run, "split.patients", lambda r: r["data"]["splits"]["test"].update(images=999))
    assert found["data"]["splits"]["test"]["images"] == 999
    proc = audit(run)
    assert proc.returncode != 0
    assert "FAIL record split.patients: field data.splits.test.images: expected " in proc.stdout
    assert "found 999" in proc.stdout


def test_a_rehashed_cohort_count_and_workflow_tally_fail(demo, tmp_path):
    out, _ = demo
    run = copy_run(out, tmp_path / "run")
    rehash(run, "cohort.manifest", lambda r: r["data"]["counts"].update(pneumonia_images=1))
    rehash(run, "workflow.dicom", lambda r: r["data"]["counts"].update(accepted=r["data"]["counts"]["accepted"] + 1))
    proc = audit(run)
    assert "FAIL record cohort.manifest: field data.counts.pneumonia_images: expected " in proc.stdout
    assert "FAIL record workflow.dicom: field data.counts.accepted: expected " in proc.stdout


def test_record_params_that_differ_from_the_params_stamp_fail(demo, tmp_path):
    out, _ = demo
    run = copy_run(out, tmp_path / "run")
    stamp = json.loads(layout.params_stamp(run, "train").read_text())
    rehash(run, "training.run", lambda r: r["params"].update(epochs=stamp["epochs"] + 10))
    proc = audit(run)
    assert proc.returncode != 0
    assert (f"FAIL record training.run: field params.epochs: expected {stamp['epochs']} (params/train.json) "
            f"found {stamp['epochs'] + 10}") in proc.stdout


def test_heldout_rejection_summary_is_recomputed_from_the_files_list(tmp_path):
    """`heldout.intake` `rejection`: counts by status, class and reason category from its `files`."""
    import numpy as np

    from evidence import read_record, write_record
    from validation_runs import heldout_frame, make_heldout

    hout = make_heldout(tmp_path / "run", heldout_frame(np.random.default_rng(2)))
    records = {rid: read_record(hout, rid) for rid in ("heldout.intake", "heldout.metrics")}
    assert semantic.check(hout, records, tmp_path / "run") == []
    by_reason = records["heldout.intake"]["data"]["rejection"]["by_reason"]
    assert by_reason["view"]["n_files"] == 4 and by_reason["age"]["n_files"] == 2   # frame: 6 rejected, 4 kinds

    data = json.loads(json.dumps(records["heldout.intake"]["data"]))
    data["rejection"]["by_reason"]["age"]["n_files"] = 5
    data["rejection"]["by_label"]["positives"]["rate"]["not_analyzed"]["estimate"] = 0.0
    data["files"][0]["reason_categories"] = []          # the first file is rejected (view)
    rec = write_record(hout, "heldout.intake", data=data, synthetic=True)
    lines = semantic.check_rejection({"heldout.intake": rec})
    assert "record heldout.intake: field data.rejection.by_reason.age.n_files: expected 2 found 5" in lines
    assert "record heldout.intake: field data.rejection.by_reason.view.n_files: expected 3 found 4" in lines
    assert any(x.startswith("record heldout.intake: field data.rejection.by_label.positives.rate.not_analyzed."
                            "estimate: expected ") and x.endswith(" found 0.0") for x in lines)
    assert f"record heldout.intake: field data.files[{data['files'][0]['file']}].reason_categories: expected at " \
           "least one category for a file not analyzed found none" in lines
    assert len(lines) == 5          # the view rate too
