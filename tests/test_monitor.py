"""Postmarket monitoring (`validation.monitor`) on the shared small demo run: DICOM batches written from
its test-split images (drawn like the test split, with lateral views, another intensity distribution,
an older age mix), the node's notifications and model.infer's output as JSON lines; the PSI against a
hand computation and the KS test against scipy."""
from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from audit_demo import copy_run, small_build
from evidence import Store, layout, sha256_file
from evidence.manifest import read_manifest, read_splits
from validation import drift, monitor

N_FILES = 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out, params = small_build(tmp_path_factory)
    return copy_run(out, tmp_path_factory.mktemp("monitor") / "build"), params


@pytest.fixture(scope="module")
def test_rows(run):
    out, _ = run
    manifest = read_manifest(layout.manifest(out), ("image_id", "path", "pneumonia", "age_years", "sex", "view",
                                                    "pixel_spacing"))
    test = read_splits(layout.splits(out))
    rows = manifest[manifest["image_id"].isin(test[test["split"] == "test"]["image_id"])]
    return rows.reset_index(drop=True)


def write_batch(folder: Path, rows: pd.DataFrame, *, seed: int = 0, view=None, age=None, scale: float = 1.0,
                labels: bool = False) -> Path:
    """N_FILES DICOM files drawn with replacement from `rows` (the test split); `view`, `age` and `scale`
    (of the pixel values) change what a shifted batch changes."""
    from PIL import Image

    from model import dicom

    rng = np.random.default_rng(seed)
    picked = rows.iloc[rng.integers(0, len(rows), N_FILES)]
    folder.mkdir(parents=True)
    lines = ["file,label"]
    for i, r in enumerate(picked.itertuples()):
        pixels = np.asarray(Image.open(r.path).convert("L"), dtype=np.float64)
        pixels = np.clip(np.round(pixels * scale), 0, 255).astype(np.uint8)
        years = r.age_years if age is None else age(rng)
        ds = dicom.build_dataset(pixels, view=((view(i) if view else None) or r.view) or None, sex=r.sex or None,
                                 age=dicom.age_string(years), patient_id=f"P{i}")
        if np.isfinite(r.pixel_spacing):
            ds.PixelSpacing = [float(r.pixel_spacing), float(r.pixel_spacing)]
        dicom.save(ds, folder / f"{i:03d}.dcm")
        lines.append(f"{i:03d}.dcm,{int(r.pneumonia)}")
    if labels:
        (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def monitor_main(out: Path, params: Path, batch: Path) -> tuple[int, str, dict | None]:
    """(exit code, stdout, the record written) of `python -m validation.monitor`, in process."""
    before = set(layout.monitoring_root(out).glob("*")) if layout.monitoring_root(out).is_dir() else set()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = monitor.main(["--out", str(out), "--params", str(params), "--batch", str(batch), "-q"])
    new = sorted(set(layout.monitoring_root(out).glob("*")) - before)
    record = Store(new[0]).get(monitor.RECORD) if new else None
    return code, buffer.getvalue(), record


def checks(record: dict) -> dict:
    return {c["name"]: c for c in record["data"]["checks"]}


# ----------------------------------------------------------------------------- statistics

def test_psi_against_a_hand_computation_and_empty_bins():
    expected, actual = [0.25, 0.25, 0.5], [0.2, 0.3, 0.5]
    by_hand = (0.2 - 0.25) * math.log(0.2 / 0.25) + (0.3 - 0.25) * math.log(0.3 / 0.25)
    assert drift.psi(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    assert drift.psi(expected, expected) == 0.0
    # a category the baseline never saw counts with the empty share, not as zero
    lateral = drift.categorical_psi({"AP": 0.5, "PA": 0.5}, {"AP": 0.25, "PA": 0.25, "LL": 0.5})
    e = drift.EMPTY_SHARE
    assert lateral == pytest.approx(2 * (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - e) * math.log(0.5 / e))
    # quantile bins: a sample split evenly between the bins has shares 1/k each
    edges = drift.quantile_edges(np.arange(100.0), 4)
    assert drift.numeric_shares(np.arange(100.0), edges) == [0.25] * 4


def test_ks_is_scipys_two_sample_test():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=60), rng.normal(0.5, size=45)
    ref = ks_2samp(a, b)
    got = drift.ks(a, b)
    assert (got["statistic"], got["p_value"]) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))


# ----------------------------------------------------------------------------- batches

