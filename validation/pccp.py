"""The predetermined change control plan, executed: a candidate run judged against the cleared run.

    python -m validation.pccp --out OUT --new NEW --params PARAMS      (make pccp-check OUT=... NEW=...)

OUT is the cleared run, NEW the candidate (a run folder built by the same pipeline, e.g. re-trained
with new data or another seed). The criteria are those of the CLEARED run's record `pccp.plan`
(params section `pccp` when the device was cleared, `validation.pccp_plan`). Order of work:

1. refuse (exit 2, naming the difference) a candidate whose test split is not the cleared run's
   locked test split: the same image ids, patients and labels in `cohort/splits.csv` and in the
   test predictions, and none of its patients in the candidate's training or validation split;
2. pair the two models' calls on the same test images (each at its own run's threshold) and judge:
   non-inferiority of sensitivity and of specificity (the lower bound of the paired difference that
   params `pccp.decision_interval` names, `validation.paired.compare`: Newcombe's per-image hybrid
   score interval, the patient-cluster bootstrap, or the lower of the two, above minus the margin;
   a failure on fewer images than the plan's sample size says "underpowered"), no subgroup (sex, age band,
   view, with enough positives or negatives) dropping by more than the subgroup margin, the
   operating threshold within the plan (`threshold_criterion`: a re-tuned threshold of the same
   model within the bounds and the largest change; a re-trained model's threshold chosen by the
   cleared run's locked rule and within the bounds), and unchanged intended-use facts, header
   checks and preprocessing specification (their sha256 in the two runs' records);
3. write `predictions.csv` (both models' scores and calls per test image) and record
   `pccp.assessment`, then render `pccp_report`, into a hidden folder in OUT/pccp renamed at the end
   to `OUT/pccp/<NEW folder name>-<first 12 hex of the candidate model's sha256>/`: a failed run
   leaves nothing, and an existing folder is never overwritten.

Exit 0 when every criterion holds, 3 when one fails (each failed criterion printed by name).
"""
from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from evidence import EvidenceError, Store, atomic, canonical_json, layout, record_path, write_record
from evidence.canonical import sha256_bytes
from evidence.cli import stage_main
from evidence.errors import ToolkitError
from evidence.manifest import read_manifest, read_splits

from . import paired
from .pccp_plan import RECORD as PLAN_RECORD
from .pccp_plan import RETRAINING, RETUNING, SAME_RULE_FIELDS, SAME_RULE_WORDS
from .predictions import read_predictions
from .subgroups import AGE_BAND_EDGES, AGE_BANDS

REPORT = "pccp_report"
RECORD = "pccp.assessment"
EXIT_OUTSIDE_PLAN = 3
PREDICTIONS = "predictions.csv"
PREDICTION_COLUMNS = ("image_id", "patient_id", "label", "cleared_score", "candidate_score",
                      "cleared_flagged", "candidate_flagged")
#: The facts files that state the intended use and the indications for use.
INTENDED_USE_FACTS = ("submission/data/device.yml", "submission/data/labeling.yml")
#: The record whose code hashes those facts files in every run (the locked validation plan).
FACTS_RECORD = "submission.plan"


class PccpError(ToolkitError, ValueError):
    """A candidate or cleared run the protocol cannot compare; the message names what differs."""


# ----------------------------------------------------------------------------- the runs

def _store(folder: Path, role: str) -> Store:
    if not layout.evidence(folder).is_dir():
        raise PccpError(f"{role} run {folder}: no evidence folder (build it first: make validate OUT={folder})")
    return Store(folder)


def _get(store: Store, record_id: str, role: str, fix: str) -> dict:
    try:
        return store.get(record_id)
    except EvidenceError as e:
        raise PccpError(f"{role} run: {e} ({fix})") from None


def test_split(folder: Path, role: str) -> pd.DataFrame:
    """The run's test predictions (image_id, patient_id, label, score), checked against its splits.csv."""
    preds = read_predictions(layout.predictions(folder, "test"))
    splits = read_splits(layout.splits(folder))
    listed = splits[splits["split"] == "test"]
    a, b = set(preds["image_id"]), set(listed["image_id"])
    if a != b:
        raise PccpError(f"{role} run {folder}: predictions/test.csv and cohort/splits.csv list different test "
                        f"images ({len(a - b)} only in the predictions, {len(b - a)} only in the split)")
    return preds


