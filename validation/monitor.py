"""Postmarket performance monitoring of one production batch:
`python -m validation.monitor --out OUT --batch BATCH --params PARAMS` (`make monitor OUT=<run> BATCH=...`).

BATCH is a folder of DICOM files (any depth; an optional `labels.csv` in the held-out format,
`validation.heldout.read_labels`, gives labels for a sample), or a JSON-lines file: the DICOM node's
`node/notifications.jsonl` (status flagged | not_flagged | rejected | error, probability) or the
output of `python -m model.infer` (status accepted | rejected | error, probability and the header
fields the checks read: view, sex, age, manufacturer). A DICOM folder goes through the same intake and
model as clinical use (`model.infer.classify`, the locked model and threshold, the run's header
checks); a JSON-lines file is read as it is, and what it does not carry is reported as not measured.

The batch is compared with the validation baseline of record `monitoring.plan` (the test split) under
the limits that record holds (params section `monitoring` when the plan was written; `make monitor`
rewrites the plan first when the section changed). Each check has a name; an alert is a check outside its limit:
- `batch_too_small`: fewer files than `min_batch_size` (analyzed files for the output checks): the
  drift checks are not judged, and that is itself an alert;
- input drift: `view_drift`, `sex_drift` (categorical PSI), `age_drift`, `pixel_spacing_drift`,
  `image_mean_drift`, `image_std_drift` (PSI over the baseline's quantile bins);
- output drift: `score_psi`, `score_ks` (scipy two-sample KS against `predictions/test.csv`),
  `flag_rate` (the validation flag rate outside the batch's Wilson interval);
- `rejection_rate`: the lower Wilson bound of the share of files not analyzed above the test split's
  share outside the intended use (`monitoring.plan` baseline `rejection`) plus `rejection_rate_limit`;
- with labels: `sensitivity`, `specificity` (the test split's estimate above the batch's Wilson interval).

Writes `batch.csv` and record `monitoring.batch` into `OUT/monitoring/<batch name>-<first 12 hex of
its content hash>/evidence/` through a hidden folder renamed at the end (as `validation.heldout`),
then renders `monitoring_report` there. Exit 0 within limits, 3 when an alert fires (each printed).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from evidence import EvidenceError, Store, atomic, layout, record_path, sha256_file, write_record
from evidence.cli import EXIT_OK, stage_main

from . import drift
from .monitoring_plan import RECORD as PLAN, MonitoringError, limits

REPORT = "monitoring_report"
EXIT_ALERT = 3
RECORD = "monitoring.batch"
BATCH_COLUMNS = ("file", "status", "score", "flagged", "view", "sex", "age_years", "manufacturer",
                 "pixel_spacing", "image_mean", "image_std", "label")
#: statuses of a JSON-lines row: the node's notifications and model.infer's output
ANALYSED = {"flagged", "not_flagged", "accepted"}
NOT_ANALYSED = {"rejected", "error"}
#: the input-drift checks: (name, batch column, baseline entry, what it measures in words)
INPUT_CHECKS = (("view_drift", "view", ("headers", "view"), "view position"),
                ("sex_drift", "sex", ("headers", "sex"), "patient sex"),
                ("age_drift", "age_years", ("headers", "age_years"), "patient age"),
                ("pixel_spacing_drift", "pixel_spacing", ("headers", "pixel_spacing"), "pixel spacing"),
                ("manufacturer_drift", "manufacturer", ("headers", "manufacturer"), "manufacturer"),
                ("image_mean_drift", "image_mean", ("image", "mean"), "mean intensity of the model input"),
                ("image_std_drift", "image_std", ("image", "std"), "standard deviation of the model input"))


# ----------------------------------------------------------------------------- reading a batch

def read_jsonl(path: Path, device) -> tuple[pd.DataFrame, str]:
    """(one row per file, `notifications` or `infer`) of a JSON-lines file; summary and duplicate lines
    are skipped. A line decided by another model than the run's is refused."""
    rows, kinds = [], set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise MonitoringError(f"--batch {path}: not UTF-8 text (pass a DICOM folder or a JSON-lines file)") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MonitoringError(f"--batch {path}: line {n} is not JSON ({e.msg}); pass the node's "
                                  "notifications.jsonl or the output of python -m model.infer") from None
        if not isinstance(row, dict) or row.get("summary") or row.get("status") == "duplicate":
            continue
        status = row.get("status")
        if status not in ANALYSED | NOT_ANALYSED:
            raise MonitoringError(f"--batch {path}: line {n}: status {status!r} is not one of "
                                  f"{', '.join(sorted(ANALYSED | NOT_ANALYSED))}")
        sha = row.get("model_sha256")
        if sha and sha != device.model_sha256:
            raise MonitoringError(f"--batch {path}: line {n} was decided by model {sha[:12]}, not the run's locked "
                                  f"model {device.model_sha256[:12]}; monitor it against its own run folder")
        kinds.add("notifications" if "sop_instance_uid" in row else "infer")
        score = row.get("probability")
        analysed = status in ANALYSED and isinstance(score, (int, float))
        rows.append({"file": str(row.get("file") or row.get("sop_instance_uid") or f"line {n}"),
                     "status": "accepted" if analysed else ("error" if status == "error" else "rejected"),
                     "score": float(score) if analysed else None, "view": row.get("view"), "sex": row.get("sex"),
                     "age_years": row.get("age"), "manufacturer": row.get("manufacturer"),
                     "pixel_spacing": None, "image_mean": None, "image_std": None, "label": None,
                     "codes": list(row.get("codes") or []),
                     "carries": {k for k in ("view", "sex", "age", "manufacturer", "codes") if k in row}})
    if not rows:
        raise MonitoringError(f"--batch {path}: no result line (pass the node's notifications.jsonl or the output "
                              "of python -m model.infer)")
    return pd.DataFrame(rows), "+".join(sorted(kinds))


