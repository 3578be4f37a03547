"""Time-to-notification of the device as a DICOM node, measured over the loopback network.

    python -m validation.latency --out OUT --params PARAMS

The node (`model.node`, the locked device of OUT) is started on a free loopback port with a
receiving PACS; every file of the workflow's DICOM set (record `workflow.dicom`) is sent `repeats`
times, each time as a new study (new Study, Series and SOP Instance UIDs, prepared before the clock
starts), one association per study, one at a time (the next when the previous notification is
out; params `latency.load: burst`: no pause, so that studies queue), by a real DICOM sender: dcmtk `storescu` (receiver dcmtk `storescp`) when installed, else pynetdicom's SCU (receiver
a pynetdicom Storage SCP) (params `latency.peers`). The stage waits for every notification and
for every result delivered to the receiver.

Per study: seconds from receipt (the node's C-STORE handler has the complete data set, before it is
queued) to notification (the decision journaled and its line fsynced in notifications.jsonl).
Median and 95th percentile with percentile-bootstrap intervals over studies; throughput = studies
/ (last notification - first receipt). Record `workflow.latency`.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evidence import Store, write_record
from evidence.cli import stage_main
from evidence.errors import ToolkitError
from evidence.params import section

from .stats import bootstrap_quantile

RECORD = "workflow.latency"
NODE_AET, RECEIVER_AET, SENDER_AET = "PNEUMO_TRIAGE", "LATENCY_PACS", "LATENCY_MODALITY"
PEERS = ("auto", "dcmtk", "pynetdicom")
LOADS = {
    "one_at_a_time": "one study at a time: the next is sent when the previous one's notification is out, "
                     "one association per study",
    "burst": "studies sent one after another with no pause, one association per study (they queue)",
}
DEFAULTS = {"repeats": 5, "peers": "auto", "load": "one_at_a_time", "ci_level": 0.95, "bootstrap_resamples": 2000, "bootstrap_seed": 0,
            "timeout_s": 300}


class LatencyError(ToolkitError, RuntimeError):
    pass


def wait_for(condition, timeout: float, step: float = 0.02) -> bool:
    """Poll `condition` every `step` seconds until it holds or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def dcmtk_version(tool: str) -> str:
    run = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
    found = re.search(r"v(\d+\.\d+\.\d+)", run.stdout + run.stderr)
    return found.group(1) if found else "unknown"


def choose_peers(choice: str) -> str:
    have = all(shutil.which(t) for t in ("storescu", "storescp"))
    if choice == "dcmtk" and not have:
        raise LatencyError("params latency.peers is dcmtk but storescu/storescp are not installed "
                           "(apt-get install dcmtk, or set peers: auto)")
    return "dcmtk" if have and choice != "pynetdicom" else "pynetdicom"