def same_test_set(cleared: pd.DataFrame, candidate: pd.DataFrame, candidate_splits: pd.DataFrame) -> None:
    """Refuse unless the candidate's test split is the cleared one's: image ids, patients, labels;
    and no test patient in the candidate's training or validation split."""
    a, b = set(cleared["image_id"]), set(candidate["image_id"])
    if a != b:
        only_a, only_b = sorted(a - b), sorted(b - a)
        raise PccpError(
            f"the candidate's test split is not the cleared run's locked test split: {len(only_a)} image(s) only in "
            f"the cleared one (first {only_a[:3]}), {len(only_b)} only in the candidate's (first {only_b[:3]}); "
            "the protocol judges a modification on the same locked test set (build the candidate with the cleared "
            "run's split), or assess a new sequestered set with make heldout")
    m = cleared.merge(candidate, on="image_id", suffixes=("_cleared", "_candidate"))
    for column, what in (("patient_id", "patient"), ("label", "label")):
        differ = m[m[f"{column}_cleared"].astype(str) != m[f"{column}_candidate"].astype(str)]
        if len(differ):
            first = differ.iloc[0]
            raise PccpError(f"the candidate's test split gives {len(differ)} image(s) another {what} than the cleared "
                            f"run's, first {first['image_id']} ({first[f'{column}_cleared']} cleared, "
                            f"{first[f'{column}_candidate']} candidate); the locked test set must be unchanged")
    test_patients = set(cleared["patient_id"].astype(str))
    used = candidate_splits[candidate_splits["split"] != "test"]
    leaked = sorted(set(used["patient_id"].astype(str)) & test_patients)
    if leaked:
        raise PccpError(f"the candidate trained or selected its model on {len(leaked)} patient(s) of the locked test "
                        f"split (first {leaked[:3]}); the test patients must stay out of training and validation")


def _threshold(store: Store, role: str) -> dict:
    """The run's `validation.threshold` data (the threshold and the rule that chose it)."""
    data = _get(store, "validation.threshold", role, "run make validate")["data"]
    value = data.get("threshold")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PccpError(f"{role} run: record validation.threshold holds no numeric threshold")
    return data


def _words(value) -> str:
    return "none" if value is None else str(value).replace("_", " ")


def threshold_criterion(cleared: dict, candidate: dict, bounds: dict, model_changed: bool) -> dict:
    """The operating-threshold criterion of the planned modification the candidate makes.

    cleared, candidate: the runs' `validation.threshold` data. Same model file (threshold
    re-tuning): the candidate's threshold lies within [min, max] and moves by at most max_change.
    Another model file (re-training): its score scale is its own, so a raw change says nothing; its
    threshold must have been chosen on its validation split by the cleared run's rule, target and
    bound (`SAME_RULE_FIELDS`) and lie within [min, max]."""
    t_old, t_new = float(cleared["threshold"]), float(candidate["threshold"])
    change = t_new - t_old
    within = bool(bounds["min"] <= t_new <= bounds["max"])
    reasons = [] if within else [f"the threshold {t_new:.4g} lies outside {bounds['min']:g} to {bounds['max']:g}"]
    result = {"modification": RETRAINING if model_changed else RETUNING, "cleared": t_old, "candidate": t_new,
              "change": change, **{k: bounds[k] for k in ("min", "max", "max_change")}, "within_range": within}
    if model_changed:
        differ = [f for f in SAME_RULE_FIELDS if cleared.get(f) != candidate.get(f)]
        result["same_rule"] = not differ
        result["rule"] = {f: {"cleared": cleared.get(f), "candidate": candidate.get(f)} for f in SAME_RULE_FIELDS}
        if differ:
            reasons.append("the re-trained model's threshold was not chosen by the cleared run's locked rule: "
                           + ", ".join(f"{SAME_RULE_WORDS[f]} {_words(candidate.get(f))} (cleared "
                                       f"{_words(cleared.get(f))})" for f in differ))
    else:
        small = bool(abs(change) <= bounds["max_change"])
        result["within_change"] = small
        if not small:
            reasons.append(f"the re-tuned threshold moves by {change:+.4g}, more than {bounds['max_change']:g}")
    result["passed"] = not reasons
    result["reason"] = "; ".join(reasons)
    return result


