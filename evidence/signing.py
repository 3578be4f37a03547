"""Electronic signatures of records, with OpenSSH (`ssh-keygen -Y sign` / `-Y verify`, Ed25519).

A signature is a named person's statement about one record: who (`signer`, `principal` = the
e-mail), in which role and with which meaning (author, reviewer, approver), when, with which key,
about which exact record file (its sha256) of which run (the log's run id). The statement's
canonical JSON is what is signed (namespace `cxr-510k-evidence`), so name, meaning and time are
bound to the record as 21 CFR 11.50/11.70 ask. The statement is appended to
`OUT/signatures/signatures.jsonl`; the signature is `OUT/signatures/<record>.<role>.sig`.

OpenSSH rather than a Python package: no new dependency in the device's SOUP, and its
allowed-signers file is the trust list (`make audit TRUSTED=<file>`; one line per person:
`email namespaces="cxr-510k-evidence" ssh-ed25519 AAAA...`, see `python -m evidence.sign --trust-line`).

Private keys never live in OUT. The key `demo` is a local demo key outside OUT
(`$XDG_CONFIG_HOME/cxr-510k/demo_signing_key`, default `~/.config/...`), created with
`ssh-keygen -t ed25519 -N ''` on first use; its signatures are "Demo Signer", role author, and
the audit says they are demo signatures.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import atomic, chain, layout
from .canonical import canonical_json
from .errors import ToolkitError

NAMESPACE = "cxr-510k-evidence"
ROLES = {
    "author": "I wrote this record's content and attest that it is accurate and complete",
    "reviewer": "I reviewed this record's content and found it accurate and complete",
    "approver": "I approve this record's content for release",
}
DEMO = "demo"
DEMO_SIGNER = "Demo Signer <demo-signer@example.invalid>"
#: records that must carry a valid signature whenever they exist
REQUIRED = ("validation.plan_lock", "submission.documents")
SIGNER = re.compile(r"^(?P<name>[^<>]*\S)\s*<(?P<email>[^<>\s@]+@[^<>\s@]+)>$")


class SigningError(ToolkitError):
    """A key, signer, role or record that cannot be used for a signature."""


def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        raise SigningError("ssh-keygen not found: install OpenSSH's client (apt-get install openssh-client)")
    return path


def _keygen(*args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([ssh_keygen(), *args], input=stdin, capture_output=True)
    if check and done.returncode != 0:
        why = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise SigningError(f"ssh-keygen {args[0]} {args[1] if len(args) > 1 else ''}: {why}")
    return done


# ----------------------------------------------------------------------------- keys

def demo_key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "cxr-510k" / "demo_signing_key"


def ensure_demo_key() -> Path:
    """The demo key, created on first use (under a lock, so parallel runs create it once)."""
    path = demo_key_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                key = Path(tmp) / "key"
                _keygen("-q", "-t", "ed25519", "-N", "", "-C", "demo signing key, not a person", "-f", str(key))
                os.replace(key.with_suffix(".pub"), path.with_suffix(".pub"))
                os.replace(key, path)
    return path


def resolve_key(key: str | Path, out: str | Path) -> tuple[Path, bool]:
    """(private key path, is the demo key); refuses a key inside OUT or a missing one."""
    demo = str(key) == DEMO
    path = ensure_demo_key() if demo else Path(key).expanduser()
    if path.resolve().is_relative_to(Path(out).resolve()):
        raise SigningError(f"key {path}: inside the run folder {out}; a private key must never live in OUT "
                           "(keep it in ~/.ssh or a key store and pass its path)")
    if not path.is_file():
        raise SigningError(f"key {path}: not found; create one with `ssh-keygen -t ed25519 -f {path}` "
                           "or use key 'demo'")
    return path, demo or path.resolve() == demo_key_path().resolve()


def public_key(key: Path) -> str:
    text = _keygen("-y", "-f", str(key)).stdout.decode().split()
    if not text or text[0] != "ssh-ed25519":
        raise SigningError(f"key {key}: not an Ed25519 key; create one with `ssh-keygen -t ed25519`")
    return " ".join(text[:2])


def fingerprint(public: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".pub") as f:
        f.write(public + "\n")
        f.flush()
        return _keygen("-l", "-f", f.name).stdout.decode().split()[1]


def principal(signer: str) -> str:
    match = SIGNER.match(signer or "")
    if match is None:
        raise SigningError(f"signer {signer!r}: write it as 'Full Name <email>'")
    return match["email"]


def trust_line(public: str, signer: str) -> str:
    """The allowed-signers line that trusts `public` for `signer` in this namespace."""
    return f'{principal(signer)} namespaces="{NAMESPACE}" {public}'


# ----------------------------------------------------------------------------- signing

def signature_file(out: str | Path, record_id: str, role: str) -> Path:
    return layout.signatures(out) / f"{record_id}.{role}.sig"


def statement_bytes(statement: dict) -> bytes:
    return canonical_json(statement)


def sign_record(out: str | Path, record_id: str, role: str, *, key: str | Path, signer: str | None = None) -> dict:
    """Sign record `record_id` of OUT as `role`; returns the statement appended to the ledger."""
    record = layout.record(out, record_id)
    if not record.is_file():
        raise SigningError(f"record {record_id}: not found at {record} (run its stage first)")
    return sign_bytes(out, record_id, record.read_bytes(), role, key=key, signer=signer)


def sign_bytes(out: str | Path, record_id: str, body: bytes, role: str, *, key: str | Path,
               signer: str | None = None) -> dict:
    """Sign `body`, the exact bytes of record `record_id`'s file in OUT (written or about to be)."""
    out = Path(out)
    key_path, demo = resolve_key(key, out)
    if demo:
        signer, role = DEMO_SIGNER, "author"
    if role not in ROLES:
        raise SigningError(f"role {role!r}: use one of {', '.join(ROLES)}")
    if not signer:
        raise SigningError("signer: required with a key other than 'demo' (write 'Full Name <email>')")
    public = public_key(key_path)
    statement = {
        "namespace": NAMESPACE, "record_id": record_id, "role": role, "meaning": ROLES[role],
        "signer": signer, "principal": principal(signer),
        "signed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "record_file_sha256": hashlib.sha256(body).hexdigest(),
        "record_sha256": json.loads(body).get("sha256"), "run_id": chain.run_id(out),
        "public_key": public, "key_fingerprint": fingerprint(public), "demo": demo,
    }
    with tempfile.TemporaryDirectory() as tmp:
        message = Path(tmp) / "statement"
        message.write_bytes(statement_bytes(statement))
        _keygen("-Y", "sign", "-q", "-f", str(key_path), "-n", NAMESPACE, str(message))
        atomic.write_bytes(signature_file(out, record_id, role), message.with_suffix(".sig").read_bytes())
    with chain.locked_append(layout.signature_ledger(out)) as (fd, _):
        chain.append_line(fd, statement)
    return statement


