"""`liuhen keys …`: create the device key and its certificate, show them.

Owns: the key-management commands an installer runs once per unit (docs/OPERATIONS.md,
"Enrolling the key"). Must not: hold key logic itself; signer.keys and signer.identity
do the work. Nothing here can print or export a private key.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from evidence.certs import chain_pem, fingerprint, load_chain_pem
from evidence.ledger import key_id
from firmware_py.config import Config, load
from signer.identity import (
    issue_device_cert,
    load_dev_ca,
    make_csr,
    make_dev_ca,
    self_signed_device_cert,
)
from signer.keys import KeyBackend, init_key, open_backend


def _describe_key(backend: KeyBackend) -> str:
    warn = "  (DEVELOPMENT ONLY: a key in a file)" if backend.protection == "software" else ""
    return (
        f"key       {backend.protection}: {backend.description}{warn}\n"
        f"key id    {key_id(backend.public_key())}"
    )


def _cert_path(config: Config, out: Path | None) -> Path:
    if out is not None:
        return out
    if not config.keys.certificate:
        raise SystemExit("liuhen keys: set [keys] certificate in the configuration, or give --out")
    return Path(config.keys.certificate)


def _write_new(path: Path, data: bytes, force: bool) -> None:
    if path.exists() and not force:
        raise SystemExit(f"liuhen keys: {path} exists; give --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def cmd_init(args: argparse.Namespace) -> int:
    config = load(args.config)
    with init_key(config.keys.spec()) as backend:
        print(f"created the device key for {config.unit.device_id}")
        print(_describe_key(backend))
    return 0


def cmd_cert(args: argparse.Namespace) -> int:
    config = load(args.config)
    path = _cert_path(config, args.out)
    with open_backend(config.keys.spec()) as backend:
        if args.ca is not None:
            ca = load_dev_ca(args.ca)
            cert = issue_device_cert(backend, config.unit.device_id, args.ca, days=args.days)
            pem = chain_pem(cert, ca.intermediate_cert)
            how = f"issued by the development CA in {args.ca}"
        else:
            cert = self_signed_device_cert(backend, config.unit.device_id, days=args.days)
            pem = chain_pem(cert)
            how = "self-signed (the ledger verifies with it; C2PA needs a CA-issued one)"
    _write_new(path, pem.encode(), args.force)
    print(f"wrote {path}: {how}")
    print(f"subject   {cert.subject.rfc4514_string()}")
    print(f"sha256    {fingerprint(cert)}")
    return 0


def cmd_csr(args: argparse.Namespace) -> int:
    config = load(args.config)
    with open_backend(config.keys.spec()) as backend:
        csr = make_csr(backend, config.unit.device_id)
    _write_new(args.out, csr.public_bytes(serialization.Encoding.PEM), args.force)
    print(
        f"wrote {args.out}: a certificate request for {config.unit.device_id}; send it to the agency CA,"
    )
    print("then install the returned chain (leaf first) at [keys] certificate.")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config = load(args.config)
    with open_backend(config.keys.spec()) as backend:
        print(f"unit      {config.unit.device_id}")
        print(_describe_key(backend))
        public = backend.public_key()
    if config.keys.certificate and Path(config.keys.certificate).exists():
        chain = load_chain_pem(Path(config.keys.certificate).read_bytes())
        leaf: x509.Certificate = chain[0]
        match = "matches the key" if leaf.public_key() == public else "DOES NOT MATCH THE KEY"
        print(f"cert      {config.keys.certificate} ({match})")
        print(f"subject   {leaf.subject.rfc4514_string()}")
        print(f"issuer    {leaf.issuer.rfc4514_string()}")
        print(
            f"valid     {leaf.not_valid_before_utc:%Y-%m-%d} to {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
        print(f"sha256    {fingerprint(leaf)}")
    else:
        print("cert      none yet: run `liuhen keys cert` or `liuhen keys csr`", file=sys.stderr)
    return 0


def cmd_dev_ca(args: argparse.Namespace) -> int:
    ca = make_dev_ca(args.directory)
    print(f"created a DEVELOPMENT certificate authority in {args.directory} (never for evidence)")
    print(f"root sha256  {fingerprint(ca.root_cert)}")
    return 0


def cmd_agency_key(args: argparse.Namespace) -> int:
    from evidence.records import Recipient, generate_agency_key

    private_path = args.directory / "agency.key.pem"
    public_path = args.directory / "agency.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            print(f"liuhen keys agency-key: {path} exists; not replacing it", file=sys.stderr)
            return 1
    args.directory.mkdir(parents=True, exist_ok=True)
    private, public = generate_agency_key(hybrid=not args.x25519_only)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public_path.write_bytes(public)
    recipient = Recipient.from_pem(public)
    print(f"created a DEVELOPMENT agency key ({recipient.kem}) in {args.directory}")
    print(f"  {public_path}   give units this: [encryption] recipient")
    print(f"  {private_path}   keep it at the centre only: `liuhen central decrypt --key`")
    print(f"recipient sha256  {recipient.id}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="device key and certificate")
    ksub = keys.add_subparsers(dest="keys_command", required=True)

    def command(name: str, func: object, help: str) -> argparse.ArgumentParser:
        p = ksub.add_parser(name, help=help)
        p.set_defaults(func=func)
        return p

    command("init", cmd_init, "create the device key in its backend").add_argument(
        "--config", type=Path, required=True
    )
    cert = command(
        "cert", cmd_cert, "write the device certificate (self-signed, or from a development CA)"
    )
    cert.add_argument("--config", type=Path, required=True)
    cert.add_argument("--ca", type=Path, help="development CA directory (liuhen keys dev-ca)")
    cert.add_argument("--out", type=Path, help="where to write (default: [keys] certificate)")
    cert.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    cert.add_argument("--force", action="store_true", help="replace an existing file")
    csr = command("csr", cmd_csr, "write a certificate request for an agency CA")
    csr.add_argument("--config", type=Path, required=True)
    csr.add_argument("--out", type=Path, required=True)
    csr.add_argument("--force", action="store_true", help="replace an existing file")
    command("show", cmd_show, "print the key id and certificate").add_argument(
        "--config", type=Path, required=True
    )
    agency = command(
        "agency-key", cmd_agency_key, "create a DEVELOPMENT agency key pair for encryption at rest"
    )
    agency.add_argument("directory", type=Path)
    agency.add_argument("--x25519-only", action="store_true",
                        help="X25519 alone, for tooling without ML-KEM (default: ML-KEM-768 + X25519)")  # fmt: skip
    command("dev-ca", cmd_dev_ca, "create a DEVELOPMENT CA (tests, bench set-ups)").add_argument(
        "directory", type=Path
    )
