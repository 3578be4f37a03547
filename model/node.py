"""The device as a DICOM node in the radiology network: receive radiographs, triage them with the
locked device, send the results back to the PACS and notify the worklist.

    python -m model.node --out OUT --listen HOST:PORT --aet AET --pacs HOST:PORT --pacs-aet AET
                         [--worklist-url URL] [--max-associations N] [--max-mb MB] [-v|-q]

- Storage SCP (pynetdicom) for CR Image Storage and Digital X-Ray Image Storage (For Presentation,
  For Processing), the SOP classes of the intended use, in any transfer syntax (one the pixel
  decoders cannot read is `rejected` by the intake, named); other SOP classes (Secondary Capture
  included: the device does not analyse its own output) are refused at association negotiation.
  Verification (C-ECHO) is answered.
- Each received instance is stored durably under `OUT/node/queue/` before the C-STORE response
  (`model.node_queue`); an instance whose SOPInstanceUID was already processed is acknowledged and
  not processed again. A failure status answers an instance over `--max-mb` (0xA700), with an
  unusable SOPInstanceUID (0xC210), or that cannot be stored (0xA700).
- A worker classifies the queued instances with `model.infer.classify` (the same intake, header
  checks, size limits, preprocessing, model and threshold as `python -m model.infer`), builds a
  Secondary Capture and an Enhanced SR (`model.results`), journals the decision, appends the
  notification to `OUT/node/notifications.jsonl` (`model.notify`) and POSTs it to the worklist.
- A sender (`model.pacs`) delivers the results to the PACS, retrying with back-off while it is down.
- At start-up the model and its preprocessing are checked against `training.run` and the threshold
  is read from `validation.threshold` (`model.infer.load_device`); what a stopped node left half
  done is finished (`NodeState.recover`). SIGTERM or SIGINT stops it gracefully.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from evidence import console, layout
from evidence.cli import guarded
from evidence.errors import ToolkitError

from . import dicom
from .node_queue import NodeState, valid_uid
from .notify import notification, post
from .pacs import Peer, Sender

#: The SOP classes the device analyses (CR, DX for presentation, DX for processing).
STORAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}
DEFAULT_AET, DEFAULT_MAX_ASSOCIATIONS, DEFAULT_MAX_MB = "PNEUMO_TRIAGE", 8, 256
BATCH = 16
NO_PROBABILITY = "the model returned no finite probability"
OUT_OF_RESOURCES, CANNOT_UNDERSTAND, SUCCESS = 0xA700, 0xC210, 0x0000
log = logging.getLogger("model.node")


class NodeError(ToolkitError, ValueError):
    """Bad node configuration (address, AE title)."""


def device_version(device) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        toolkit = version("cxr-510k-toolkit")
    except PackageNotFoundError:
        toolkit = "unknown"
    return f"toolkit {toolkit}; model sha256 {device.model_sha256}; threshold {device.threshold:.6f}"


class Node:
    """The running node: `start()`, then `stop()`; `idle()` when nothing is queued or undelivered."""

    def __init__(self, out: str | Path, device, *, state_dir: str | Path | None = None,
                 listen: tuple[str, int] = ("127.0.0.1", 11112), aet: str = DEFAULT_AET,
                 pacs: Peer | None = None, worklist_url: str | None = None,
                 max_associations: int = DEFAULT_MAX_ASSOCIATIONS, max_bytes: int = DEFAULT_MAX_MB << 20,
                 first_backoff_s: float = 1.0):
        self.out, self.device = Path(out), device
        self.state = NodeState(state_dir or layout.node(self.out))
        self.listen, self.aet, self.pacs, self.worklist_url = listen, aet, pacs, worklist_url
        self.max_associations, self.max_bytes = max_associations, max_bytes
        self.version = device_version(device)
        self.stopping = threading.Event()
        self.server = None
        self.worker = threading.Thread(target=self._work, name="node-worker", daemon=True)
        self.sender = Sender(self.state, pacs, aet, self.stopping, first_backoff_s=first_backoff_s) if pacs else None
        self.busy = threading.Event()

    # life cycle
    def start(self) -> dict:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
        from pynetdicom.sop_class import Verification

        recovered = self.state.recover()
        ae = AE(ae_title=self.aet)
        ae.maximum_associations = self.max_associations
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(self.listen, block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.listen = self.server.server_address[:2]
        self.worker.start()
        if self.sender:
            self.sender.start()
        return recovered

    def stop(self, timeout: float = 30.0) -> None:
        """Stop receiving, let the worker finish its batch, stop the sender. Whatever is still queued
        or undelivered stays on disk for the next start."""
        if self.server is not None:
            self.server.shutdown()
        self.stopping.set()
        self.state.wake.set()
        for thread in (self.worker, self.sender):
            if thread is not None and thread.is_alive():
                thread.join(timeout)

    def idle(self) -> bool:
        return not self.busy.is_set() and not any(self.state.queue.glob("*.dcm")) and (
            self.sender is None or not self.state.undelivered())

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.05)
        return self.idle()

    # receiving
    def _on_store(self, event) -> int:
        received = time.time()
        sop = str(event.request.AffectedSOPInstanceUID or "")
        if self.stopping.is_set():
            return OUT_OF_RESOURCES
        if not valid_uid(sop):
            log.warning("refused an instance with SOPInstanceUID %r: not a valid UID", dicom.clean_text(sop, 80))
            return CANNOT_UNDERSTAND
        size = len(event.request.DataSet.getvalue())
        if size > self.max_bytes:
            log.warning("refused %s: %d bytes, over the limit of %d", sop, size, self.max_bytes)
            return OUT_OF_RESOURCES
        if self.state.is_done(sop):
            log.info("%s was already processed: acknowledged, not processed again", sop)
            return SUCCESS
        try:
            self.state.enqueue(sop, event.encoded_dataset(include_meta=True),
                               {"received_utc": received, "calling_ae": str(event.assoc.requestor.ae_title)})
        except Exception as e:  # disk full, permissions: the sender keeps the instance and may retry
            log.error("could not store %s: %s: %s", sop, type(e).__name__, e)
            return OUT_OF_RESOURCES
        return SUCCESS

    # deciding
    def _work(self) -> None:
        while not self.stopping.is_set():
            items = self.state.pending(BATCH)
            if not items:
                self.state.wake.wait(0.2)
                self.state.wake.clear()
                continue
            self.busy.set()
            try:
                for sop, _, _ in items:
                    if self.state.is_done(sop):     # received again while it was being completed
                        self.state.dequeue(sop)
                todo = [item for item in items if not self.state.is_done(item[0])]
                if todo:
                    self.process(todo)
            except Exception:  # e.g. the disk is full: keep the queue, try again shortly
                log.exception("the worker could not complete a batch; retrying")
                self.stopping.wait(1.0)
            finally:
                self.busy.clear()

    def process(self, items: list[tuple[str, Path, dict]]) -> None:
        from .infer import classify

        work = self.state.root / "work"
        try:
            rows = list(classify([path for _, path, _ in items], self.device, image_dir=work,
                                 batch_size=len(items), workers=1))
        except Exception as e:  # a bug in the batch: every instance gets an error, none is lost
            log.exception("classification failed")
            rows = [{"status": dicom.ERROR, "reasons": [f"device error: {type(e).__name__}: {e}"],
                     "probability": None, "prediction": None, "threshold": self.device.threshold,
                     "clinician_image": None} for _ in items]
        for (sop, path, meta), row in zip(items, rows):
            try:
                self._complete(sop, path, meta, row)
            except Exception as e:
                log.exception("could not complete %s", sop)
                row = {**row, "status": dicom.ERROR, "probability": None,
                       "reasons": [*row.get("reasons", []), f"device error: {type(e).__name__}: {e}"]}
                self._complete(sop, path, meta, row, results=False)
            finally:
                if row.get("clinician_image"):
                    Path(row["clinician_image"]).unlink(missing_ok=True)

    def _complete(self, sop: str, path: Path, meta: dict, row: dict, *, results: bool = True) -> None:
        from pydicom import dcmread

        from . import results as objects

        status = triage_status(row)
        try:
            header = dcmread(path, stop_before_pixels=True)
            study = str(header.StudyInstanceUID) if valid_uid(str(header.get("StudyInstanceUID", ""))) else None
        except Exception:
            header, study = None, None
        out: dict[str, bytes] = {}
        if results and header is not None and study is not None and self.sender is not None:
            if row.get("clinician_image"):
                out["sc.dcm"] = _encode(objects.secondary_capture(row["clinician_image"], header,
                                                                  self.device.model_sha256))
            out["sr.dcm"] = _encode(objects.structured_report(header, row, status=status, device_version=self.version,
                                                              model_sha256=self.device.model_sha256))
        note = notification(study_uid=study, sop_instance_uid=sop, status=status,
                            probability=row["probability"] if status in ("flagged", "not_flagged") else None,
                            reasons=row.get("reasons") or [], received=float(meta["received_utc"]),
                            notified=time.time(), threshold=self.device.threshold,
                            model_sha256=self.device.model_sha256)
        self.state.complete(sop, note, out)
        if self.sender is not None and out:
            self.sender.wake.set()
        if self.worklist_url:
            post(self.worklist_url, note)


def triage_status(row: dict) -> str:
    """flagged | not_flagged for an analyzed image; rejected for an input outside the intended use or
    that cannot be read or decoded; error when the device itself failed."""
    if row["status"] == dicom.ACCEPTED and row.get("probability") is not None:
        return "flagged" if row["prediction"] else "not_flagged"
    reasons = row.get("reasons") or []
    if row["status"] == dicom.ERROR and (NO_PROBABILITY in reasons or any(r.startswith("device error") for r in reasons)):
        return "error"
    return "rejected"


def _encode(ds) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def address(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise NodeError(f"{what} {text!r} is not HOST:PORT (e.g. 0.0.0.0:11112)")
    return host, int(port)


def ae_title(text: str, what: str) -> str:
    if not 1 <= len(text) <= 16 or not text.isascii() or "\\" in text or not text.strip():
        raise NodeError(f"{what} {text!r} is not an AE title (1-16 ASCII characters, no backslash)")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build", help="run folder with the locked device (state in OUT/node/)")
    parser.add_argument("--listen", default="127.0.0.1:11112", help="HOST:PORT to receive on (default 127.0.0.1:11112)")
    parser.add_argument("--aet", default=DEFAULT_AET, help=f"this node's AE title (default {DEFAULT_AET})")
    parser.add_argument("--pacs", required=True, help="HOST:PORT of the PACS that receives the results")
    parser.add_argument("--pacs-aet", required=True, help="the PACS's AE title")
    parser.add_argument("--worklist-url", default=None, help="POST each notification (JSON) to this URL")
    parser.add_argument("--max-associations", type=int, default=DEFAULT_MAX_ASSOCIATIONS)
    parser.add_argument("--max-mb", type=float, default=DEFAULT_MAX_MB, help="largest instance accepted (MB)")
    console.add_arguments(parser)
    args = parser.parse_args(argv)
    command = " ".join(["python -m model.node", *(sys.argv[1:] if argv is None else argv)])

    def body() -> int:
        listen, pacs = address(args.listen, "--listen"), address(args.pacs, "--pacs")
        peer = Peer(pacs[0], pacs[1], ae_title(args.pacs_aet, "--pacs-aet"))
        with console.session(args.out, "model.node", command=command, verbose=args.verbose, quiet=args.quiet):
            from .infer import load_device

            device = load_device(args.out)
            node = Node(args.out, device, listen=listen, aet=ae_title(args.aet, "--aet"), pacs=peer,
                        worklist_url=args.worklist_url, max_associations=args.max_associations,
                        max_bytes=int(args.max_mb * (1 << 20)))
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            recovered = node.start()
            print(f"model.node: {node.aet} listening on {node.listen[0]}:{node.listen[1]}, results to {peer}; "
                  f"model sha256 {device.model_sha256[:12]}, threshold {device.threshold:.4f}, "
                  f"header checks from {device.rules_source}; recovered {recovered}", flush=True)
            while not stop.wait(0.5):
                pass
            node.stop()
            print("model.node: stopped", flush=True)
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
