"""Helpers of the node tests: a pynetdicom SCP acting as the PACS, senders, test instances."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from validation.latency import free_port, wait_for  # noqa: F401 (the tests poll and bind with these)

REPO = Path(__file__).resolve().parent.parent
SC, SR = "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.88.22"


def require_tool(name: str, also_in: str = "") -> str:
    """The path of an external tool (on PATH or in `also_in`); skip outside CI (fail in CI) when
    it is not installed."""
    path = shutil.which(name) or shutil.which(name, path=also_in or None)
    if path is None:
        message = f"{name} not installed (apt-get install orthanc dcmtk dicom3tools)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must provide it")
        pytest.skip(message)
    return path


class Pacs:
    """A Storage SCP for Secondary Capture and Enhanced SR on loopback; keeps what it received."""

    def __init__(self, port: int = 0, aet: str = "TEST_PACS", refuse: tuple[str, ...] = ()):
        from pynetdicom import AE, evt

        self.aet, self.received, self.lock, self.refuse = aet, [], threading.Lock(), refuse
        ae = AE(ae_title=aet)
        for sop_class in (SC, SR):
            ae.add_supported_context(sop_class)
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event) -> int:
        if event.request.AffectedSOPClassUID in self.refuse:
            return 0xA700
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self.lock:
            self.received.append(ds)
        return 0x0000

    def of_class(self, sop_class: str) -> list:
        with self.lock:
            return [d for d in self.received if d.SOPClassUID == sop_class]

    def stop(self) -> None:
        self.server.shutdown()


def instance(seed: int, **header):
    """A 64x64 DX chest PA radiograph of an adult, in a new study (header keywords override)."""
    from model import dicom

    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64), dtype=np.uint8)
    values = {"age": "050Y", "sex": "F", "patient_id": f"P{seed}", "patient_name": f"Test^{seed}"}
    values.update({k: v for k, v in header.items() if k in ("modality", "body_part", "view", "age")})
    ds = dicom.build_dataset(pixels, **values)
    for keyword, value in header.items():
        if keyword[0].isupper():
            setattr(ds, keyword, value)
    return ds


def send(port: int, datasets, aet: str = "PNEUMO_TRIAGE") -> list[int]:
    """C-STORE each dataset in one association; their status codes."""
    from pynetdicom import AE

    ae = AE(ae_title="TEST_MODALITY")
    for sop_class in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(d).Status) for d in datasets]
    finally:
        assoc.release()


def notifications(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_node(out: Path, port: int, pacs_port: int, pacs_aet: str = "TEST_PACS", **env) -> subprocess.Popen:
    """`python -m model.node` as a child process; returns once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "model.node", "--out", str(out), "--listen", f"127.0.0.1:{port}",
         "--pacs", f"127.0.0.1:{pacs_port}", "--pacs-aet", pacs_aet, "-q"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"model.node did not start: {line}{proc.stdout.read()}")
    return proc


def new_uids(ds):
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds
