"""The hash-chained record log (`evidence.chain`): an honest run passes, also when copied; each kind
of tampering (edited and rehashed record, replay from another run, deleted, forged, reordered or
dropped entries) is one failure line naming the record or log line; concurrent appends keep the chain."""
from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from evidence import atomic, chain, layout, record_hash, write_record
from evidence.audit import audit

pytestmark = pytest.mark.verifies("SRS-035")


def _run(out: Path, value: int) -> Path:
    write_record(out, "cohort.manifest", data={"images": value}, synthetic=True)
    write_record(out, "split.patients", data={"n": value}, dep_records=["cohort.manifest"])
    write_record(out, "eda.quality", data={"flagged": value}, dep_records=["cohort.manifest", "split.patients"])
    return out


@pytest.fixture()
def run(tmp_path):
    return _run(tmp_path / "a", 1)


def _lines(out: Path) -> list[str]:
    return layout.evidence_log(out).read_text().splitlines(keepends=True)


def test_log_holds_a_genesis_and_one_linked_entry_per_record(run):
    entries = [json.loads(line) for line in _lines(run)]
    assert entries[0]["kind"] == "genesis" and len(entries[0]["run_id"]) == 32 and entries[0]["prev"] is None
    assert [e["record_id"] for e in entries[1:]] == ["cohort.manifest", "split.patients", "eda.quality"]
    for before, entry in zip(entries, entries[1:]):
        assert entry["prev"] == before["entry_sha256"] and entry["seq"] == before["seq"] + 1
    assert entries[3]["file_sha256"] == chain.sha256_bytes(layout.record(run, "eda.quality").read_bytes())
    assert chain.check(run) == [] and audit(run, check_code=False, complete=False) == ([], 3)


def test_an_auditors_copy_at_another_path_passes(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "elsewhere" / "copy")
    assert audit(copy, check_code=False, complete=False) == ([], 3)


def test_edited_and_rehashed_record_is_named(run):
    path = layout.record(run, "eda.quality")
    record = json.loads(path.read_text())
    record["data"]["flagged"] = 0
    record["sha256"] = record_hash(record)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    failures, _ = audit(run, check_code=False, complete=False)
    assert len(failures) == 1 and failures[0].startswith("record eda.quality: field log.file_sha256: expected")
    assert "edited and rehashed, or copied from another run" in failures[0]


def test_record_replayed_from_another_run_is_named(run, tmp_path):
    other = _run(tmp_path / "b", 2)
    shutil.copy(layout.record(other, "eda.quality"), layout.record(run, "eda.quality"))
    failures = chain.check(run)
    assert len(failures) == 1 and failures[0].startswith("record eda.quality: field log.file_sha256")


def test_log_replayed_from_another_run_fails_every_record(run, tmp_path):
    other = _run(tmp_path / "b", 2)
    shutil.copy(layout.evidence_log(other), layout.evidence_log(run))
    assert chain.run_id(run) == chain.run_id(other)
    failures = chain.check(run)
    assert len(failures) == 3 and all("field log.file_sha256" in f for f in failures)


def test_deleted_record_is_named(run):
    layout.record(run, "split.patients").unlink()
    failures = chain.check(run)
    assert failures == [f"record split.patients: field log: expected the record of entry 2 of "
                        f"{layout.evidence_log(run)} found missing record (deleted, or its write was "
                        "interrupted: rerun `make`)"]


def test_forged_extra_record_is_named(run):
    forged = json.loads(layout.record(run, "eda.quality").read_text())
    forged["id"] = "eda.pixels"
    forged["sha256"] = record_hash(forged)
    layout.record(run, "eda.pixels").write_text(json.dumps(forged))
    failures, _ = audit(run, check_code=False, complete=False)
    assert len(failures) == 1 and failures[0].startswith("record eda.pixels: field log: expected an entry")


@pytest.mark.parametrize("change", ["swap", "drop", "edit", "drop_genesis"])
def test_reordered_dropped_or_edited_entries_break_the_chain(run, change):
    lines = _lines(run)
    if change == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    elif change == "drop":
        del lines[2]
    elif change == "drop_genesis":
        del lines[0]
    else:
        entry = json.loads(lines[3])
        entry["created_utc"] = "2000-01-01T00:00:00Z"
        lines[3] = json.dumps(entry) + "\n"
    layout.evidence_log(run).write_text("".join(lines))
    failures = chain.check(run)
    assert failures and all(f.startswith(f"log {layout.evidence_log(run)}: line ") or "field log" in f for f in failures)
    expected = {"swap": "field prev", "drop": "field prev", "edit": "field entry_sha256", "drop_genesis": "genesis"}
    assert any(expected[change] in f for f in failures)


def test_a_stop_between_log_and_record_fails_the_audit_until_the_record_is_rewritten(run, monkeypatch):
    def stopped(path, data):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(atomic, "write_bytes", stopped)
        with pytest.raises(KeyboardInterrupt):
            write_record(run, "eda.quality", data={"flagged": 9}, dep_records=["cohort.manifest", "split.patients"])
    failures = chain.check(run)
    assert len(failures) == 1 and failures[0].startswith("record eda.quality: field log.file_sha256")
    write_record(run, "eda.quality", data={"flagged": 9}, dep_records=["cohort.manifest", "split.patients"])
    assert chain.check(run) == []


def test_incomplete_last_line_fails_then_is_dropped_by_the_next_append(run):
    with layout.evidence_log(run).open("a") as f:
        f.write('{"seq": 4, "record_id": "eda.pix')
    failures = chain.check(run)
    assert len(failures) == 1 and "line 5: not a log entry (incomplete last line" in failures[0]
    write_record(run, "eda.pixels", data={}, dep_records=["cohort.manifest", "split.patients"])
    assert chain.check(run) == [] and len(_lines(run)) == 5


def _append_many(out: str, worker: int, n: int) -> None:
    for i in range(n):
        record = {"id": f"eda.w{worker}", "sha256": f"{worker}-{i}", "created_utc": "2026-01-01T00:00:00Z"}
        chain.append(out, record, f"{worker} {i}".encode())


def test_concurrent_appends_keep_one_unbroken_chain(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    entries, failures = chain.read_log(tmp_path)
    assert failures == [] and chain.chain_failures(entries, layout.evidence_log(tmp_path)) == []
    assert len(entries) == 1 + 4 * 40 and sum(e.get("kind") == "genesis" for e in entries) == 1
    for w in range(4):
        assert [e["record_sha256"] for e in entries if e.get("record_id") == f"eda.w{w}"] == [f"{w}-{i}" for i in range(40)]