@pytest.mark.slow
def test_a_batch_drawn_like_the_test_split_raises_no_alert(run, test_rows, tmp_path):
    out, params = run
    code, printed, record = monitor_main(out, params, write_batch(tmp_path / "like", test_rows, labels=True))
    assert code == 0, printed
    data = record["data"]
    assert data["alerts"] == [] and data["within_limits"] is True and "within limits" in printed
    c = checks(record)
    judged = {n for n, v in c.items() if v["judged"]}
    assert {"view_drift", "sex_drift", "age_drift", "image_mean_drift", "image_std_drift", "score_psi",
            "score_ks", "flag_rate", "rejection_rate", "sensitivity", "specificity"} <= judged
    assert not c["manufacturer_drift"]["judged"]            # no baseline in the manifest
    # the KS p-value is scipy's on the test split's scores and the batch's analysed scores
    test = pd.read_csv(layout.predictions(out, "test"))["score"]
    folder = layout.monitoring(out, data["batch"]["name"])
    batch = pd.read_csv(folder / layout.MONITORING_BATCH)
    analysed = batch[batch["status"] == "accepted"]["score"]
    assert list(batch.columns) == list(monitor.BATCH_COLUMNS) and len(batch) == N_FILES
    assert batch["flagged"].sum() == c["flag_rate"]["flagged"] == (analysed >= data["threshold"]).sum()
    assert batch["label"].notna().all()                     # labels.csv read for every file
    assert c["score_ks"]["value"] == pytest.approx(ks_2samp(test, analysed).pvalue)
    base = Store(out).get("monitoring.plan")["data"]["baseline"]["scores"]
    assert c["score_psi"]["value"] == pytest.approx(drift.psi(base["shares"], drift.numeric_shares(analysed, base["edges"])))
    assert (folder / "submission" / "monitoring_report.md").is_file()
    report = (folder / "submission" / "monitoring_report.md").read_text()
    assert "no alert" in report and "synthetic" in report.lower()
    # the same batch again: its evidence is never overwritten
    code, _, _ = monitor_main(out, params, tmp_path / "like")
    assert code == 2
    # the audit walks the batch's folder as it walks a held-out one: an edited batch.csv is named
    from evidence.audit import audit
    failures, n = audit(out, check_code=False, complete=False)
    assert failures == [] and n > len(Store(out).ids())
    original = (folder / layout.MONITORING_BATCH).read_bytes()
    (folder / layout.MONITORING_BATCH).write_bytes(original + b"999.dcm,accepted\n")
    try:
        failures, _ = audit(out, check_code=False, complete=False)
    finally:
        (folder / layout.MONITORING_BATCH).write_bytes(original)
    assert [f for f in failures if f.startswith(f"[{data['batch']['name']}] record monitoring.batch: field outs[")], failures


@pytest.mark.slow
@pytest.mark.parametrize("shift, expected", [
    ("lateral", {"view_drift", "rejection_rate"}),
    ("intensity", {"image_mean_drift"}),
    ("age", {"age_drift"}),
])
def test_a_shifted_batch_raises_the_named_alert(run, test_rows, tmp_path, shift, expected):
    out, params = run
    kwargs = {"lateral": {"view": lambda i: "LL" if i % 2 else None},
              "intensity": {"scale": 0.45},
              "age": {"age": lambda rng: float(rng.integers(88, 99))}}[shift]
    code, printed, record = monitor_main(out, params, write_batch(tmp_path / shift, test_rows, **kwargs))
    assert code == monitor.EXIT_ALERT, printed
    assert expected <= set(record["data"]["alerts"]), record["data"]["alerts"]
    for name in expected:
        assert f"alert: {name}:" in printed
    if shift == "lateral":   # the intake's reason, counted once per file
        by_reason = {r["category"]: r["n_files"] for r in checks(record)["rejection_rate"]["by_reason"]}
        assert by_reason["view missing or outside the intended use"] == N_FILES // 2
    report = (layout.monitoring(out, record["data"]["batch"]["name"]) / "submission" / "monitoring_report.md").read_text()
    assert "An alert fired" in report