def fingerprints(store: Store, role: str) -> dict:
    """sha256 of what must not change: the intended-use facts (as the run's locked plan hashed
    them), the header checks (the workflow record's rules) and the preprocessing specification."""
    code = {f["path"]: f["sha256"] for f in _get(store, FACTS_RECORD, role, "run make plan")["code"]["files"]}
    missing = [p for p in INTENDED_USE_FACTS if p not in code]
    if missing:
        raise PccpError(f"{role} run: record {FACTS_RECORD} does not hash {', '.join(missing)}")
    checks = _get(store, "workflow.dicom", role, "run make workflow")["data"].get("checks")
    outs = {Path(o["path"]).name: o["sha256"] for o in _get(store, "training.run", role, "run make train")["outs"]}
    spec = layout.preprocessing_spec("").name
    if spec not in outs:
        raise PccpError(f"{role} run: record training.run lists no {spec}")
    return {"intended_use": sha256_bytes(canonical_json([[p, code[p]] for p in INTENDED_USE_FACTS])),
            "header_checks": sha256_bytes(canonical_json(checks)),
            "preprocessing": outs[spec], "model": outs[layout.model_file("").name]}


# ----------------------------------------------------------------------------- criteria

def strata(frame: pd.DataFrame) -> dict[str, dict[str, tuple[str, np.ndarray]]]:
    """{variable: {stratum: (label, mask)}} for sex, age band and view (known values only), as the
    validation's subgroups define them (`validation.subgroups`)."""
    sex = frame["sex"].fillna("").astype(str).str.upper().to_numpy()
    view = frame["view"].fillna("").astype(str).str.upper().to_numpy()
    age = pd.to_numeric(frame["age_years"], errors="coerce").to_numpy(dtype=float)
    top = AGE_BAND_EDGES[-1]
    bands = {key: (label, (age >= lo) & ((age <= hi) if hi == top else (age < hi))) for key, label, lo, hi in AGE_BANDS}
    return {"sex": {"M": ("male", sex == "M"), "F": ("female", sex == "F")},
            "age_band": bands,
            "view": {"AP": ("AP", view == "AP"), "PA": ("PA", view == "PA")}}


def _why_not(interval: dict, n: int, needed: int, what: str, margin: float) -> str:
    """Why a non-inferiority criterion failed, in words: not estimable; worse by more than the
    margin (the difference itself lies beyond it: more images would not help); underpowered (fewer
    images than the plan needs); or the lower bound below minus the margin."""
    if "ci_low" not in interval:
        return f"not estimable: {interval.get('reason', 'no images')}"
    if interval["estimate"] <= -margin:
        return (f"worse by more than the margin: the difference {interval['estimate']:+.3f} itself lies at or below "
                f"minus the margin {margin:g}")
    if n < needed:
        return (f"underpowered: {n} {what} in the test set, fewer than the {needed} the plan needs for a margin "
                f"of {margin:g}; the lower bound {interval['ci_low']:+.3f} shows neither non-inferiority nor "
                "inferiority")
    return f"the lower bound {interval['ci_low']:+.3f} lies below minus the margin {margin:g}"


def subgroup_rows(frame: pd.DataFrame, plan: dict) -> list[dict]:
    """Per stratum and metric: the paired difference's point estimate, or why it is not judged."""
    y = frame["label"].to_numpy(dtype=int)
    new, old = frame["candidate_correct"].to_numpy(dtype=int), frame["cleared_correct"].to_numpy(dtype=int)
    rows = []
    for variable, groups in strata(frame).items():
        for key, (label, mask) in groups.items():
            for metric, cls, minimum in (("sensitivity", 1, plan["min_subgroup_positives"]),
                                         ("specificity", 0, plan["min_subgroup_negatives"])):
                m = mask & (y == cls)
                n = int(m.sum())
                row = {"variable": variable, "stratum": key, "label": label, "metric": metric, "n": n}
                if n < minimum:
                    row.update(judged=False, reason=f"{n} images, fewer than the pre-specified {minimum}")
                else:
                    diff = float((new[m] - old[m]).sum() / n)
                    row.update(judged=True, cleared=float(old[m].mean()), candidate=float(new[m].mean()),
                               difference=diff, passed=bool(diff >= -plan["subgroup_margin"]))
                rows.append(row)
    return rows


