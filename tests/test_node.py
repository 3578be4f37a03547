"""model.node with pynetdicom peers on loopback: C-ECHO, store -> notification -> SC and SR in the
PACS, rejected and refused inputs, a PACS that is down, a worklist receiver, kill -9 and restart."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from node_helpers import (SC, SR, Pacs, free_port, instance, notifications, require_tool, send,  # noqa: E402
                          start_node, wait_for)
from test_infer import make_device  # noqa: E402

from model import node as node_mod  # noqa: E402
from model.node_queue import NodeState  # noqa: E402


@pytest.fixture(scope="module")
def device_out(tmp_path_factory):
    return make_device(tmp_path_factory.mktemp("node_run"))


@pytest.fixture(scope="module")
def device(device_out):
    from model.infer import load_device

    return load_device(device_out)


class Worklist(BaseHTTPRequestHandler):
    got: list = []

    def do_POST(self):  # noqa: N802
        Worklist.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _sr_values(sr) -> dict:
    """{concept meaning: value} of the SR's content items (text, number)."""
    values = {}
    for item in sr.ContentSequence:
        meaning = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "NUM":
            values[meaning] = float(item.MeasuredValueSequence[0].NumericValue)
        else:
            values.setdefault(meaning, []).append(item.TextValue)
    return values


