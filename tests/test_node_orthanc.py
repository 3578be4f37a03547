"""The node in a real PACS: dcmtk `storescu` (the modality) sends 50 studies, valid and outside the
intended use (the workflow's negative controls), to `python -m model.node`, which sends its results
to an Orthanc started here on free loopback ports; the node is killed (-9) and restarted half-way.
Every valid study's SC and SR and every rejected study's SR are found in Orthanc through its REST
API in the right study, and the notification log and Orthanc agree."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from node_helpers import free_port, instance, new_uids, notifications, require_tool, start_node, wait_for  # noqa: E402
from test_infer import make_device  # noqa: E402

from model import dicom  # noqa: E402
from model.workflow import CONTROLS, write_controls  # noqa: E402

N_VALID, N_INVALID = 38, 12
ORTHANC_AET = "ORTHANC"


class Orthanc:
    """Orthanc with a generated configuration, a temporary storage folder and free loopback ports."""

    def __init__(self, folder: Path):
        binary = require_tool("Orthanc", "/usr/sbin")
        self.http, self.dicom = free_port(), free_port()
        config = {"Name": "TEST_PACS", "StorageDirectory": str(folder / "storage"),
                  "IndexDirectory": str(folder / "storage"), "HttpPort": self.http, "DicomPort": self.dicom,
                  "DicomAet": ORTHANC_AET, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
                  "Plugins": [], "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": True,
                  "StorageCompression": False, "HttpTimeout": 10}
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(folder / "orthanc.log", "w")
        self.proc = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_for(self._up, 30, 0.2):
            self.stop()
            raise AssertionError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")

    def _up(self) -> bool:
        try:
            return self.get("/system")["DicomAet"] == ORTHANC_AET
        except OSError:
            return False

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict):
        request = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    def series_modalities(self) -> dict[str, list[str]]:
        """{StudyInstanceUID: sorted modalities of its series} of everything stored."""
        found: dict[str, list[str]] = {}
        for s in self.post("/tools/find", {"Level": "Series", "Query": {}, "Expand": True}):
            study = self.get(f"/studies/{s['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"]
            found.setdefault(study, []).append(s["MainDicomTags"]["Modality"])
        return {k: sorted(v) for k, v in found.items()}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _studies(folder: Path) -> tuple[list[Path], list[Path]]:
    """N_VALID valid files and N_INVALID negative controls, each its own study with new UIDs."""
    base = dicom.save(instance(0), folder / "base.dcm")
    controls = [dicom.read_dataset(p) for p, _ in write_controls(folder / "run", base)]
    valid = [dicom.save(new_uids(instance(i)), folder / "send" / f"valid_{i:02d}.dcm") for i in range(N_VALID)]
    invalid = [dicom.save(new_uids(copy.deepcopy(controls[i % len(CONTROLS)])), folder / "send" / f"invalid_{i:02d}.dcm")
               for i in range(N_INVALID)]
    return valid, invalid


def _storescu(port: int, files: list[Path]) -> None:
    run = subprocess.run([require_tool("storescu"), "-aet", "MODALITY", "-aec", "PNEUMO_TRIAGE", "-to", "30",
                          "127.0.0.1", str(port), *map(str, files)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_fifty_studies_through_the_node_into_orthanc(tmp_path):
    require_tool("storescu")
    out = make_device(tmp_path / "device")
    valid, invalid = _studies(tmp_path)
    files = sorted(valid + invalid, key=lambda p: p.name[-6:])   # valid and invalid interleaved
    orthanc = Orthanc(tmp_path)
    port = free_port()
    node = start_node(out, port, orthanc.dicom, ORTHANC_AET)
    log = out / "node" / "notifications.jsonl"
    try:
        _storescu(port, files[:25])
        node.send_signal(signal.SIGKILL)                       # in the middle of the work
        node.wait(30)
        node = start_node(out, port, orthanc.dicom, ORTHANC_AET)
        _storescu(port, files[25:])
        assert wait_for(lambda: len(notifications(log)) >= 50, 120, 0.5), f"{len(notifications(log))} of 50 notified"
        assert wait_for(lambda: not any((out / "node" / "outbox").iterdir()), 60, 0.5)
        node.send_signal(signal.SIGTERM)
        assert node.wait(60) == 0
        stored = orthanc.series_modalities()
    finally:
        if node.poll() is None:
            node.kill()
        orthanc.stop()

    notes = notifications(log)
    by_file = {p: dicom.read_dataset(p) for p in files}
    assert sorted(n["sop_instance_uid"] for n in notes) == sorted(str(d.SOPInstanceUID) for d in by_file.values())
    assert {n["study_uid"] for n in notes} == set(stored), "the notification log and Orthanc agree"
    for path, ds in by_file.items():
        note = next(n for n in notes if n["sop_instance_uid"] == ds.SOPInstanceUID)
        assert note["study_uid"] == ds.StudyInstanceUID
        if path in valid:
            assert note["status"] in ("flagged", "not_flagged") and 0 <= note["probability"] <= 1
            assert stored[ds.StudyInstanceUID] == ["OT", "SR"], "SC and SR in the study of the input"
        else:
            assert note["status"] == "rejected" and note["reasons"]
            assert stored[ds.StudyInstanceUID] == ["SR"], "the SR carries the rejection reasons"
