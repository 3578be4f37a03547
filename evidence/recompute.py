"""Independent recomputation of the reported test metrics (used by `python -m evidence audit`).

Re-derives the confusion counts, sensitivity, specificity, PPV, NPV, accuracy, F1 and AUC from
`OUT/predictions/test.csv` at the threshold locked in `validation.threshold`, with plain csv and
numpy (no code of the `validation` package), and compares them with `validation.test`.
An image is positive when score >= threshold. Absent records or files: nothing to check.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from . import layout
from .record import record_path
from .store import resolve_pointer

TOLERANCE = 1e-9


def _load(out_dir: Path, record_id: str):
    path = record_path(out_dir, record_id)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # reported by the audit's own validation


def _read_test(path: Path) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            labels.append(int(float(row["label"])))
            scores.append(float(row["score"]))
    return np.array(labels, dtype=int), np.array(scores, dtype=float)


def _mann_whitney_auc(y: np.ndarray, s: np.ndarray):
    """AUC = P(score_pos > score_neg) + 0.5 P(tie), by counting over the sorted distinct scores."""
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    neg_sorted = np.sort(neg)
    below = np.searchsorted(neg_sorted, pos, side="left")
    not_above = np.searchsorted(neg_sorted, pos, side="right")
    return float((below.sum() + 0.5 * (not_above - below).sum()) / (len(pos) * len(neg)))


def expected_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    frac = {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "ppv": (tp, tp + fp),
            "npv": (tn, tn + fn), "accuracy": (tp + tn, len(y)), "f1": (2 * tp, 2 * tp + fp + fn)}
    values = {m: (num / den if den else None) for m, (num, den) in frac.items()}
    values["auc"] = _mann_whitney_auc(y, s)
    return {"confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn}, "n": len(y),
            "positives": int(y.sum()), "values": values}


def _compare(record_id: str, data: dict, field: str, expected) -> list[str]:
    if expected is None and field.endswith(".estimate"):
        field = field[: -len(".estimate")]  # an undefined value is a not-estimable object
    try:
        found = resolve_pointer(data, "/" + field.replace(".", "/"))
    except KeyError:
        return [f"record {record_id}: field data.{field}: expected {expected} found missing field"]
    if expected is None:
        if isinstance(found, dict) and found.get("estimable") is False:
            return []
        return [f"record {record_id}: field data.{field}: expected not estimable found {found!r}"]
    if isinstance(found, bool) or not isinstance(found, (int, float)) or not math.isclose(
            found, expected, rel_tol=TOLERANCE, abs_tol=TOLERANCE):
        return [f"record {record_id}: field data.{field}: expected {expected!r} found {found!r}"]
    return []


def check(out_dir) -> list[str]:
    """Failure lines, one per disagreement between `validation.test` and the recomputation."""
    out_dir = Path(out_dir)
    test = _load(out_dir, "validation.test")
    if test is None:
        return []
    data = test.get("data", {})
    locked = _load(out_dir, "validation.threshold")
    if locked is None:
        return ["record validation.test: field data.threshold: expected a locked threshold in "
                "record validation.threshold found missing record"]
    threshold = locked.get("data", {}).get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        return [f"record validation.threshold: field data.threshold: expected a number found {threshold!r}"]
    failures = []
    if data.get("threshold") != threshold:
        failures.append(f"record validation.test: field data.threshold: expected {threshold!r} "
                        f"(validation.threshold) found {data.get('threshold')!r}")
    path, dep = layout.predictions(out_dir, "test"), layout.predictions("", "test").as_posix()
    if not path.is_file():
        return failures + [f"record validation.test: field deps[{dep}]: expected a file found missing file {path}"]
    try:
        y, s = _read_test(path)
    except (KeyError, ValueError, csv.Error) as e:
        return failures + [f"record validation.test: field deps[{dep}]: expected label and score columns found unreadable file ({e})"]
    exp = expected_metrics(y, s, float(threshold))
    rid = "validation.test"
    for k, v in exp["confusion"].items():
        failures += _compare(rid, data, f"confusion.{k}", v)
    failures += _compare(rid, data, "counts.n", exp["n"])
    failures += _compare(rid, data, "counts.positives", exp["positives"])
    failures += _compare_metrics(rid, data, exp["values"])
    return failures


def _compare_metrics(record_id: str, data: dict, expected: dict) -> list[str]:
    """Every interval method the record reports for every metric against the recomputed value.
    The metric names are those of the record (a metric this module cannot recompute fails) and
    of the recomputation (a metric the record lacks fails)."""
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    failures = [f"record {record_id}: field data.metrics.{m}: expected one of {', '.join(expected)} "
                "found a metric the audit cannot recompute" for m in metrics if m not in expected]
    for m, value in expected.items():
        methods = metrics.get(m)
        if not isinstance(methods, dict) or not methods:
            failures.append(f"record {record_id}: field data.metrics.{m}: expected {value!r} found missing field")
            continue
        for method in methods:
            failures += _compare(record_id, data, f"metrics.{m}.{method}.estimate", value)
    return failures
