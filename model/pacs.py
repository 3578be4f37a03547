"""Delivery of result objects to the PACS by C-STORE, with retries and back-off while it is down.

A `Sender` thread sends every instance in the node's outbox (`OUT/node/outbox/<sop>/*.dcm`) in one
association, removes each one the PACS acknowledged (status 0x0000 or a warning), keeps the ones it
refused (a failure status) without holding back the others, and after a failure (no association,
a refusal, a network error) waits 1, 2, 4, ... seconds (at most
`MAX_BACKOFF_S`) before it tries again, for as long as the node runs.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from .node_queue import NodeState

MAX_BACKOFF_S = 30.0
#: What the node sends: Secondary Capture and Enhanced SR, explicit VR little endian.
RESULT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.88.22")
log = logging.getLogger("model.node")


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    aet: str

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


class Sender(threading.Thread):
    def __init__(self, state: NodeState, pacs: Peer, calling_aet: str, stop: threading.Event, *,
                 first_backoff_s: float = 1.0, timeout_s: float = 10.0):
        super().__init__(name="pacs-sender", daemon=True)
        self.state, self.pacs, self.calling_aet, self.stop = state, pacs, calling_aet, stop
        self.first_backoff_s, self.timeout_s = first_backoff_s, timeout_s
        self.wake = threading.Event()
        self.failures = 0

    def run(self) -> None:
        backoff = self.first_backoff_s
        while not self.stop.is_set():
            folders = self.state.undelivered()
            if not folders:
                self.wake.wait(0.2)
                self.wake.clear()
                continue
            try:
                self.deliver([f for folder in folders for f in sorted(folder.glob("*.dcm"))])
                backoff = self.first_backoff_s
            except Exception as e:  # the PACS is down or refused: try again later
                self.failures += 1
                log.warning("PACS %s: %s; retrying in %.0f s", self.pacs, e, backoff)
                self.stop.wait(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)

    def deliver(self, files) -> None:
        from pydicom.uid import ExplicitVRLittleEndian
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        for sop_class in RESULT_SOP_CLASSES:
            ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
        assoc = ae.associate(self.pacs.host, self.pacs.port, ae_title=self.pacs.aet)
        if not assoc.is_established:
            raise ConnectionError("association not established (PACS down, wrong address or AE title)")
        refused = []
        try:
            for path in files:
                if self.stop.is_set():
                    return
                status = assoc.send_c_store(path)
                code = getattr(status, "Status", None)
                if code is None:
                    raise ConnectionError(f"no response to the C-STORE of {path.name}")
                if code != 0 and not 0xB000 <= code <= 0xBFFF:
                    refused.append(f"{path.parent.name}/{path.name} (status 0x{code:04X})")
                    continue   # the others are still delivered; this one is tried again later
                self.state.delivered(path)
        finally:
            if assoc.is_established:
                assoc.release()
        if refused:
            raise ConnectionError(f"C-STORE refused for {len(refused)} object(s): {', '.join(refused[:3])}")
