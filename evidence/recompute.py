"""Independent recomputation of the reported test and held-out metrics (used by `python -m evidence audit`).

Re-derives the confusion counts, sensitivity, specificity, PPV, NPV, accuracy, F1 and AUC from
`OUT/predictions/test.csv` at the threshold locked in `validation.threshold`, with plain csv and
numpy (no code of the `validation` package), and compares them with `validation.test`.
An image is positive when score >= threshold. Absent records or files: nothing to check.

Each held-out folder (`OUT/heldout/<name>`, or OUT itself when it is one) is recomputed the same way
from its `predictions.csv` (`layout.HELDOUT_PREDICTIONS`): every row's `flagged` against its score and
the threshold of `heldout.intake` (which must be the run's `validation.threshold`); the per-protocol
metrics of `heldout.metrics` (the accepted rows); its `all_enrolled` sensitivity and specificity (every
row; a row not analyzed is not flagged) and their per-protocol counterparts; and the rejection counts
and rates of `heldout.intake` `rejection` (status per row). The file's rows must be the files
`heldout.intake` lists, with the same label and status.
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
    """AUC = P(score_pos > score_neg) + 0.5 P(tie), by counting over the sorted distinct scores.
    None (not estimable) with fewer than two positives or two negatives: every AUC a record reports
    comes with an interval, and the toolkit gives none from a single case of a class."""
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) < 2 or len(neg) < 2:
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
    conf = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    values = {**count_values(conf), "auc": _mann_whitney_auc(y, s)}
    return {"confusion": conf, "n": len(y), "positives": int(y.sum()), "values": values}


def count_values(conf: dict) -> dict:
    """Each count metric from the confusion counts; None where its denominator is zero."""
    tp, fp, tn, fn = (conf[k] for k in ("tp", "fp", "tn", "fn"))
    frac = {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "ppv": (tp, tp + fp),
            "npv": (tn, tn + fn), "accuracy": (tp + tn, tp + fp + tn + fn), "f1": (2 * tp, 2 * tp + fp + fn)}
    return {m: (num / den if den else None) for m, (num, den) in frac.items()}


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
    """Failure lines, one per disagreement between `validation.test` (and each held-out folder's
    `heldout.metrics` and `heldout.intake`, its lines prefixed `[name] `) and the recomputation."""
    out_dir = Path(out_dir)
    failures = check_test(out_dir) + check_heldout(out_dir, _threshold_of(out_dir))
    root = layout.heldout_root(out_dir)
    if root.is_dir():
        for hout in sorted(p for p in root.iterdir() if layout.evidence(p).is_dir() and not p.name.startswith(".")):
            failures += [f"[{hout.name}] {line}" for line in check_heldout(hout, _threshold_of(out_dir))]
    return failures


def _threshold_of(out_dir: Path):
    locked = _load(out_dir, "validation.threshold")
    return None if locked is None else locked.get("data", {}).get("threshold")


def check_test(out_dir: Path) -> list[str]:
    """Failure lines, one per disagreement between `validation.test` and the recomputation."""
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


def _compare_metrics(record_id: str, data: dict, expected: dict, prefix: str = "metrics") -> list[str]:
    """Every interval method the record reports for every metric (under `prefix`) against the
    recomputed value. The metric names are those of the record (a metric this module cannot
    recompute fails) and of the recomputation (a metric the record lacks fails)."""
    try:
        metrics = resolve_pointer(data, "/" + prefix.replace(".", "/"))
    except KeyError:
        metrics = None
    metrics = metrics if isinstance(metrics, dict) else {}
    failures = [f"record {record_id}: field data.{prefix}.{m}: expected one of {', '.join(expected)} "
                "found a metric the audit cannot recompute" for m in metrics if m not in expected]
    for m, value in expected.items():
        methods = metrics.get(m)
        if not isinstance(methods, dict) or not methods:
            failures.append(f"record {record_id}: field data.{prefix}.{m}: expected {value!r} found missing field")
            continue
        for method in methods:
            failures += _compare(record_id, data, f"{prefix}.{m}.{method}.estimate", value)
    return failures


# ----------------------------------------------------------------------------- held-out folders

def _read_heldout(path: Path) -> list[dict]:
    """Rows of a held-out predictions file: file, label (int), status, score (float or None), flagged (int)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in layout.HELDOUT_PREDICTION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise KeyError(f"missing column(s) {', '.join(missing)}")
        for i, row in enumerate(reader, start=2):
            try:
                score = float(row["score"]) if row["score"].strip() else None
                if score is not None and not math.isfinite(score):
                    raise ValueError(f"score {row['score']!r} is not finite")
                rows.append({"line": i, "file": row["file"], "label": int(row["label"]), "status": row["status"],
                             "score": score, "flagged": int(row["flagged"])})
            except ValueError as e:
                raise ValueError(f"line {i}: {e}") from None
    return rows


