"""The machine-readable model card: `OUT/submission/model_card.json`.

Its fields follow the example model card of FDA's January 2025 draft guidance on AI-enabled device
software functions (device information, regulatory status, description, performance and limitations,
risk management and lifecycle, development data). The card is built from the evidence records and
the facts files only: every value is a leaf `{"value", "source", "id", "pointer", "sha256"}` where
`source` is `record` (`id` a record id, `pointer` the JSON pointer in the record, `sha256` the
record's) or `facts` (`id` the facts file, `pointer` the JSON pointer in it, `sha256` the file's).
The card is checked against `submission/model_card.schema.json` before it is written (atomically);
record `submission.documents` lists it among its outputs, so its sha256 is in the trail.

The document `model_card` (templates/model_card.md.j2) prints the same fields for a reader.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from evidence import Store, atomic, layout
from evidence.errors import EvidenceError, ToolkitError

from .render import load_facts

SCHEMA = Path(__file__).resolve().parent / "model_card.schema.json"
FILE = "model_card.json"
FORMAT = "model-card/1"
#: The subgroup variables the card reports, in order (record validation.subgroups `groups`).
SUBGROUP_VARIABLES = ("sex", "age_band", "view")
#: The per-split characteristics of record eda.dataset the card reports for each data partition.
SPLIT_FIELDS = ("images", "patients", "pneumonia_images", "prevalence", "median_age_years", "percent_female",
                "percent_ap")


class ModelCardError(ToolkitError):
    """The model card cannot be built from the records, or does not match its schema."""


def _pointer(parts: list[str]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class _Builder:
    def __init__(self, out: Path):
        self.store = Store(out)
        self.facts = load_facts()

    def ev(self, record_id: str, path: str) -> dict:
        """A record value as a leaf; `path` is dotted (relative to `data`) or a JSON pointer."""
        try:
            value, pointer, sha = self.store.lookup(record_id, path)
        except EvidenceError as e:
            raise ModelCardError(f"model card: {e} (the card needs {record_id} {path}; rerun the stage that "
                                 "writes it)") from None
        return {"value": value, "source": "record", "id": record_id, "pointer": pointer, "sha256": sha}

    def has(self, record_id: str, path: str) -> bool:
        try:
            self.store.lookup(record_id, path)
            return True
        except EvidenceError:
            return False

    def fact(self, dotted: str) -> dict:
        """A facts-file value as a leaf: 'device.name' is key `name` of submission/data/device.yml."""
        name, _, path = dotted.partition(".")
        if name not in self.facts:
            raise ModelCardError(f"model card: no facts file submission/data/{name}.yml (fact {dotted!r})")
        node, rel, sha = self.facts[name]
        parts = [p for p in path.split(".") if p]
        for key in parts:
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, dict) and key in node:
                node = node[key]
            else:
                raise ModelCardError(f"model card: submission/data/{name}.yml has no {path!r} (fact {dotted!r})")
        return {"value": node, "source": "facts", "id": rel, "pointer": _pointer(parts), "sha256": sha}

    def fact_list(self, dotted: str) -> list[dict]:
        return [self.fact(f"{dotted}.{i}") for i in range(len(self.fact(dotted)["value"]))]

    def split(self, name: str) -> dict:
        return {f: self.ev("eda.dataset", f"splits.{name}.{f}") for f in SPLIT_FIELDS}

    def subgroups(self) -> list[dict]:
        rows = []
        groups = self.ev("validation.subgroups", "groups")["value"]
        for var in SUBGROUP_VARIABLES:
            for key in groups.get(var, {}):
                base = f"groups.{var}.{key}"
                rows.append({"variable": var,
                             "stratum": self.ev("validation.subgroups", f"{base}.label"),
                             "images": self.ev("validation.subgroups", f"{base}.n"),
                             "positives": self.ev("validation.subgroups", f"{base}.n_positive"),
                             "negatives": self.ev("validation.subgroups", f"{base}.n_negative"),
                             "sensitivity": self.ev("validation.subgroups", f"{base}.sensitivity"),
                             "specificity": self.ev("validation.subgroups", f"{base}.specificity")})
        return rows

    def goals(self) -> list[dict]:
        criteria = self.ev("validation.acceptance", "criteria")["value"]
        return [{"statement": self.ev("validation.acceptance", f"criteria.{i}.statement"),
                 "primary": self.ev("validation.acceptance", f"criteria.{i}.primary"),
                 "observed": self.ev("validation.acceptance", f"criteria.{i}.observed"),
                 "met": self.ev("validation.acceptance", f"criteria.{i}.passed")}
                for i in range(len(criteria))]


def build(out: str | Path) -> dict:
    """The model card of the run in `out`, from its records and the facts files (not yet validated)."""
    b = _Builder(Path(out))
    ev, fact = b.ev, b.fact
    test = "validation.test"
    card = {
        "format": FORMAT,
        "guidance": fact("model_card.guidance_basis"),
        "device_information": {
            "name": fact("device.name"),
            "version": fact("device.version"),
            "manufacturer": fact("device.manufacturer"),
            "model_trained_utc": ev("training.run", "/created_utc"),
            "plan_locked_utc": ev("validation.plan_lock", "locked_utc"),
            "tested_utc": ev(test, "/created_utc"),
            "model_type": fact("model_card.model_type"),
            "architecture": ev("training.run", "architecture"),
            "initial_weights": ev("training.run", "weights"),
            "parameters": ev("training.run", "parameters.total"),
            "input_shape": ev("training.run", "input_shape"),
        },
        "regulatory_status": {
            "status": fact("model_card.regulatory_status"),
            "submission_type": fact("device.submission_type"),
            "regulation_number": fact("device.regulation_number"),
            "regulation_name": fact("device.regulation_name"),
            "device_class": fact("device.device_class"),
            "product_code": fact("device.product_code"),
        },
        "description": {
            "users": fact("device.user"),
            "intended_use": fact("device.intended_use"),
            "indications_for_use": fact("device.indications_for_use"),
            "contraindications": fact("device.contraindications"),
            "instructions": fact("model_card.instructions"),
            "benefits": fact("model_card.benefits"),
            "limitations": b.fact_list("model_card.limitations"),
            "workflow_phase": fact("device.workflow_role"),
            "inputs": fact("device.inputs"),
            "input_checks": {
                "modalities": ev("workflow.dicom", "/params/allowed_modalities"),
                "body_parts": ev("workflow.dicom", "/params/allowed_body_parts"),
                "views": ev("workflow.dicom", "/params/allowed_views"),
                "min_age_years": ev("workflow.dicom", "/params/min_age_years"),
                "max_age_years": ev("workflow.dicom", "/params/max_age_years"),
            },
            "outputs": fact("device.outputs"),
            "threshold": ev("validation.threshold", "threshold"),
            "threshold_rule": ev("validation.threshold", "rule"),
            "automation": fact("model_card.automation"),
        },
        "performance": {
            "test_data": {
                "images": ev(test, "counts.n"),
                "patients": ev(test, "counts.n_patients"),
                "positives": ev(test, "counts.positives"),
                "negatives": ev(test, "counts.negatives"),
                "prevalence": ev(test, "counts.prevalence"),
                "median_age_years": ev("eda.dataset", "splits.test.median_age_years"),
                "percent_female": ev("eda.dataset", "splits.test.percent_female"),
                "percent_ap": ev("eda.dataset", "splits.test.percent_ap"),
                "synthetic": ev(test, "/synthetic"),
            },
            "sensitivity": ev(test, "metrics.sensitivity.wilson"),
            "specificity": ev(test, "metrics.specificity.wilson"),
            "auc": ev(test, "metrics.auc.delong"),
            "predictive_values": ev(test, "ppv_npv_at_prevalence"),
            "performance_goals": b.goals(),
            "all_primary_goals_met": ev("validation.acceptance", "all_passed"),
            "subgroups": b.subgroups(),
            "heterogeneity": ev("validation.subgroups", "heterogeneity_statement"),
            "calibration": {"brier_score": ev("validation.calibration", "brier_score"),
                            "expected_calibration_error": ev("validation.calibration", "ece")},
            "time_to_notification_median_seconds": ev("workflow.latency", "median_seconds"),
            "biases": fact("model_card.biases"),
            "failure_modes": fact("model_card.failure_modes"),
            "reproducibility": fact("model_card.reproducibility"),
        },
        "risk_management_and_lifecycle": {
            "deployment": fact("model_card.deployment"),
            "monitoring": fact("model_card.monitoring"),
            "monitoring_plan_exists": fact("model_card.monitoring_plan_exists"),
            "updates": fact("model_card.updates"),
            "change_management": fact("model_card.change_management"),
            "pccp_exists": fact("model_card.pccp_exists"),
        },
        "development_data": {
            "source": ev("cohort.manifest", "source.kind"),
            "synthetic": ev("cohort.manifest", "/synthetic"),
            "split_method": ev("split.patients", "method"),
            "patients_in_more_than_one_split": ev("split.patients", "leakage.patients_in_more_than_one_split"),
            "training": b.split("train"),
            "tuning": b.split("val"),
            "training_seed": ev("training.run", "seed"),
            "reference_standard": {
                "method": ev("eda.ground_truth", "labelling.method"),
                "description": ev("eda.ground_truth", "labelling.description"),
                "label_quality": ev("eda.ground_truth", "label_quality"),
            },
        },
    }
    return card


def schema() -> dict:
    return json.loads(SCHEMA.read_text(encoding="utf-8"))


def validate(card: dict) -> None:
    """Raise ModelCardError naming the first field that does not match the schema, and the fix."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(card), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        e = errors[0]
        where = _pointer([str(p) for p in e.absolute_path]) or "/"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ModelCardError(f"model card at {where}: {e.message}{more}; the card must match "
                             f"{SCHEMA.name} (fix submission/model_card.py or the records it reads)")


def leaves(node: Any, path: str = "") -> list[tuple[str, dict]]:
    """Every traced value of a card: (where in the card, the leaf)."""
    if isinstance(node, dict) and {"value", "source", "id", "pointer", "sha256"} <= set(node):
        return [(path or "/", node)]
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in leaves(v, f"{path}/{k}")]
    if isinstance(node, list):
        return [x for i, v in enumerate(node) for x in leaves(v, f"{path}/{i}")]
    return []


def write(out: str | Path, folder: str | Path | None = None) -> Path:
    """Build, validate and write OUT/submission/model_card.json (atomically); return its path."""
    card = build(out)
    validate(card)
    folder = Path(folder) if folder is not None else layout.submission(Path(out))
    text = json.dumps(card, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic.write_text(folder / FILE, text)