@pytest.mark.slow
def test_notifications_and_infer_output_are_monitored(run, test_rows, tmp_path):
    from model import notify
    from model.infer import main as infer_main
    from model.node import triage_status
    from model.infer import classify, load_device

    out, params = run
    folder = write_batch(tmp_path / "dicom", test_rows, seed=3)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert infer_main(["--run", str(out), "--no-images", "-q", str(folder)]) == 0
    infer = tmp_path / "infer.jsonl"
    infer.write_text(buffer.getvalue())
    code, printed, record = monitor_main(out, params, infer)
    assert code == 0, printed
    c = checks(record)
    assert record["data"]["batch"]["kind"] == "infer"
    assert c["view_drift"]["judged"] and c["score_ks"]["judged"] and not c["image_mean_drift"]["judged"]

    device = load_device(out, params)
    notes = [notify.notification(study_uid=None, sop_instance_uid=f"1.2.{i}", status=triage_status(r),
                                 probability=r["probability"], reasons=r["reasons"], received=0.0, notified=1.0,
                                 threshold=device.threshold, model_sha256=device.model_sha256)
             for i, r in enumerate(classify(sorted(folder.glob("*.dcm")), device))]
    node = tmp_path / "node" / "notifications.jsonl"
    node.parent.mkdir()
    node.write_text("".join(json.dumps(n, sort_keys=True) + "\n" for n in notes))
    code, printed, record = monitor_main(out, params, node)
    assert code == 0, printed
    c = checks(record)
    assert record["data"]["batch"]["kind"] == "notifications"
    assert not c["view_drift"]["judged"] and "does not carry" in c["view_drift"]["reason"]
    assert c["score_ks"]["judged"] and c["flag_rate"]["judged"] and c["rejection_rate"]["judged"]
    # the same scores as the infer output: the same score test
    from_infer = Store(layout.monitoring(out, f"infer-{sha256_file(infer)[:12]}")).get(monitor.RECORD)
    assert c["score_ks"]["value"] == pytest.approx(checks(from_infer)["score_ks"]["value"])


def test_bad_batch_input_is_one_error_line(run, tmp_path, capsys):
    out, params = run
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert monitor.main(["--out", str(out), "--params", str(params), "--batch", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert "error: --batch" in err and "line 1 is not JSON" in err
    assert not any(p.name.startswith("bad") for p in layout.monitoring_root(out).glob("*"))


@pytest.mark.slow
def test_the_report_and_the_plan_render_as_pdfs_with_traced_numbers(run, test_rows, tmp_path):
    """The batch report and the monitoring plan as PDFs; submission.check finds every number traced."""
    import yaml
    from pypdf import PdfReader

    from submission.__main__ import main as submission_main
    from submission.check import check

    out, params = run
    with_pdf = yaml.safe_load(Path(params).read_text())
    with_pdf["submission"]["pdf"] = True
    pdf_params = tmp_path / "params.yaml"
    pdf_params.write_text(yaml.safe_dump(with_pdf, sort_keys=False))
    code, printed, record = monitor_main(out, pdf_params, write_batch(tmp_path / "pdf", test_rows, seed=5,
                                                                        view=lambda i: "LL" if i % 3 == 0 else None))
    assert code == monitor.EXIT_ALERT, printed
    folder = layout.monitoring(out, record["data"]["batch"]["name"])
    assert check(folder) == []
    text = " ".join(p.extract_text() or "" for p in PdfReader(folder / "submission" / "monitoring_report.pdf").pages)
    assert "Postmarket Monitoring Batch Report" in text and "An alert fired" in text
    traces = json.loads((folder / "submission" / "traceability.json").read_text())["documents"]["monitoring_report"]
    assert {t["record_id"] for t in traces["traces"] if t["numeric"]} <= {monitor.RECORD, "submission/data/device.yml"}

    plan = copy_run(out, tmp_path / "plan-run")
    shutil.rmtree(layout.monitoring_root(plan))
    assert submission_main(["--out", str(plan), "--params", str(pdf_params), "--document", "monitoring_plan", "-q"]) == 0
    text = " ".join(p.extract_text() or "" for p in PdfReader(layout.submission(plan) / "monitoring_plan.pdf").pages)
    assert "Alert limits" in text and "Who is told" in text
    traces = json.loads(layout.traceability(plan).read_text())["documents"]["monitoring_plan"]["traces"]
    assert any(t["record_id"] == "monitoring.plan" and t["numeric"] for t in traces)


@pytest.mark.parametrize("value", ["my batch; touch {p}", "x $(shell touch {p})", "x `touch {p}`", "-odd name.jsonl"])
def test_make_monitor_passes_batch_as_data(tmp_path, value):
    from test_make_quoting import run_make

    witness = tmp_path / "P"
    proc, argv = run_make(tmp_path, "monitor", BATCH=value.format(p=witness))
    assert not witness.exists(), proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert argv[:2] == ["-m", "validation.monitor"] and f"--batch={value.format(p=witness)}" in argv
    proc, argv = run_make(tmp_path / "none", "monitor")
    assert proc.returncode != 0 and argv is None and "error: set BATCH=" in proc.stderr


def test_the_code_defaults_are_params_yaml_and_obey_the_schema():
    import yaml

    from evidence.params import check
    from validation.monitoring_plan import DEFAULTS

    check({"monitoring": DEFAULTS})
    repo = Path(__file__).resolve().parent.parent
    assert yaml.safe_load((repo / "params.yaml").read_text())["monitoring"] == DEFAULTS
