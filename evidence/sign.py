"""python -m evidence.sign --out OUT --record ID --role author|reviewer|approver --key KEY --signer "Name <email>"

Signs the record file OUT/evidence/ID.json (its exact bytes, by their sha256) with an Ed25519
OpenSSH key: the signature goes to OUT/signatures/ID.ROLE.sig and the statement (signer, role and
its meaning, time, key fingerprint) to OUT/signatures/signatures.jsonl. KEY is a private key
outside OUT, or `demo` (the local demo key, created on first use; signs as "Demo Signer").

    python -m evidence.sign --trust-line --key KEY --signer "Name <email>"

prints the allowed-signers line that trusts KEY for that signer (collect them in a file for
`make audit TRUSTED=<file>`). Exit 0 when signed, 2 on bad input, 70 on a bug.
"""
from __future__ import annotations

import argparse
import sys

from .cli import EXIT_OK, guarded
from .signing import DEMO, ROLES, public_key, resolve_key, sign_configured, describe, trust_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evidence.sign", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build", help="run folder (default: build)")
    parser.add_argument("--record", help="record id to sign, e.g. submission.documents")
    parser.add_argument("--role", choices=sorted(ROLES), default="author", help="meaning of the signature")
    parser.add_argument("--key", default=DEMO, help="private Ed25519 key outside OUT, or 'demo' (default)")
    parser.add_argument("--signer", help="'Full Name <email>' (required unless --key demo)")
    parser.add_argument("--trust-line", action="store_true", help="print the allowed-signers line for KEY and SIGNER")
    args = parser.parse_args(argv)
    if not args.trust_line and not args.record:
        parser.error("--record is required (or --trust-line)")

    def body() -> int:
        if args.trust_line:
            key, _ = resolve_key(args.key, args.out)
            print(trust_line(public_key(key), args.signer or ""))
        else:
            print(describe(sign_configured(args.out, args.record,
                                           {"key": args.key, "signer": args.signer, "role": args.role})))
        return EXIT_OK

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