def _pixel_spacing(header) -> float | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = header.get(keyword) if header is not None else None
        try:
            return float(value[0]) if value else None
        except (TypeError, ValueError, IndexError):
            return None
    return None


def read_dicom_folder(folder: Path, device) -> pd.DataFrame:
    """One row per file: the device's own classification, the header fields and the model-input
    statistics of each accepted file (`monitoring_plan.image_statistics`, as the baseline)."""
    from model import dicom
    from model.batching import fixed_batch
    from model.infer import classify
    from .heldout import heldout_files, read_labels
    from .monitoring_plan import image_statistics

    files = heldout_files(folder)
    if not files:
        raise MonitoringError(f"--batch {folder}: no file found (pass a folder of DICOM files)")
    results = {Path(r["file"]).resolve(): r for r in classify(files, fixed_batch(device))}
    labels = {}
    if (folder / "labels.csv").is_file():
        usable, _, _, _ = read_labels(folder, files)
        labels = {Path(p).resolve(): int(y) for p, y in zip(usable["path"], usable["label"])}
    rows, pixels, accepted = [], [], []
    for f in files:
        r = results[f.resolve()]
        item = dicom.intake(f, device.rules)
        analysed = r["status"] == dicom.ACCEPTED and r["probability"] is not None
        if analysed and item.pixels is not None:
            pixels.append(item.pixels)
            accepted.append(len(rows))
        rows.append({"path": f, "file": f.relative_to(folder).as_posix(), "status": r["status"],
                     "score": float(r["probability"]) if analysed else None, "view": r["view"], "sex": r["sex"],
                     "age_years": r["age"], "manufacturer": r.get("manufacturer"),
                     "pixel_spacing": _pixel_spacing(item.header), "image_mean": None, "image_std": None,
                     "label": labels.get(f.resolve()), "codes": list(r.get("codes") or []),
                     "carries": {"view", "sex", "age", "manufacturer", "pixel_spacing", "image", "codes"}})
    if pixels:
        stats = image_statistics(pixels, device.spec)
        for i, m, s in zip(accepted, stats["mean"], stats["std"]):
            rows[i]["image_mean"], rows[i]["image_std"] = float(m), float(s)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- checks

def _check(name: str, what: str, **fields) -> dict:
    return {"name": name, "what": what, "judged": True, "interval": None, **fields}


