"""Replay: the stored model re-scores the test images and must reproduce predictions/test.csv."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from audit_demo import REPO, SCORES, audit, copy_run, make, rehash, small_build
from evidence import layout
from model import replay

pytestmark = [pytest.mark.slow, pytest.mark.verifies("SRS-039")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return small_build(tmp_path_factory)


def rewrite_scores(run, split: str, score) -> float:
    """Replace each row's score with score(row); return the new mean."""
    path = layout.predictions(run, split)
    rows = list(csv.DictReader(path.open(newline="")))
    for row in rows:
        row["score"] = f"{score(row):.8g}"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())
    return sum(float(r["score"]) for r in rows) / len(rows)


def run_replay(out, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model.replay", "--out", str(out), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_replay_of_the_honest_run_is_within_tolerance(demo):
    out, _ = demo
    proc = run_replay(out, "--all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    n = json.loads(layout.record(out, SCORES["test"]).read_text())["data"]["test"]["n_images"]
    assert f"replay: OK, {n} of {n} test images re-scored" in proc.stdout


def test_fabricated_predictions_with_consistent_summaries_fail_only_on_replay(demo, tmp_path):
    """The careful forger: after the plan lock, test scores 0.97/0.03, the record's summaries,
    hashes and log entry made consistent, `make submission` rerun (the documents now report AUC
    1.000); every hash and recomputation agrees, the model does not."""
    out, params = demo
    run = copy_run(out, tmp_path / "run")
    mean = rewrite_scores(run, "test", lambda r: 0.97 if r["label"] == "1" else 0.03)
    rehash(run, SCORES["test"], lambda r: r["data"]["test"].update(score_mean=mean))
    proc = make("submission", f"OUT={run}", f"PARAMS={params}")
    assert "[model.score_test]" not in proc.stdout, "the forged scores were not meant to be rescored"
    assert json.loads(layout.record(run, "validation.test").read_text())["data"]["metrics"]["auc"]["delong"]["estimate"] == 1.0
    proc = audit(run)
    assert proc.returncode != 0
    assert "audit: OK" in proc.stdout, "the forgery is meant to pass the evidence audit"
    lines = [x for x in proc.stdout.splitlines() if x.startswith("FAIL image ")]
    assert lines and all("field predictions/test.csv[score]: expected " in x for x in lines)


def test_one_changed_score_is_named(demo, tmp_path):
    out, _ = demo
    run = copy_run(out, tmp_path / "run")
    rows = list(csv.DictReader(layout.predictions(run, "test").open(newline="")))
    target = rows[0]["image_id"]
    mean = rewrite_scores(run, "test", lambda r: float(r["score"]) + (1e-3 if r["image_id"] == target else 0.0))
    rehash(run, SCORES["test"], lambda r: r["data"]["test"].update(score_mean=mean))
    proc = run_replay(run, "--all")
    assert proc.returncode == 1
    assert [x.split(":")[0] for x in proc.stdout.splitlines()] == [f"FAIL image {target}"]


def test_a_relabelled_or_dropped_row_is_named(demo, tmp_path):
    out, _ = demo
    run = copy_run(out, tmp_path / "run")
    path = layout.predictions(run, "test")
    lines = path.read_text().splitlines()
    dropped = lines.pop(1).split(",")[0]
    first = lines[1].split(",")
    first[2] = "0" if first[2] == "1" else "1"
    lines[1] = ",".join(first)
    path.write_text("\n".join(lines) + "\n")
    proc = run_replay(run, "--sample", "5")
    assert proc.returncode == 1
    assert f"FAIL image {dropped}: field predictions/test.csv: expected a score found missing row" in proc.stdout
    assert f"FAIL image {first[0]}: field predictions/test.csv[label]: expected " in proc.stdout


@pytest.mark.verifies("SRS-017")
def test_a_changed_model_file_is_refused_before_scoring(demo, tmp_path):
    out, _ = demo
    run = copy_run(out, tmp_path / "run")
    with open(layout.model_file(run), "ab") as f:
        f.write(b"\0")
    proc = run_replay(run)
    assert proc.returncode == 2
    assert "does not match the sha256 recorded by training.run" in proc.stderr


def test_the_tolerance_is_far_below_a_reported_score_change():
    assert 0 < replay.TOLERANCE <= 1e-5 and replay.SAMPLE >= 200
