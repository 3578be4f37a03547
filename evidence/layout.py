"""The run folder (`OUT`): every path a stage reads or writes below it, declared once.

ARCHITECTURE.md, "Run folder", lists the same paths; `tests/test_layout.py` ties the two.
A held-out run folder (`heldout(out, name)`, `name` being the set's folder name and the first 12
hex of its content hash, `validation.heldout.folder_name`) has the same layout for its own
evidence (and log), figures and submission.
"""
from __future__ import annotations

from pathlib import Path

PREDICTED_SPLITS = ("val", "test")
TRACEABILITY = "traceability.json"  # in a submission folder
SBOM = "sbom.cdx.json"  # in a submission folder
#: in a held-out folder (`heldout(out, name)`): one row per labelled file (`validation.heldout`),
#: recomputed by the audit (`evidence.recompute`); its columns, in order, below
HELDOUT_PREDICTIONS = "predictions.csv"
HELDOUT_PREDICTION_COLUMNS = ("file", "patient_id", "label", "status", "reasons", "score", "flagged")
#: in a monitoring folder (`monitoring(out, name)`): one row per file of the batch (`validation.monitor`)
MONITORING_BATCH = "batch.csv"


def params_stamp(out: str | Path, section: str) -> Path:
    return Path(out) / "params" / f"{section}.json"


def stage_rules(out: str | Path) -> Path:
    return Path(out) / ".make" / "stages.mk"


def data_source(out: str | Path) -> Path:
    return Path(out) / "cohort" / "source.txt"


def input_stamp(out: str | Path) -> Path:
    return Path(out) / "cohort" / "inputs.json"


def stage_log(out: str | Path, stage: str) -> Path:
    return Path(out) / "logs" / f"{stage}.log"


def demo(out: str | Path) -> Path:
    return Path(out) / "demo"


def manifest(out: str | Path) -> Path:
    return Path(out) / "cohort" / "manifest.csv"


def splits(out: str | Path) -> Path:
    return Path(out) / "cohort" / "splits.csv"


def evidence(out: str | Path) -> Path:
    return Path(out) / "evidence"


def record(out: str | Path, record_id: str) -> Path:
    return evidence(out) / f"{record_id}.json"


def evidence_log(out: str | Path) -> Path:
    return evidence(out) / "log.jsonl"


def signatures(out: str | Path) -> Path:
    return Path(out) / "signatures"


def signature_ledger(out: str | Path) -> Path:
    return signatures(out) / "signatures.jsonl"


def run_lock(out: str | Path) -> Path:
    return Path(out) / ".lock"


def figures(out: str | Path) -> Path:
    return Path(out) / "figures"


def models(out: str | Path) -> Path:
    return Path(out) / "models"


def model_file(out: str | Path) -> Path:
    return models(out) / "model.keras"


def preprocessing_spec(out: str | Path) -> Path:
    return models(out) / "preprocessing.json"


def predictions(out: str | Path, split: str) -> Path:
    if split not in PREDICTED_SPLITS:
        raise ValueError(f"predictions exist for the splits {', '.join(PREDICTED_SPLITS)}, not {split!r}")
    return Path(out) / "predictions" / f"{split}.csv"


def workflow(out: str | Path) -> Path:
    return Path(out) / "workflow"


def workflow_dicom(out: str | Path) -> Path:
    return workflow(out) / "dicom"


def inference(out: str | Path) -> Path:
    """Clinician images and index.html of `make infer` (outside the evidence: not a stage's output)."""
    return Path(out) / "infer"


def node(out: str | Path) -> Path:
    """The DICOM node's state (model.node_queue): queue, journal, outbox, notifications."""
    return Path(out) / "node"


def node_notifications(out: str | Path) -> Path:
    return node(out) / "notifications.jsonl"


def submission(out: str | Path) -> Path:
    return Path(out) / "submission"


def traceability(out: str | Path) -> Path:
    return submission(out) / TRACEABILITY


def sbom(out: str | Path) -> Path:
    return submission(out) / SBOM


def verification(out: str | Path) -> Path:
    """The test run of `make verify` (not a stage's output; hashed by record verification.tests)."""
    return Path(out) / "verification"


def junit(out: str | Path) -> Path:
    return verification(out) / "junit.xml"


def heldout_root(out: str | Path) -> Path:
    return Path(out) / "heldout"


def heldout(out: str | Path, name: str) -> Path:
    return heldout_root(out) / name


def heldout_shards(out: str | Path, name: str) -> Path:
    """The shard files of a sharded held-out run (validation.shards), removed by its merge."""
    return heldout_root(out) / ".shards" / name


def inference_shards(out: str | Path) -> Path:
    """The shard files of `python -m model.infer --shard K/N` (model.sharding), removed by its merge."""
    return inference(out) / ".shards"


def monitoring_root(out: str | Path) -> Path:
    return Path(out) / "monitoring"


def monitoring(out: str | Path, name: str) -> Path:
    """A monitored production batch (validation.monitor): its own evidence, batch.csv and report."""
    return monitoring_root(out) / name


def pccp_root(out: str | Path) -> Path:
    return Path(out) / "pccp"


def pccp(out: str | Path, name: str) -> Path:
    """A candidate's assessment under the change control plan (validation.pccp): its own evidence,
    predictions.csv and report, as a held-out folder has."""
    return pccp_root(out) / name



#: The folders of the on-demand assessments inside a run, by the stage that writes them: each
#: `<root>/<name>/` has a run folder's layout for its own evidence, which the audit verifies
#: (`evidence.audit.run_dirs`, `evidence.completeness.folder_stages`).
ASSESSMENT_ROOTS = {"validation.heldout": heldout_root, "validation.pccp": pccp_root,
                    "validation.monitor": monitoring_root}