def sign_configured(out: str | Path, record_id: str, config: dict | None, body: bytes | None = None) -> dict:
    """Sign with params `signing` ({key, signer, role}; key 'demo' when absent) the record's file, or
    `body`, the bytes it is about to hold (`write_record(..., sign=config)`)."""
    config = config or {}
    args = dict(key=config.get("key", DEMO), signer=config.get("signer"))
    role = config.get("role", "author")
    if body is None:
        return sign_record(out, record_id, role, **args)
    return sign_bytes(out, record_id, body, role, **args)


def check_config(out: str | Path, config: dict | None) -> None:
    """Refuse a signing configuration that cannot sign, before any work is done."""
    config = config or {}
    key = config.get("key", DEMO)
    if key == DEMO:
        return
    resolve_key(key, out)
    principal(config.get("signer", ""))


# ----------------------------------------------------------------------------- verifying

def read_ledger(out: str | Path) -> tuple[list[dict], list[str]]:
    path = layout.signature_ledger(out)
    if not path.is_file():
        return [], []
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entries.append(json.loads(line))
        except ValueError:
            return entries, [f"signatures {path}: line {n}: not a signature statement"]
    return entries, []


def _verify(statement: dict, sig: Path, allowed: str | Path) -> bool:
    done = _keygen("-Y", "verify", "-f", str(allowed), "-I", str(statement.get("principal")), "-n", NAMESPACE,
                   "-s", str(sig), stdin=statement_bytes(statement), check=False)
    return done.returncode == 0


def _own_key_verifies(statement: dict, sig: Path) -> bool:
    with tempfile.NamedTemporaryFile("w") as f:
        f.write(f'{statement.get("principal")} namespaces="{NAMESPACE}" {statement.get("public_key")}\n')
        f.flush()
        return _verify(statement, sig, f.name)


def describe(s: dict) -> str:
    demo = "; DEMO signature with the local demo key, not a person's" if s.get("demo") else ""
    return (f"signature: {s.get('record_id')} signed by {s.get('signer')} as {s.get('role')} "
            f"({s.get('meaning')}) at {s.get('signed_utc')}, key {s.get('key_fingerprint')}{demo}")


def check(out: str | Path, trusted: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(one line per signature, failure lines) for OUT: the latest signature of each record and
    role must verify against its statement, its record file must be the one signed, in this run;
    with `trusted` (an allowed-signers file), its key must be trusted for its principal; every
    REQUIRED record present must be signed."""
    out = Path(out)
    if trusted is not None and not Path(trusted).is_file():
        raise SigningError(f"--trusted {trusted}: not found (an OpenSSH allowed-signers file)")
    statements, failures = read_ledger(out)
    latest = {(s.get("record_id"), s.get("role")): s for s in statements if isinstance(s, dict)}
    lines, signed = [], set()
    run = chain.run_id(out)
    for (rid, role), s in sorted(latest.items(), key=lambda kv: str(kv[0])):
        lines.append(describe(s))
        where = f"signature {rid}.{role} ({s.get('signer')}, {s.get('signed_utc')})"
        sig = signature_file(out, str(rid), str(role))
        record = layout.record(out, str(rid))
        if not sig.is_file():
            failures.append(f"{where}: expected {sig} found missing file")
            continue
        if not _own_key_verifies(s, sig):
            failures.append(f"{where}: the signature does not verify against its statement (the .sig file or "
                            f"the statement in {layout.signature_ledger(out)} was changed)")
            continue
        found = hashlib.sha256(record.read_bytes()).hexdigest() if record.is_file() else "missing record"
        if found != s.get("record_file_sha256"):
            failures.append(f"{where}: field record_file_sha256: expected {s.get('record_file_sha256')} found "
                            f"{found} (record {rid} changed after it was signed: review it and sign again)")
            continue
        if s.get("run_id") != run:
            failures.append(f"{where}: field run_id: expected {run} found {s.get('run_id')} "
                            "(a signature made in another run)")
            continue
        if trusted is not None and not _verify(s, sig, trusted):
            failures.append(f"{where}: signer {s.get('principal')} with key {s.get('key_fingerprint')} is not in "
                            f"the trusted signers file {trusted}")
            continue
        signed.add(rid)
    for rid in REQUIRED:
        if layout.record(out, rid).is_file() and rid not in signed and not any(k[0] == rid for k in latest):
            failures.append(f"record {rid}: field signatures: expected a signature found none "
                            f"(sign it: python -m evidence.sign --out {out} --record {rid} --role author "
                            "--key KEY --signer 'Name <email>')")
    return lines, failures