def _not_judged(name: str, what: str, reason: str) -> dict:
    return {"name": name, "what": what, "judged": False, "alert": False, "reason": reason}


def input_check(name: str, column: str, words: str, base: dict, df: pd.DataFrame, p: dict, carried: bool) -> dict:
    what = f"distribution of {words} against the test split"
    if not carried:
        return _not_judged(name, what, "the batch does not carry this field")
    if not base.get("available"):
        return _not_judged(name, what, f"no baseline: {base['reason']}")
    if base["kind"] == "categorical":
        values = list(df[column])
        if len(values) < p["min_batch_size"]:
            return _not_judged(name, what, f"{len(values)} files, fewer than the minimum batch size")
        shares = drift.categorical_shares(values)
        value, limit = drift.categorical_psi(base["shares"], shares), p["categorical_psi_limit"]
        batch = {"n": len(values), "shares": shares}
    else:
        v = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if len(v) < p["min_batch_size"]:
            return _not_judged(name, what, f"{len(v)} files with a value, fewer than the minimum batch size")
        shares = drift.numeric_shares(v, base["edges"])
        value, limit = drift.psi(base["shares"], shares), p["psi_limit"]
        batch = {"n": int(len(v)), "shares": shares, "mean": float(v.mean())}
    return _check(name, what, measure="population stability index", value=value, limit=limit,
                  alert=bool(value > limit), batch=batch)


SCORE_PSI = "score distribution against the test split (binned)"
SCORE_KS = "score distribution against the test split's scores (two-sample test)"
FLAG_RATE = "share of analyzed files flagged, against the test split's"


def output_checks(df: pd.DataFrame, plan: dict, test_scores: np.ndarray, p: dict) -> list[dict]:
    from . import stats

    base = plan["baseline"]
    s = df.loc[df["status"] == "accepted", "score"].to_numpy(dtype=float)
    if len(s) < p["min_batch_size"]:
        reason = f"{len(s)} analyzed files, fewer than the minimum batch size"
        return [_not_judged(n, w, reason) for n, w in (("score_psi", SCORE_PSI), ("score_ks", SCORE_KS),
                                                       ("flag_rate", FLAG_RATE))]
    shares = drift.numeric_shares(s, base["scores"]["edges"])
    value = drift.psi(base["scores"]["shares"], shares)
    ks = drift.ks(test_scores, s)
    flagged = int(np.sum(s >= plan["threshold"]))
    ci = stats.proportion_ci(flagged, len(s), level=p["ci_level"])
    expected = base["flag_rate"]["estimate"]
    return [
        _check("score_psi", SCORE_PSI, measure="population stability index",
               value=value, limit=p["psi_limit"], alert=bool(value > p["psi_limit"]),
               batch={"n": int(len(s)), "shares": shares, "mean": float(s.mean())}),
        _check("score_ks", SCORE_KS, measure="Kolmogorov-Smirnov p-value",
               value=ks["p_value"], limit=p["ks_alpha"], alert=bool(ks["p_value"] < p["ks_alpha"]), ks=ks),
        _check("flag_rate", FLAG_RATE, measure="flag rate",
               value=ci["estimate"], limit=expected, interval=ci, flagged=flagged,
               alert=bool(not ci["ci_low"] <= expected <= ci["ci_high"])),
    ]


def rejection_check(df: pd.DataFrame, p: dict, baseline: dict, with_codes: bool) -> dict:
    """The share not analyzed against the test split's share outside the intended use; by reason
    category (`validation.heldout.reason_categories`: a file counts once in each of its categories)
    when the input carries the intake's reason codes."""
    from . import stats
    from .heldout import OTHER_REASONS, REASON_CATEGORIES, reason_categories

    n, k = len(df), int((df["status"] != "accepted").sum())
    what = "share of files not analyzed (rejected by the header checks or failed)"
    if n < p["min_batch_size"]:
        return _not_judged("rejection_rate", what, f"{n} files, fewer than the minimum batch size")
    ci = stats.proportion_ci(k, n, level=p["ci_level"])
    reasons = {s: int((df["status"] == s).sum()) for s in ("rejected", "error")}
    by_reason = None
    if with_codes:
        labels, tally = {**dict(REASON_CATEGORIES), **dict(OTHER_REASONS.values())}, {}
        for status, codes in zip(df["status"], df["codes"]):
            for key in reason_categories(status, codes) if status != "accepted" else []:
                tally[key] = tally.get(key, 0) + 1
        by_reason = [{"category": labels[key], "n_files": n} for key, n in tally.items()]
    limit = baseline["estimate"] + p["rejection_rate_limit"]
    return _check("rejection_rate", what, measure="rejection rate", value=ci["estimate"], limit=limit,
                  expected=baseline["estimate"], interval=ci, counts={"n": n, "not_analysed": k, **reasons},
                  by_reason=by_reason,
                  alert=bool(ci["ci_low"] > limit))


