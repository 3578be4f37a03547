"""Signatures with the real ssh-keygen: sign and verify, a record changed after signing, a tampered
signature or statement, an untrusted signer, a key inside OUT refused, the demo key marked as demo."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from evidence import layout, write_record
from evidence import __main__ as audit_cli
from evidence import sign as sign_cli
from evidence import signing

pytestmark = [pytest.mark.skipif(shutil.which("ssh-keygen") is None and not os.environ.get("CI"),
                                reason="needs ssh-keygen (openssh-client; CI installs it)"), pytest.mark.verifies("SRS-036")]
JANE = "Jane Roe <jane.roe@example.com>"


def _key(folder: Path, name: str = "jane") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture()
def run(tmp_path):
    out = tmp_path / "run"
    write_record(out, "submission.documents", data={"documents": ["validation_plan"]})
    return out


@pytest.fixture()
def key(tmp_path):
    return _key(tmp_path / "keys")


def _trusted(tmp_path: Path, key: Path, signer: str = JANE) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text(signing.trust_line(signing.public_key(key), signer) + "\n")
    return path


def test_signed_record_verifies_and_names_signer_role_and_time(run, key, tmp_path):
    statement = signing.sign_record(run, "submission.documents", "approver", key=key, signer=JANE)
    assert signing.signature_file(run, "submission.documents", "approver").read_text().startswith(
        "-----BEGIN SSH SIGNATURE-----")
    ledger = [json.loads(line) for line in layout.signature_ledger(run).read_text().splitlines()]
    assert ledger == [statement] and statement["principal"] == "jane.roe@example.com"
    assert statement["demo"] is False and statement["key_fingerprint"].startswith("SHA256:")
    assert statement["record_sha256"] == json.loads(layout.record(run, "submission.documents").read_text())["sha256"]
    lines, failures = signing.check(run, _trusted(tmp_path, key))
    assert failures == []
    assert lines == [f"signature: submission.documents signed by {JANE} as approver ({signing.ROLES['approver']}) "
                     f"at {statement['signed_utc']}, key {statement['key_fingerprint']}"]


def test_record_changed_after_signing_fails(run, key):
    signing.sign_record(run, "submission.documents", "author", key=key, signer=JANE)
    write_record(run, "submission.documents", data={"documents": ["changed"]})
    _, failures = signing.check(run)
    assert len(failures) == 1 and "record submission.documents changed after it was signed" in failures[0]
    assert failures[0].startswith(f"signature submission.documents.author ({JANE}, ")


def test_tampered_signature_fails(run, key):
    signing.sign_record(run, "submission.documents", "author", key=key, signer=JANE)
    sig = signing.signature_file(run, "submission.documents", "author")
    lines = sig.read_text().splitlines()
    body = lines[3]
    lines[3] = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    sig.write_text("\n".join(lines) + "\n")
    _, failures = signing.check(run)
    assert len(failures) == 1 and "the signature does not verify against its statement" in failures[0]


def test_tampered_statement_fails(run, key):
    signing.sign_record(run, "submission.documents", "author", key=key, signer=JANE)
    path = layout.signature_ledger(run)
    statement = json.loads(path.read_text())
    statement["signer"] = "John Doe <jane.roe@example.com>"
    path.write_text(json.dumps(statement) + "\n")
    _, failures = signing.check(run)
    assert len(failures) == 1 and "does not verify" in failures[0] and "John Doe" in failures[0]


def test_untrusted_signer_fails_only_with_a_trust_list(run, key, tmp_path):
    signing.sign_record(run, "submission.documents", "author", key=key, signer=JANE)
    other = _trusted(tmp_path, _key(tmp_path / "other", "mallory"))
    assert signing.check(run)[1] == []
    _, failures = signing.check(run, other)
    assert len(failures) == 1 and "signer jane.roe@example.com with key SHA256:" in failures[0]
    assert f"is not in the trusted signers file {other}" in failures[0]


def test_key_inside_the_run_folder_is_refused(run, capsys):
    inside = _key(run / "keys")
    with pytest.raises(signing.SigningError, match="inside the run folder"):
        signing.sign_record(run, "submission.documents", "author", key=inside, signer=JANE)
    code = sign_cli.main(["--out", str(run), "--record", "submission.documents", "--key", str(inside), "--signer", JANE])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "a private key must never live in OUT" in err
    assert not layout.signatures(run).exists()


def test_bad_signer_and_missing_record_are_one_line_errors(run, key, capsys):
    assert sign_cli.main(["--out", str(run), "--record", "submission.documents", "--key", str(key),
                          "--signer", "Jane"]) == 2
    assert "write it as 'Full Name <email>'" in capsys.readouterr().err
    assert sign_cli.main(["--out", str(run), "--record", "validation.plan_lock", "--key", str(key),
                          "--signer", JANE]) == 2
    assert "record validation.plan_lock: not found" in capsys.readouterr().err


def test_demo_key_lives_outside_out_and_its_signatures_say_demo(run, tmp_path, capsys):
    assert sign_cli.main(["--out", str(run), "--record", "submission.documents", "--key", "demo"]) == 0
    key = tmp_path / "config" / "cxr-510k" / "demo_signing_key"
    assert key.is_file() and not list(run.rglob("demo_signing_key*"))
    statement = json.loads(layout.signature_ledger(run).read_text())
    assert statement["demo"] is True and statement["signer"] == signing.DEMO_SIGNER and statement["role"] == "author"
    capsys.readouterr()
    assert audit_cli.main(["audit", "--out", str(run), "--no-code-check", "--partial"]) == 0
    out = capsys.readouterr().out
    assert "signature: submission.documents signed by Demo Signer" in out and "DEMO signature" in out


def test_audit_cli_fails_on_an_untrusted_or_missing_signature(run, key, tmp_path, capsys):
    assert audit_cli.main(["audit", "--out", str(run), "--no-code-check", "--partial"]) == 1
    assert "FAIL record submission.documents: field signatures: expected a signature found none" in capsys.readouterr().out
    signing.sign_record(run, "submission.documents", "reviewer", key=key, signer=JANE)
    assert audit_cli.main(["audit", "--out", str(run), "--no-code-check", "--partial", "--trusted", str(_trusted(tmp_path, key))]) == 0
    other = _trusted(tmp_path / "other", _key(tmp_path / "other", "mallory"))
    assert audit_cli.main(["audit", "--out", str(run), "--no-code-check", "--partial", "--trusted", str(other)]) == 1
    assert "is not in the trusted signers file" in capsys.readouterr().out


def test_a_signature_copied_from_another_run_fails(run, key, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)   # same record file, but a forged second run would have its own log
    layout.evidence_log(other).unlink()
    record = json.loads(layout.record(other, "submission.documents").read_text())
    write_record(other, "submission.documents", data=record["data"])
    shutil.copy(layout.record(other, "submission.documents"), layout.record(run, "submission.documents"))
    signing.sign_record(other, "submission.documents", "author", key=key, signer=JANE)
    shutil.copytree(layout.signatures(other), layout.signatures(run))
    _, failures = signing.check(run)
    assert len(failures) == 1 and "field run_id" in failures[0] and "another run" in failures[0]


def test_write_record_signs_before_the_file_so_a_stop_leaves_a_run_to_repair(tmp_path, key, monkeypatch):
    from evidence import atomic, chain

    out = tmp_path / "run"
    config = {"key": str(key), "signer": JANE, "role": "approver"}
    write_record(out, "submission.documents", data={"v": 1}, sign=config)
    assert signing.check(out) == ([signing.describe(json.loads(layout.signature_ledger(out).read_text()))], [])

    real = atomic.write_bytes

    def stopped(path, data):   # the process stops when it comes to write the record file
        if Path(path).suffix == ".json":
            raise KeyboardInterrupt
        return real(path, data)

    with monkeypatch.context() as m:
        m.setattr(atomic, "write_bytes", stopped)
        with pytest.raises(KeyboardInterrupt):
            write_record(out, "submission.documents", data={"v": 2}, sign=config)
    _, failures = signing.check(out)
    assert len(failures) == 1 and "record submission.documents changed after it was signed" in failures[0]
    assert chain.check(out)                                   # the record is not the one logged
    write_record(out, "submission.documents", data={"v": 2}, sign=config)   # what the rerun does
    assert signing.check(out)[1] == [] and chain.check(out) == []