def _fraction(num: int, den: int):
    return num / den if den else None


def check_heldout(hout: Path, run_threshold=None) -> list[str]:
    """Failure lines for one held-out folder (nothing when it holds no `heldout.metrics`)."""
    metrics = _load(hout, "heldout.metrics")
    if metrics is None:
        return []
    intake = _load(hout, "heldout.intake") or {}
    idata, mdata = intake.get("data", {}), metrics.get("data", {})
    rel = layout.HELDOUT_PREDICTIONS
    threshold = idata.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        return [f"record heldout.intake: field data.threshold: expected a number found {threshold!r}"]
    failures = []
    if run_threshold is not None and threshold != run_threshold:
        failures.append(f"record heldout.intake: field data.threshold: expected {run_threshold!r} "
                        f"(validation.threshold of the run) found {threshold!r}")
    if mdata.get("threshold") != threshold:
        failures.append(f"record heldout.metrics: field data.threshold: expected {threshold!r} (heldout.intake) "
                        f"found {mdata.get('threshold')!r}")
    path = hout / rel
    if not path.is_file():
        return failures + [f"record heldout.metrics: field deps[{rel}]: expected a file found missing file {path}"]
    try:
        rows = _read_heldout(path)
    except (KeyError, ValueError, csv.Error) as e:
        return failures + [f"record heldout.metrics: field deps[{rel}]: expected "
                           f"{', '.join(layout.HELDOUT_PREDICTION_COLUMNS)} columns found an unreadable file ({e})"]

    for r in rows:   # each row's decision from its own score
        analyzed = r["status"] == "accepted"
        expected = int(analyzed and r["score"] is not None and r["score"] >= threshold)
        if analyzed and r["score"] is None:
            failures.append(f"record heldout.metrics: field deps[{rel}] line {r['line']} ({r['file']}): "
                            "expected a score for an accepted file found an empty score")
        elif not analyzed and r["score"] is not None:
            failures.append(f"record heldout.metrics: field deps[{rel}] line {r['line']} ({r['file']}): "
                            f"expected an empty score for a file with status {r['status']} found {r['score']!r}")
        if r["flagged"] != expected:
            failures.append(f"record heldout.metrics: field deps[{rel}] line {r['line']} ({r['file']}): expected "
                            f"flagged {expected} (score >= threshold {threshold!r}) found {r['flagged']}")

    listed = idata.get("files")
    if isinstance(listed, list):
        mine = [(r["file"], r["label"], r["status"]) for r in rows]
        theirs = [(f.get("file"), f.get("label"), f.get("status")) for f in listed if isinstance(f, dict)]
        if mine != theirs:
            i = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
            first = lambda rows: "(none)" if i >= len(rows) else "file {!r} label {} status {}".format(*rows[i])  # noqa: E731
            failures.append(f"record heldout.intake: field data.files[{i}]: expected the row of {rel} "
                            f"({first(mine)}; {len(mine)} rows) found {first(theirs)} ({len(theirs)} files)")

    accepted = [r for r in rows if r["status"] == "accepted" and r["score"] is not None]
    y = np.array([r["label"] for r in accepted], dtype=int)
    s = np.array([r["score"] for r in accepted], dtype=float)
    exp = expected_metrics(y, s, float(threshold))
    rid = "heldout.metrics"
    failures += _compare(rid, mdata, "counts.n", exp["n"])
    failures += _compare(rid, mdata, "counts.positives", exp["positives"])
    if mdata.get("estimable") is not False:
        for k, v in exp["confusion"].items():
            failures += _compare(rid, mdata, f"confusion.{k}", v)
        failures += _compare_metrics(rid, mdata, exp["values"])
    elif exp["n"] and 0 < exp["positives"] < exp["n"]:
        failures.append(f"record {rid}: field data.estimable: expected true ({exp['positives']} positives of "
                        f"{exp['n']} accepted rows in {rel}) found false")
    failures += _check_all_enrolled(rows, mdata.get("all_enrolled"), exp["confusion"], float(threshold))
    failures += _check_rejection(rows, idata.get("rejection"))
    return failures