def performance_checks(df: pd.DataFrame, test: pd.DataFrame, threshold: float, p: dict) -> list[dict]:
    from . import stats

    lab = df[(df["status"] == "accepted") & df["label"].notna()]
    checks = []
    for name, cls in (("sensitivity", 1), ("specificity", 0)):
        what = f"{name} on the labeled sample, against the test split's"
        rows = lab[lab["label"].astype(int) == cls]
        if rows.empty:
            checks.append(_not_judged(name, what, f"no labeled {'positive' if cls else 'negative'} in the batch"))
            continue
        hit = rows["score"].astype(float) >= threshold
        k = int(hit.sum()) if cls else int((~hit).sum())
        ci = stats.proportion_ci(k, len(rows), level=p["ci_level"])
        t = test[test["label"] == cls]["score"] >= threshold
        expected = float(t.mean()) if cls else float((~t).mean())
        checks.append(_check(name, what, measure=name, value=ci["estimate"], limit=expected, interval=ci,
                             alert=bool(expected > ci["ci_high"])))
    return checks


# ----------------------------------------------------------------------------- run

def _name(batch: Path) -> tuple[str, str]:
    from .heldout import content_sha256

    digest = content_sha256(batch) if batch.is_dir() else sha256_file(batch)
    stem = batch.resolve().name if batch.is_dir() else batch.stem
    return f"{stem}-{digest[:12]}", digest


def write_batch_csv(hout: Path, df: pd.DataFrame) -> Path:
    frame = df.reindex(columns=BATCH_COLUMNS).copy()
    return atomic.write_text(hout / layout.MONITORING_BATCH, frame.to_csv(index=False, float_format="%.10g"))


def run(out: str | Path, batch: str | Path, params_file: str | Path, *, render: bool = True) -> dict:
    out, batch = Path(out), Path(batch)
    if not batch.exists():
        raise MonitoringError(f"--batch {batch}: not found (pass a folder of DICOM files or a JSON-lines file)")
    with atomic.staged_folder(layout.monitoring_root(out), batch.resolve().name) as staging:
        record, final = _run(out, batch, staging, params_file, render)
        atomic.publish_folder(staging, final, _exists(final))
        return record


def _exists(final: Path) -> MonitoringError:
    return MonitoringError(f"{final}: exists: this batch (same content) has been monitored; its evidence is "
                           "never overwritten (remove that folder to monitor it again)")