def assess(cleared_preds: pd.DataFrame, candidate_preds: pd.DataFrame, manifest: pd.DataFrame, plan: dict,
           thresholds: dict, prints: dict) -> tuple[dict, pd.DataFrame]:
    """(the assessment's data, the paired table of test images)."""
    frame = cleared_preds.merge(candidate_preds[["image_id", "score"]], on="image_id", suffixes=("_cleared", "_candidate"))
    frame = frame.merge(manifest, on="image_id", how="left")
    y = frame["label"].to_numpy(dtype=int)
    t = {role: float(thresholds[role]["threshold"]) for role in ("cleared", "candidate")}
    frame["cleared_flagged"] = (frame["score_cleared"].to_numpy() >= t["cleared"]).astype(int)
    frame["candidate_flagged"] = (frame["score_candidate"].to_numpy() >= t["candidate"]).astype(int)
    frame["cleared_correct"] = (frame["cleared_flagged"].to_numpy() == y).astype(int)
    frame["candidate_correct"] = (frame["candidate_flagged"].to_numpy() == y).astype(int)

    criteria = []
    performance = {}
    for metric, cls, what in (("sensitivity", 1, "positives"), ("specificity", 0, "negatives")):
        m = y == cls
        interval = paired.compare(frame["candidate_correct"].to_numpy()[m], frame["cleared_correct"].to_numpy()[m],
                                  frame["patient_id"].to_numpy()[m], level=plan["ci_level"],
                                  decision=plan["decision_interval"], n_resamples=plan["bootstrap_resamples"],
                                  seed=plan["bootstrap_seed"])
        margin = plan["margins"][metric]
        ok = paired.non_inferior(interval, margin)
        needed = plan["sample_size"][metric]
        n = int(m.sum())
        entry = {**interval, "margin": margin, "passed": ok, "required": needed, "adequate": n >= needed}
        criterion = {"key": f"{metric}_non_inferiority", "name": f"{metric} non-inferiority", "passed": ok}
        if not ok:
            criterion["reason"] = entry["reason"] = _why_not(interval, n, needed, what, margin)
        performance[metric] = entry
        criteria.append(criterion)
    groups = subgroup_rows(frame, plan)
    for g in groups:
        if g["judged"]:
            criteria.append({"key": f"subgroup_{g['variable']}_{g['stratum']}_{g['metric']}",
                             "name": f"subgroup {g['label']} {g['metric']}", "passed": g["passed"]})
    threshold = threshold_criterion(thresholds["cleared"], thresholds["candidate"], plan["threshold"],
                                    prints["cleared"]["model"] != prints["candidate"]["model"])
    criteria.append({"key": "threshold_within_plan", "name": "operating threshold within the plan",
                     "passed": threshold["passed"], "reason": threshold["reason"]})
    unchanged = {}
    for key, name in (("intended_use", "intended use unchanged"), ("header_checks", "input checks unchanged"),
                      ("preprocessing", "preprocessing unchanged")):
        same = prints["cleared"][key] == prints["candidate"][key]
        unchanged[key] = {"cleared_sha256": prints["cleared"][key], "candidate_sha256": prints["candidate"][key],
                          "unchanged": same}
        criteria.append({"key": f"{key}_unchanged", "name": name, "passed": same})
    failed = [c["name"] for c in criteria if not c["passed"]]
    for c in criteria:
        c.setdefault("reason", "")
    data = {
        "within_plan": not failed, "failed": failed, "criteria": criteria,
        "test_set": {"rule": plan["test_set"], "n": int(len(frame)), "positives": int(y.sum()),
                     "negatives": int(len(y) - y.sum()), "patients": int(frame["patient_id"].nunique()),
                     "identical": True},
        "performance": performance,
        "subgroups": {"margin": plan["subgroup_margin"], "rows": groups},
        "threshold": threshold,
        "unchanged": unchanged,
        "models": {"cleared_sha256": prints["cleared"]["model"], "candidate_sha256": prints["candidate"]["model"]},
    }
    return data, frame


# ----------------------------------------------------------------------------- run

def folder_name(new: Path, model_sha256: str) -> str:
    return f"{new.resolve().name}-{model_sha256[:12]}"


def write_predictions(pout: Path, frame: pd.DataFrame) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for r in frame.itertuples():
        writer.writerow([r.image_id, r.patient_id, int(r.label), repr(float(r.score_cleared)),
                         repr(float(r.score_candidate)), int(r.cleared_flagged), int(r.candidate_flagged)])
    return atomic.write_text(pout / PREDICTIONS, buffer.getvalue())


