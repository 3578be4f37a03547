"""Benchmark: the device as a DICOM node versus `model.infer` on the same files, in one run.

Baseline: `model.infer.classify` one file at a time (batch size 1) with the clinician image, the
work `python -m model.infer` does per study. Node: `model.node` on loopback with a pynetdicom PACS;
each study sent by a pynetdicom SCU (one association) and its notification awaited before the
next is sent (time per study = receipt to notification, plus the send), then all studies sent at
once (throughput in studies per minute). Files: DICOMs of the real 1024x1024 NIH images. Model:
the locked one in `build/` when present, else params.yaml's architecture untrained (timing only).
Goal: node time per study <= 1.3x inference time per study.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.inference import _model_and_spec, _write_files

GOAL_RATIO = 1.3


def main(n_studies: int = 48, out: str | Path = "build") -> dict:
    import pydicom
    from pydicom.uid import generate_uid
    from pynetdicom import AE, evt

    from model import dicom
    from model.infer import LockedDevice, classify
    from model.node import Node, Peer
    from model.pacs import RESULT_SOP_CLASSES

    model, spec, name = _model_and_spec(Path(out))
    device = LockedDevice(model, spec, 0.5, "timing only", Path(name), Path(out), dicom.rules_from(None))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = _write_files(tmp / "files", n_studies)
        list(classify(files[:2], device, image_dir=tmp / "warm", batch_size=1))           # warm-up
        start = time.perf_counter()
        for f in files:
            list(classify([f], device, image_dir=tmp / "infer", batch_size=1, workers=1))
        infer_s = (time.perf_counter() - start) / len(files)

        pacs_ae = AE(ae_title="BENCH_PACS")
        for sop_class in RESULT_SOP_CLASSES:
            pacs_ae.add_supported_context(sop_class)
        pacs = pacs_ae.start_server(("127.0.0.1", 0), block=False,
                                    evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
        node = Node(Path(out), device, state_dir=tmp / "node", listen=("127.0.0.1", 0),
                    pacs=Peer("127.0.0.1", pacs.server_address[1], "BENCH_PACS"))
        node.start()
        sender = AE(ae_title="BENCH_MODALITY")
        sender.add_requested_context("1.2.840.10008.5.1.4.1.1.1.1")
        datasets = [pydicom.dcmread(f) for f in files]

        def send(ds) -> None:
            ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            assoc = sender.associate("127.0.0.1", node.listen[1], ae_title=node.aet)
            assoc.send_c_store(ds)
            assoc.release()

        try:
            send(datasets[0])                                                             # warm-up
            node.wait_idle(120)
            before = len(node.state.notified())
            start = time.perf_counter()
            for ds in datasets:
                send(ds)
                node.wait_idle(120)
            node_s = (time.perf_counter() - start) / len(datasets)
            one_at_a_time = _seconds(node, before)
            before = len(node.state.notified())
            start = time.perf_counter()
            for ds in datasets:
                send(ds)
            node.wait_idle(600)
            burst_min = (time.perf_counter() - start) / 60
            burst = _seconds(node, before)
        finally:
            node.stop()
            pacs.shutdown()
    ratio = node_s / infer_s
    result = {
        "model": name, "studies": n_studies,
        "infer_seconds_per_study": round(infer_s, 4), "node_seconds_per_study": round(node_s, 4),
        "infer_studies_per_minute": round(60 / infer_s, 1), "node_studies_per_minute": round(60 / node_s, 1),
        "overhead_ratio": round(ratio, 3), "goal_ratio": GOAL_RATIO, "meets_goal": bool(ratio <= GOAL_RATIO),
        "time_to_notification_one_at_a_time": one_at_a_time,
        "burst_studies_per_minute": round(n_studies / burst_min, 1),
        "time_to_notification_burst": burst,
    }
    print(f"model.infer (batch 1, clinician image): {result['infer_studies_per_minute']} studies/min; "
          f"node (one study at a time, results to the PACS): {result['node_studies_per_minute']} studies/min; "
          f"ratio {ratio:.2f} (goal <= {GOAL_RATIO})")
    print(f"time to notification, one at a time: median {one_at_a_time['median']:.3f} s, p95 {one_at_a_time['p95']:.3f} s; "
          f"burst of {n_studies}: {result['burst_studies_per_minute']} studies/min, median {burst['median']:.3f} s, "
          f"p95 {burst['p95']:.3f} s")
    return result


def _seconds(node, skip: int) -> dict:
    import json

    lines = node.state.log.read_text().splitlines()[skip:]
    s = np.array([json.loads(line)["seconds"] for line in lines])
    return {"n": len(s), "median": round(float(np.median(s)), 4), "p95": round(float(np.quantile(s, 0.95)), 4)}