def _proportions(record_id: str, data: dict, prefix: str, conf: dict) -> list[str]:
    """Every interval method of sensitivity and specificity under `prefix` against the counts of `conf`."""
    values = count_values(conf)
    return _compare_metrics(record_id, data, {m: values[m] for m in ("sensitivity", "specificity")}, prefix)


def _check_all_enrolled(rows: list[dict], block, per_protocol: dict, threshold: float) -> list[str]:
    rid, field = "heldout.metrics", "all_enrolled"
    if not isinstance(block, dict):
        return [f"record {rid}: field data.{field}: expected the all-enrolled sensitivity and specificity "
                "found missing field"]
    data = {field: block}
    conf = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for r in rows:   # a row not analyzed raised no flag: a positive is a miss, a negative a correct not-flagged
        flagged = r["status"] == "accepted" and r["score"] is not None and r["score"] >= threshold
        conf[("tp" if flagged else "fn") if r["label"] == 1 else ("fp" if flagged else "tn")] += 1
    n_pos = sum(r["label"] == 1 for r in rows)
    not_analyzed = [r for r in rows if r["status"] != "accepted"]
    failures = []
    counts = {"n": len(rows), "positives": n_pos, "negatives": len(rows) - n_pos,
              "positives_not_analyzed": sum(r["label"] == 1 for r in not_analyzed),
              "negatives_not_analyzed": sum(r["label"] == 0 for r in not_analyzed)}
    for k, v in counts.items():
        failures += _compare(rid, data, f"{field}.counts.{k}", v)
    for k, v in conf.items():
        failures += _compare(rid, data, f"{field}.confusion.{k}", v)
    failures += _proportions(rid, data, f"{field}.metrics", conf)
    accepted = [r for r in rows if r["status"] == "accepted"]
    for k, v in {"n": len(accepted), "positives": sum(r["label"] == 1 for r in accepted),
                 "negatives": sum(r["label"] == 0 for r in accepted)}.items():
        failures += _compare(rid, data, f"{field}.per_protocol.counts.{k}", v)
    for k, v in per_protocol.items():
        failures += _compare(rid, data, f"{field}.per_protocol.confusion.{k}", v)
    failures += _proportions(rid, data, f"{field}.per_protocol.metrics", per_protocol)
    return failures


def _check_rejection(rows: list[dict], block) -> list[str]:
    rid = "heldout.intake"
    if not isinstance(block, dict):
        return [f"record {rid}: field data.rejection: expected the input-rejection rates found missing field"]
    data = {"rejection": block}
    failures = []
    groups = {"rejection": rows,
              "rejection.by_label.positives": [r for r in rows if r["label"] == 1],
              "rejection.by_label.negatives": [r for r in rows if r["label"] == 0]}
    for prefix, mine in groups.items():
        k = {"rejected": sum(r["status"] == "rejected" for r in mine),
             "error": sum(r["status"] == "error" for r in mine)}
        k["not_analyzed"] = k["rejected"] + k["error"]
        failures += _compare(rid, data, f"{prefix}.n", len(mine))
        for status, v in k.items():
            failures += _compare(rid, data, f"{prefix}.{status}", v)
            failures += _compare(rid, data, f"{prefix}.rate.{status}.estimate", _fraction(v, len(mine)))
    return failures