class Peers:
    """The sender (the modality) and the receiver (the PACS) around the node."""

    def __init__(self, kind: str, folder: Path):
        import pynetdicom

        self.kind, self.folder, self.port, self.proc, self.server = kind, folder, free_port(), None, None
        if kind == "dcmtk":
            version = dcmtk_version("storescu")
            self.sender = {"software": "dcmtk storescu", "version": version}
            self.receiver = {"software": "dcmtk storescp", "version": dcmtk_version("storescp")}
        else:
            self.sender = {"software": "pynetdicom SCU", "version": pynetdicom.__version__}
            self.receiver = {"software": "pynetdicom Storage SCP", "version": pynetdicom.__version__}

    def start(self) -> None:
        if self.kind == "dcmtk":
            (self.folder / "received").mkdir()
            self.proc = subprocess.Popen(["storescp", "--aetitle", RECEIVER_AET, "--output-directory",
                                          str(self.folder / "received"), str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not wait_for(lambda: _listening(self.port), 30, 0.1):
                raise LatencyError(f"storescp did not listen on 127.0.0.1:{self.port}")
            return
        from pynetdicom import AE, evt
        from model.pacs import RESULT_SOP_CLASSES

        ae = AE(ae_title=RECEIVER_AET)
        for sop_class in RESULT_SOP_CLASSES:
            ae.add_supported_context(sop_class)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,   # acknowledges and discards
                                      evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])

    def send(self, path: Path, port: int) -> None:
        if self.kind == "dcmtk":
            run = subprocess.run(["storescu", "-aet", SENDER_AET, "-aec", NODE_AET, "-to", "30",
                                  "127.0.0.1", str(port), str(path)], capture_output=True, text=True, timeout=60)
            if run.returncode != 0:
                raise LatencyError(f"storescu could not send {path.name}: {(run.stdout + run.stderr).strip()[:300]}")
            return
        from pydicom import dcmread
        from pynetdicom import AE

        ds = dcmread(path)
        ae = AE(ae_title=SENDER_AET)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
        if not assoc.is_established:
            raise LatencyError(f"the node refused the association for {path.name}")
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        if getattr(status, "Status", None) != 0:
            raise LatencyError(f"the node answered {path.name} with status {getattr(status, 'Status', None)}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.server is not None:
            self.server.shutdown()


def prepare(files: list[Path], repeats: int, folder: Path) -> list[tuple[Path, Path]]:
    """(copy, original): each file `repeats` times, each copy a new study."""
    import pydicom
    from pydicom.uid import generate_uid

    from model.dicom import save

    copies = []
    for r in range(repeats):
        for i, source in enumerate(files):
            ds = copy.deepcopy(pydicom.dcmread(source))
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            copies.append((save(ds, folder / f"{r:03d}_{i:03d}.dcm"), source))
    return copies


def run(out: str | Path, params: dict) -> dict:
    from model.infer import load_device
    from model.node import Node
    from model.pacs import Peer
    from model.node_queue import NodeState
    import pynetdicom

    out = Path(out)
    p = {**DEFAULTS, **(params or {})}
    store = Store(out)
    workflow = store.get("workflow.dicom")
    files = [out / f["file"] for f in workflow["data"]["files"]]
    origin = {out / f["file"]: f["origin"] for f in workflow["data"]["files"]}
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise LatencyError(f"workflow files missing: {', '.join(missing[:3])} (rerun `make workflow`)")
    device = load_device(out)
    kind = choose_peers(p["peers"])
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        tmp = Path(tmp)
        (tmp / "send").mkdir()
        copies = prepare(files, int(p["repeats"]), tmp / "send")
        peers = Peers(kind, tmp)
        peers.start()
        node = Node(out, device, state_dir=tmp / "node", listen=("127.0.0.1", 0), aet=NODE_AET,
                    pacs=Peer("127.0.0.1", peers.port, RECEIVER_AET), first_backoff_s=0.2)
        node.start()
        state: NodeState = node.state
        try:
            for i, (path, _) in enumerate(copies, 1):
                peers.send(path, node.listen[1])
                if p["load"] == "one_at_a_time" and not wait_for(lambda: len(state.notified()) >= i,
                                                              float(p["timeout_s"])):
                    break
            done = wait_for(lambda: len(state.notified()) >= len(copies), float(p["timeout_s"]))
            delivered = done and wait_for(lambda: not state.undelivered(), float(p["timeout_s"]))
        finally:
            node.stop()
            peers.stop()
        if not done:
            raise LatencyError(f"{len(state.notified())} of {len(copies)} studies notified within "
                               f"{p['timeout_s']} s (params latency.timeout_s)")
        notes = {n["sop_instance_uid"]: n for n in map(json.loads, state.log.read_text().splitlines())}
        sops = [pydicom_uid(path) for path, _ in copies]
    return _write(out, p, copies, sops, notes, origin, peers, delivered, device, pynetdicom.__version__, files)


def pydicom_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _write(out, p, copies, sops, notes, origin, peers, delivered, device, pynetdicom_version, files):
    from datetime import datetime

    rows = []
    for (path, source), sop in zip(copies, sops):
        n = notes[sop]
        rows.append({"file": source.relative_to(out).as_posix(), "origin": origin[source], "status": n["status"],
                     "seconds": n["seconds"], "received_utc": n["received_utc"], "notified_utc": n["notified_utc"]})
    seconds = np.array([r["seconds"] for r in rows])
    analyzed = np.array([r["seconds"] for r in rows if r["status"] in ("flagged", "not_flagged")])
    stats = dict(n_resamples=int(p["bootstrap_resamples"]), level=float(p["ci_level"]), seed=int(p["bootstrap_seed"]))
    first = min(datetime.fromisoformat(r["received_utc"]) for r in rows)
    last = max(datetime.fromisoformat(r["notified_utc"]) for r in rows)
    span = (last - first).total_seconds()
    data = {
        "n_studies": len(rows), "n_files": len(files), "repeats": int(p["repeats"]),
        "statuses": {s: sum(r["status"] == s for r in rows) for s in ("flagged", "not_flagged", "rejected", "error")},
        "median_seconds": bootstrap_quantile(seconds, 0.5, **stats),
        "p95_seconds": bootstrap_quantile(seconds, 0.95, **stats),
        "analyzed": {"n": len(analyzed), "median_seconds": bootstrap_quantile(analyzed, 0.5, **stats),
                     "p95_seconds": bootstrap_quantile(analyzed, 0.95, **stats)},
        "mean_seconds": float(seconds.mean()), "max_seconds": float(seconds.max()),
        "throughput_per_minute": len(rows) / span * 60 if span > 0 else {"estimable": False, "reason": "zero span"},
        "all_results_delivered": bool(delivered),
        "sender": peers.sender, "receiver": peers.receiver,
        "node": {"software": "model.node (pynetdicom Storage SCP and SCU)", "pynetdicom": pynetdicom_version,
                 "aet": NODE_AET, "network": "loopback (127.0.0.1)"},
        "platform": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "measurement": {
            "start": "the node's C-STORE handler has received the complete data set (before it is queued on disk)",
            "end": "the decision is journaled and the notification line is fsynced in notifications.jsonl",
            "load": LOADS[p["load"]],
        },
        "threshold": device.threshold, "model_sha256": device.model_sha256,
        "studies": rows,
    }
    return write_record(out, RECORD, data=data, params=p, deps=files,
                        dep_records=["workflow.dicom", "training.run", "validation.threshold"])


def _summary(record, _args) -> str:
    d = record["data"]
    med, p95 = d["median_seconds"], d["p95_seconds"]
    fmt = lambda e: f"{e['estimate']:.2f} s ({e['ci_low']:.2f}-{e['ci_high']:.2f})" if "estimate" in e else "n/a"  # noqa: E731
    rate = d["throughput_per_minute"]
    rate = f"{rate:.0f} studies/min" if isinstance(rate, float) else "throughput n/a"
    return (f"workflow.latency: {d['n_studies']} studies via {d['sender']['software']}: time to notification "
            f"median {fmt(med)}, p95 {fmt(p95)} (analyzed studies: median {fmt(d['analyzed']['median_seconds'])}), {rate}")


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, prog="python -m validation.latency", doc=__doc__,
                      call=lambda a: run(a.out, section(a.params, "latency")), summary=_summary)


if __name__ == "__main__":
    sys.exit(main())