@pytest.mark.verifies("SRS-019", "SRS-028")
def test_store_notify_and_results_in_the_pacs(device_out, device, tmp_path):
    pacs = Pacs()
    worklist = HTTPServer(("127.0.0.1", 0), Worklist)
    threading.Thread(target=worklist.serve_forever, daemon=True).start()
    Worklist.got.clear()
    node = node_mod.Node(device_out, device, state_dir=tmp_path / "node", listen=("127.0.0.1", 0),
                         pacs=node_mod.Peer("127.0.0.1", pacs.port, pacs.aet),
                         worklist_url=f"http://127.0.0.1:{worklist.server_port}/notify")
    node.start()
    try:
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title="TEST_MODALITY")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.listen[1], ae_title=node.aet)
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()

        valid = [instance(i) for i in range(4)]
        ct = instance(9, modality="CT")
        # four associations at once, one instance each, then the CT
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda d: send(node.listen[1], [d])[0], valid))
        assert statuses == [0] * 4 and send(node.listen[1], [ct]) == [0]
        assert node.wait_idle(60)
        notes = {n["sop_instance_uid"]: n for n in notifications(node.state.log)}
        assert set(notes) == {str(d.SOPInstanceUID) for d in [*valid, ct]}
        for d in valid:
            n = notes[str(d.SOPInstanceUID)]
            assert n["study_uid"] == d.StudyInstanceUID and n["reasons"] == []
            assert n["status"] == ("flagged" if n["probability"] >= device.threshold else "not_flagged")
            assert n["seconds"] >= 0 and n["notified_utc"] >= n["received_utc"]
        bad = notes[str(ct.SOPInstanceUID)]
        assert bad["status"] == "rejected" and bad["probability"] is None
        assert any(r.startswith("Modality CT") for r in bad["reasons"])
        assert sorted(n["sop_instance_uid"] for n in Worklist.got) == sorted(notes)

        scs, srs = pacs.of_class(SC), pacs.of_class(SR)
        assert len(scs) == 4 and len(srs) == 5
        by_study = {str(d.StudyInstanceUID): d for d in [*valid, ct]}
        for obj in scs + srs:
            source = by_study[str(obj.StudyInstanceUID)]
            assert obj.PatientID == source.PatientID and obj.SeriesInstanceUID != source.SeriesInstanceUID
        for sr in srs:
            source = by_study[str(sr.StudyInstanceUID)]
            n = notes[str(source.SOPInstanceUID)]
            values = _sr_values(sr)
            assert values["Triage status"] == [n["status"]]
            assert values["Algorithm Version"][0].endswith(f"threshold {device.threshold:.6f}")
            if n["probability"] is None:
                assert "Pneumonia probability" not in values
                assert values["Reason not analyzed"] == n["reasons"]
            else:
                assert values["Pneumonia probability"] == pytest.approx(n["probability"])
        assert all(sc.PhotometricInterpretation == "RGB" and sc.Rows > 100 for sc in scs)

        # the same instance again: acknowledged, not processed twice
        assert send(node.listen[1], [valid[0]]) == [0]
        assert node.wait_idle(30) and len(notifications(node.state.log)) == 5
    finally:
        node.stop()
        pacs.stop()
        worklist.shutdown()
    dciodvfy = require_tool("dciodvfy")
    for obj, name in ((scs[0], "sc.dcm"), (srs[0], "sr.dcm")):
        obj.save_as(tmp_path / name, enforce_file_format=True)
        check = subprocess.run([dciodvfy, str(tmp_path / name)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{name}: {errors}"


@pytest.mark.verifies("SRS-019")
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_refused_and_malformed_inputs_do_not_stop_the_node(device_out, device, tmp_path):
    from pynetdicom import AE

    node = node_mod.Node(device_out, device, state_dir=tmp_path / "node", listen=("127.0.0.1", 0),
                         max_bytes=20_000)
    node.start()
    try:
        port = node.listen[1]
        ae = AE(ae_title="TEST_MODALITY")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")   # CT Image Storage: not offered
        ae.add_requested_context(SC)                              # the node's own output: not analyzed
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1.1")   # DX for presentation: analyzed
        assoc = ae.associate("127.0.0.1", port, ae_title=node.aet)
        assert assoc.is_established
        assert [c.abstract_syntax for c in assoc.accepted_contexts] == ["1.2.840.10008.5.1.4.1.1.1.1"]
        with pytest.raises(ValueError, match="No presentation context"):
            assoc.send_c_store(instance(0, SOPClassUID="1.2.840.10008.5.1.4.1.1.2"))
        assoc.release()

        no_pixels = instance(1)
        del no_pixels.PixelData
        wrong_size = instance(2)
        wrong_size.Rows = 4096                                    # Rows x Columns disagree with the pixels
        big = instance(3)
        big.PixelData = bytes(40_000)
        big.Rows = big.Columns = 200
        bad_uid = instance(4)
        bad_uid.SOPInstanceUID = "not-a-uid"
        statuses = send(port, [no_pixels, wrong_size, big, bad_uid, instance(5)])
        assert statuses == [0, 0, node_mod.OUT_OF_RESOURCES, node_mod.CANNOT_UNDERSTAND, 0]
        assert node.wait_idle(60)
        notes = {n["sop_instance_uid"]: n for n in notifications(node.state.log)}
        assert notes[str(no_pixels.SOPInstanceUID)]["status"] == "rejected"
        assert any("no Pixel Data" in r for r in notes[str(no_pixels.SOPInstanceUID)]["reasons"])
        assert notes[str(wrong_size.SOPInstanceUID)]["status"] == "rejected"
        assert str(big.SOPInstanceUID) not in notes and len(notes) == 3
        assert node.worker.is_alive()
    finally:
        node.stop()


@pytest.mark.verifies("SRS-019")
def test_pacs_down_then_up_delivers_after_retries(device_out, device, tmp_path):
    port = free_port()
    node = node_mod.Node(device_out, device, state_dir=tmp_path / "node", listen=("127.0.0.1", 0),
                         pacs=node_mod.Peer("127.0.0.1", port, "TEST_PACS"), first_backoff_s=0.2)
    node.start()
    pacs = None
    try:
        d = instance(7)
        assert send(node.listen[1], [d]) == [0]
        assert wait_for(lambda: len(notifications(node.state.log)) == 1, 60)
        assert wait_for(lambda: node.sender.failures >= 2, 30)
        assert node.state.undelivered(), "results wait in the outbox while the PACS is down"
        pacs = Pacs(port)
        assert wait_for(lambda: not node.state.undelivered(), 60)
        assert [str(o.StudyInstanceUID) for o in pacs.received] == [str(d.StudyInstanceUID)] * 2
    finally:
        node.stop()
        if pacs:
            pacs.stop()


@pytest.mark.verifies("SRS-019")
def test_a_refused_object_does_not_hold_back_the_others(device_out, device, tmp_path):
    pacs = Pacs(refuse=(SC,))
    node = node_mod.Node(device_out, device, state_dir=tmp_path / "node", listen=("127.0.0.1", 0),
                         pacs=node_mod.Peer("127.0.0.1", pacs.port, pacs.aet), first_backoff_s=0.2)
    node.start()
    try:
        assert send(node.listen[1], [instance(11), instance(12)]) == [0, 0]
        assert wait_for(lambda: len(pacs.of_class(SR)) == 2, 60)
        assert wait_for(lambda: node.sender.failures >= 2, 30)
        assert sorted(p.name for p in node.state.outbox.rglob("*.dcm")) == ["sc.dcm", "sc.dcm"]
    finally:
        node.stop()
        pacs.stop()


@pytest.mark.verifies("SRS-018")
def test_recover_finishes_a_half_done_state(tmp_path):
    state = NodeState(tmp_path / "node")
    note = {"sop_instance_uid": "1.2.3", "status": "flagged"}
    (state.done / "1.2.3.json").write_text(json.dumps(note))            # journaled, not yet notified
    state.enqueue("1.2.3", b"x", {"received_utc": 0})                     # and still queued
    state.enqueue("1.2.4", b"y", {"received_utc": 0})                     # received, not processed
    state.log.write_text('{"sop_instance_uid": "1.2.0"}\n{"sop_inst')   # a torn last line
    assert state.recover() == {"notifications_repaired": 1, "queued_already_done": 1, "queued": 1, "outbox": 0}
    assert [n.get("sop_instance_uid") for n in map(json.loads, state.log.read_text().splitlines()[::2])] == ["1.2.0", "1.2.3"]
    assert state.recover()["notifications_repaired"] == 0
    assert [p.stem for p in state.queue.glob("*.dcm")] == ["1.2.4"]


@pytest.mark.verifies("SRS-018")
def test_kill_9_and_restart_lose_nothing_and_repeat_nothing(device_out, tmp_path):
    pacs = Pacs()
    port = free_port()
    log = device_out / "node" / "notifications.jsonl"
    first = [instance(100 + i) for i in range(6)]
    later = [instance(200 + i) for i in range(2)]
    proc = start_node(device_out, port, pacs.port)
    try:
        assert send(port, first) == [0] * 6
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc = start_node(device_out, port, pacs.port)
        assert send(port, first + later) == [0] * 8           # the sender repeats what it had sent
        expected = {str(d.SOPInstanceUID) for d in first + later}
        assert wait_for(lambda: {n["sop_instance_uid"] for n in notifications(log)} >= expected, 90)
        assert wait_for(lambda: len(pacs.of_class(SR)) >= 8 and not any((device_out / "node" / "outbox").iterdir()), 60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0 and "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        pacs.stop()
    sops = [n["sop_instance_uid"] for n in notifications(log)]
    assert sorted(sops) == sorted(expected), "every instance notified exactly once"
    # a result sent again after the restart has the same SOPInstanceUID: the PACS replaces it
    srs = {str(o.SOPInstanceUID): str(o.StudyInstanceUID) for o in pacs.of_class(SR)}
    assert sorted(srs.values()) == sorted(str(d.StudyInstanceUID) for d in first + later)
    assert list((device_out / "node" / "queue").glob("*.dcm")) == []


@pytest.mark.parametrize("args, message", [
    (["--pacs", "pacs-without-port", "--pacs-aet", "PACS"], "--pacs 'pacs-without-port' is not HOST:PORT"),
    (["--pacs", "127.0.0.1:104", "--pacs-aet", "A_TITLE_LONGER_THAN_16"], "is not an AE title"),
])
def test_bad_configuration_is_one_line_error(tmp_path, capsys, args, message):
    assert node_mod.main(["--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.verifies("SRS-017")
def test_a_model_that_changed_after_training_is_refused_at_start_up(device_out, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(device_out, out, ignore=shutil.ignore_patterns("node"))
    with open(out / "models" / "model.keras", "ab") as f:
        f.write(b"x")
    assert node_mod.main(["--out", str(out), "--pacs", "127.0.0.1:104", "--pacs-aet", "PACS"]) == 2
    assert "does not match the sha256 recorded by training.run" in capsys.readouterr().err


def test_associations_beyond_the_limit_are_rejected_and_the_node_goes_on(device_out, device, tmp_path):
    """A peer that opens more simultaneous associations than the node's limit gets a rejection
    (the library's local-limit rejection), not a hung or dead node: once the first is released, a
    new association is accepted and verified."""
    from pynetdicom import AE

    node = node_mod.Node(device_out, device, state_dir=tmp_path / "node", listen=("127.0.0.1", 0),
                         max_associations=1)
    node.start()
    try:
        port = node.listen[1]
        ae = AE(ae_title="TEST_MODALITY")
        ae.add_requested_context("1.2.840.10008.1.1")              # Verification
        first = ae.associate("127.0.0.1", port, ae_title=node.aet)
        assert first.is_established
        second = ae.associate("127.0.0.1", port, ae_title=node.aet)
        assert second.is_rejected and not second.is_established
        first.release()
        opened = []                                                # the slot is freed once the release is done

        def reopened() -> bool:
            opened.append(ae.associate("127.0.0.1", port, ae_title=node.aet))
            return opened[-1].is_established
        assert wait_for(reopened, 10, step=0.2)
        assert opened[-1].send_c_echo().Status == 0
        opened[-1].release()
        assert node.worker.is_alive()
    finally:
        node.stop()
