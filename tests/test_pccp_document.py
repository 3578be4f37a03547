"""The PCCP document states the plan the record holds: the lower bound the decision reads (one
sentence per `pccp.decision_interval`) and the threshold criterion of each planned modification."""
from __future__ import annotations

from pathlib import Path

import pytest

from evidence.params import section
from submission.__main__ import run
from test_render_evidence import build_run
from validation.pccp_plan import run as change_control

REPO = Path(__file__).resolve().parent.parent
SENTENCES = {"both": "the lower of the per-image (Newcombe) and the patient-cluster (bootstrap) bounds",
             "newcombe": "per image (Newcombe), the patient-cluster bootstrap reported beside it",
             "cluster_bootstrap": "patient clusters (bootstrap), the per-image Newcombe bound reported beside it"}


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("pccp-doc") / "run")


@pytest.mark.parametrize("interval", sorted(SENTENCES))
def test_the_document_names_the_decision_interval_and_the_threshold_rule(out, interval):
    change_control(out, {**section(REPO / "params.yaml", "pccp"), "decision_interval": interval})
    run(out, {}, documents=["pccp"], pdf=False)
    text = (out / "submission" / "pccp.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| lower bound the decision reads |"))
    assert SENTENCES[interval] in row and all(s not in row for k, s in SENTENCES.items() if k != interval)
    assert "| threshold re-tuning (the model file unchanged): largest change of the threshold from the cleared one | 0.100 |" in text
    assert ("| re-training (a new model file): the threshold is chosen on the candidate's validation split by the "
            "cleared device's locked rule, target and bound |") in text