def _run(out: Path, batch: Path, hout: Path, params_file, render: bool) -> tuple[dict, Path]:
    from model.infer import DeviceError, load_device

    try:
        plan_record = Store(out).get(PLAN)
    except EvidenceError as e:
        raise MonitoringError(f"{e} (the monitoring plan is part of the run: make submission OUT={out})") from None
    plan = plan_record["data"]
    p = limits(plan["limits"])
    name, digest = _name(batch)
    final = layout.monitoring(out, name)
    if final.exists():
        raise _exists(final)
    test_file = layout.predictions(out, "test")
    recorded = {d["path"]: d["sha256"] for d in plan_record["deps"]["files"]}
    if sha256_file(test_file) != recorded.get(layout.predictions("", "test").as_posix()):
        raise MonitoringError(f"{test_file} does not match the sha256 record {PLAN} holds (the baseline changed; "
                              "rerun make submission)")
    try:
        device = load_device(out, params_file)
    except DeviceError as e:
        raise MonitoringError(str(e)) from None
    if device.threshold != plan["threshold"]:
        raise MonitoringError(f"the run's threshold {device.threshold} is not the one record {PLAN} holds "
                              f"({plan['threshold']}); rerun make submission")
    if batch.is_dir():
        df, kind = read_dicom_folder(batch, device), "dicom"
    else:
        df, kind = read_jsonl(batch, device)
    carried = set().union(*df["carries"])
    test = pd.read_csv(test_file)

    base = plan["baseline"]
    checks = []
    if len(df) < p["min_batch_size"]:
        checks.append(_check("batch_too_small", "files in the batch", measure="files", value=len(df),
                             limit=p["min_batch_size"], alert=True))
    for check_name, column, (group, key), words in INPUT_CHECKS:
        field = "image" if group == "image" else ("age" if column == "age_years" else column)
        checks.append(input_check(check_name, column, words, base[group][key], df, p, field in carried))
    checks += output_checks(df, plan, test["score"].to_numpy(dtype=float), p)
    checks.append(rejection_check(df, p, base["rejection"], "codes" in carried))
    labelled = int(df["label"].notna().sum())
    if labelled:
        checks += performance_checks(df, test, plan["threshold"], p)
    alerts = [c["name"] for c in checks if c["alert"]]
    data = {
        "batch": {"path": str(batch.resolve()), "name": name, "kind": kind, "content_sha256": digest,
                  "n_files": int(len(df)), "n_analysed": int((df["status"] == "accepted").sum()),
                  "n_labelled": labelled,
                  "carries": sorted(carried)},
        "plan_record": PLAN, "plan_record_sha256": plan_record["sha256"], "limits": p,
        "threshold": plan["threshold"], "model_sha256": device.model_sha256,
        "checks": checks, "alerts": alerts, "within_limits": not alerts,
    }
    scores = pd.to_numeric(df["score"], errors="coerce")
    df["flagged"] = ((df["status"] == "accepted") & (scores >= plan["threshold"])).astype(int)
    csv = write_batch_csv(hout, df.drop(columns=["carries", "codes"]))
    read = [batch] if batch.is_file() else [*df["path"], *([batch / "labels.csv"] if labelled else [])]
    deps = [record_path(out, PLAN), test_file, *device.record_files(), *read]
    record = write_record(hout, RECORD, data=data, params=p, deps=deps, outs=[csv],
                          synthetic=bool(plan_record["synthetic"]))
    if render:
        render_report(hout, params_file)
    return record, final


def render_report(hout: Path, params_file) -> None:
    cmd = [sys.executable, "-m", "submission", "--out", str(hout), "--params", str(params_file), "--document", REPORT]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise MonitoringError(f"the record is written but the report failed ({' '.join(cmd[1:])}): {last}")


def main(argv: list[str] | None = None) -> int:
    result: dict = {}

    def call(a):
        result["record"] = run(a.out, a.batch, a.params, render=not a.no_report)
        return result["record"]

    code = stage_main(argv, prog="python -m validation.monitor", doc=__doc__, add_arguments=_arguments,
                      call=call, summary=_summary)
    if code == EXIT_OK and result["record"]["data"]["alerts"]:
        return EXIT_ALERT
    return code


def _arguments(parser) -> None:
    parser.add_argument("--batch", required=True,
                        help="a folder of DICOM files (optional labels.csv) or a JSON-lines file (notifications, infer output)")
    parser.add_argument("--no-report", action="store_true", help="write the record only")


def _summary(record: dict, args) -> str:
    d = record["data"]
    folder = layout.monitoring(args.out, d["batch"]["name"])
    lines = [f"alert: {c['name']}: {c['what']}: {c['measure']} {c['value']:.4g} (limit {c['limit']:.4g})"
             for c in d["checks"] if c["alert"]]
    verdict = "ALERT" if d["alerts"] else "within limits"
    return "\n".join([*lines, f"monitor: {d['batch']['n_files']} files ({d['batch']['kind']}), {verdict}"
                      f"{': ' + ', '.join(d['alerts']) if d['alerts'] else ''}; records in {folder / 'evidence'}"])


if __name__ == "__main__":
    sys.exit(main())