def run(out: str | Path, new: str | Path, params_file: str | Path, *, render: bool = True) -> dict:
    out, new = Path(out), Path(new)
    if not new.is_dir():
        raise PccpError(f"--new {new}: not a folder (pass the candidate's run folder)")
    if new.resolve() == out.resolve():
        raise PccpError(f"--new {new} is the cleared run itself; pass the candidate's run folder")
    stores = {"cleared": _store(out, "cleared"), "candidate": _store(new, "candidate")}
    plan_record = _get(stores["cleared"], PLAN_RECORD, "cleared", "build the cleared run with make submission, which writes it and locks it with the validation plan")
    plan = plan_record["data"]
    for role, store in stores.items():
        _get(store, "model.test_predictions", role, "run make validate")
    cleared_preds, candidate_preds = test_split(out, "cleared"), test_split(new, "candidate")
    same_test_set(cleared_preds, candidate_preds, read_splits(layout.splits(new)))
    thresholds = {role: _threshold(s, role) for role, s in stores.items()}
    prints = {role: fingerprints(s, role) for role, s in stores.items()}
    manifest = read_manifest(layout.manifest(out), ("sex", "age_years", "view"))
    data, frame = assess(cleared_preds, candidate_preds, manifest, plan, thresholds, prints)
    data["cleared_run"], data["candidate_run"] = str(out.resolve()), str(new.resolve())

    name = folder_name(new, prints["candidate"]["model"])
    data["name"] = name
    final = layout.pccp(out, name)
    if final.exists():
        raise _exists(final)
    with atomic.staged_folder(layout.pccp_root(out), name) as staging:
        predictions = write_predictions(staging, frame)
        deps = [record_path(folder, rid) for folder in (out, new)
                for rid in ("validation.threshold", "model.test_predictions", "training.run", "workflow.dicom",
                            FACTS_RECORD)]
        deps += [record_path(out, PLAN_RECORD), layout.predictions(out, "test"), layout.predictions(new, "test"),
                 layout.splits(out), layout.splits(new), layout.manifest(out)]
        record = write_record(staging, RECORD, data=data, params=plan_record["params"], deps=deps, outs=[predictions],
                              synthetic=bool(plan_record["synthetic"]))
        if render:
            render_report(staging, params_file)
        atomic.publish_folder(staging, final, _exists(final))
        return record


def _exists(final: Path) -> PccpError:
    return PccpError(f"{final}: exists: this candidate has been assessed; its evidence is never overwritten "
                     "(remove that folder to assess it again)")


def render_report(pout: Path, params_file: str | Path) -> None:
    """`python -m submission --out POUT --params PARAMS --document pccp_report`."""
    cmd = [sys.executable, "-m", "submission", "--out", str(pout), "--params", str(params_file), "--document", REPORT]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise PccpError(f"the assessment is written but the report failed ({' '.join(cmd[1:])}): {last}")


def _summary(record: dict, args) -> str:
    d = record["data"]
    perf = "; ".join(f"{m} difference {p['estimate']:+.3f} ({p['ci_low']:+.3f} to {p['ci_high']:+.3f}), margin {p['margin']}"
                     for m, p in d["performance"].items() if "ci_low" in p)
    verdict = "WITHIN the plan" if d["within_plan"] else "NOT within the plan"
    where = layout.pccp(args.out, d["name"])
    return f"pccp: {verdict}; {perf}; report and records in {where}"


def main(argv: list[str] | None = None) -> int:
    result: dict = {}

    def call(a):
        result["record"] = run(a.out, a.new, a.params, render=not a.no_report)
        return result["record"]

    def arguments(parser) -> None:
        parser.add_argument("--new", required=True, help="the candidate run folder")
        parser.add_argument("--no-report", action="store_true", help="write the record only")

    code = stage_main(argv, prog="python -m validation.pccp", doc=__doc__, add_arguments=arguments, call=call,
                      summary=_summary)
    if code == 0 and not result["record"]["data"]["within_plan"]:
        for c in result["record"]["data"]["criteria"]:
            if not c["passed"]:
                print(f"failed: {c['name']}" + (f" ({c['reason']})" if c["reason"] else ""))
        return EXIT_OUTSIDE_PLAN
    return code


if __name__ == "__main__":
    sys.exit(main())
