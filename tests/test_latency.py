"""validation.latency: the workflow files through the node over loopback, record workflow.latency."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from node_helpers import instance  # noqa: E402
from test_infer import make_device  # noqa: E402

from evidence import Store, write_record  # noqa: E402
from model import dicom  # noqa: E402
from validation import latency  # noqa: E402
from validation.stats import bootstrap_quantile  # noqa: E402


def _run_with_workflow(tmp_path):
    out = make_device(tmp_path / "run")
    files = [dicom.save(instance(i), out / "workflow" / "dicom" / f"demo_{i}.dcm") for i in range(2)]
    files.append(dicom.save(instance(5, modality="CT"), out / "workflow" / "dicom" / "control_modality_ct.dcm"))
    write_record(out, "workflow.dicom", deps=files, dep_records=["training.run", "validation.threshold", "cohort.manifest"],
                 data={"checks": dict(dicom.DEFAULT_RULES), "files": [{"file": f.relative_to(out).as_posix(), "origin": "control" if "control" in f.name else "demo"}
                                 for f in files]})
    return out


@pytest.mark.parametrize("peers", ["pynetdicom", "dcmtk"])
def test_latency_record(tmp_path, peers):
    if peers == "dcmtk" and not shutil.which("storescu"):
        pytest.skip("dcmtk not installed")
    out = _run_with_workflow(tmp_path)
    record = latency.run(out, {"repeats": 3, "peers": peers, "bootstrap_resamples": 200, "timeout_s": 60})
    d = Store(out).get("workflow.latency")["data"]
    assert record["data"] == d and d["n_studies"] == 9 and d["n_files"] == 3
    assert d["statuses"]["rejected"] == 3 and d["statuses"]["flagged"] + d["statuses"]["not_flagged"] == 6
    seconds = [s["seconds"] for s in d["studies"]]
    assert all(s > 0 for s in seconds) and d["max_seconds"] == max(seconds)
    for key, q in (("median_seconds", 0.5), ("p95_seconds", 0.95)):
        e = d[key]
        assert e["estimate"] == pytest.approx(float(np.quantile(seconds, q)))
        assert e["ci_low"] <= e["estimate"] <= e["ci_high"] and e["n"] == 9
    analyzed = [s["seconds"] for s in d["studies"] if s["status"] != "rejected"]
    assert d["analyzed"]["n"] == 6
    assert d["analyzed"]["median_seconds"]["estimate"] == pytest.approx(float(np.median(analyzed)))
    assert d["all_results_delivered"] is True
    assert d["sender"]["software"] == ("dcmtk storescu" if peers == "dcmtk" else "pynetdicom SCU")
    assert [s["file"] for s in d["studies"][:3]] == [f"workflow/dicom/{n}" for n in
                                                     ("demo_0.dcm", "demo_1.dcm", "control_modality_ct.dcm")]


def test_bootstrap_quantile_interval():
    x = np.random.default_rng(1).exponential(1.0, 400)
    e = bootstrap_quantile(x, 0.5, n_resamples=500, level=0.9, seed=3)
    assert e["ci_low"] < np.log(2) < e["ci_high"] and e["ci_level"] == 0.9 and e["n"] == 400
    assert e == bootstrap_quantile(x, 0.5, n_resamples=500, level=0.9, seed=3)
    assert bootstrap_quantile([1.0], 0.5)["estimable"] is False


def test_time_to_notification_is_compared_with_the_predicates_published_figures(tmp_path):
    """The latency partial renders, beside the measured figures, each predicate's published time to
    notification from submission/data/predicate_performance.yml, with the start and end points."""
    import yaml
    from pathlib import Path

    from submission.render import Renderer
    from test_render_evidence import build_run

    repo = Path(__file__).resolve().parent.parent
    facts = yaml.safe_load((repo / "submission" / "data" / "predicate_performance.yml").read_text())["devices"]
    out = build_run(tmp_path / "run")
    templates = tmp_path / "t"
    shutil.copytree(repo / "templates" / "partials", templates / "partials")
    (templates / "one.md.j2").write_text('{% from "partials/latency.md.j2" import performance with context %}'
                                         '{{ performance() }}')
    r = Renderer(out, templates=templates).render("one")
    text = " ".join(r.plain.split())
    lat = Store(out).get("workflow.latency")["data"]
    assert f"from when {lat['measurement']['start']}, to when {lat['measurement']['end']}" in text
    assert "FDA gives no single definition" in text and "loopback" in text
    k191556, k230899 = facts["K191556"], facts["K230899"]
    ttn = k191556["time_to_notification"]
    assert f"| {k191556['name']} (K191556) | mean processing time | as published (\"processing\") | " \
           f"{ttn['mean_processing_seconds']:.1f} |" in text
    assert f"| mean total time | as published (\"total\") | {ttn['mean_total_seconds']:.1f} |" in text
    assert f"| {k230899['name']} (K230899) | mean processing time | as published (\"processing\") | " \
           f"{k230899['time_to_notification']['mean_processing_seconds']:.1f} | " \
           f"{k230899['time_to_notification']['source']}; unverified |" in text
    assert text.count("mean total time") == 1          # K230899 publishes no total: no row, no empty cell
    assert "K232410" not in text                         # no published time to notification: not listed
    assert f"| this device | median, all studies | ours, as stated above | {lat['median_seconds']['estimate']:.3f} (" in text
    from submission.check import untraced_numbers
    assert untraced_numbers(r.plain, r.traces) == []     # every figure traced, the predicates' to the facts file
    assert {f"{ttn['mean_processing_seconds']:.1f}", f"{ttn['mean_total_seconds']:.1f}"} <= \
        {t["text"] for t in r.traces if "predicate_performance" in str(t)}
