"""Device keys for the benchmarks: a software key file, or a key on a SoftHSM2 token.

Owns: making a throw-away key of each kind in a directory, by the SETUP.md recipe for
SoftHSM2 (a private token directory, SOFTHSM2_CONF set before the PKCS#11 library is
first loaded in the process). Must not: be used for anything but benchmarks.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Literal

from evidence.certs import chain_pem
from signer.identity import self_signed_device_cert
from signer.keys import KeySpec, init_key, open_backend

KeyKind = Literal["software", "softhsm2"]
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN, SO_PIN, USER_PIN = "liuhen-bench", "5678", "1234"


def software_key(directory: Path) -> KeySpec:
    spec = KeySpec(kind="software", path=str(directory / "device.key"))
    init_key(spec).close()
    return spec


def softhsm_key(directory: Path) -> KeySpec:
    """A fresh token in ``directory``; sets SOFTHSM2_CONF for this process, so call it
    before anything in the process has loaded the PKCS#11 library."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    init = ["softhsm2-util", "--init-token", "--free", "--label", TOKEN]
    subprocess.run([*init, "--so-pin", SO_PIN, "--pin", USER_PIN], check=True, capture_output=True)
    spec = KeySpec(
        kind="pkcs11", module=SOFTHSM_MODULE, token_label=TOKEN, pin=USER_PIN, key_label="bench"
    )
    init_key(spec).close()
    return spec


def make_key(kind: KeyKind, directory: Path) -> KeySpec:
    directory.mkdir(parents=True, exist_ok=True)
    return software_key(directory) if kind == "software" else softhsm_key(directory)


def certificate(spec: KeySpec, device_id: str, path: Path) -> Path:
    """A self-signed device certificate for the key (what ``liuhen keys cert`` makes
    without a CA): the sealer installs it beside the evidence, and verify needs it."""
    with open_backend(spec) as backend:
        path.write_text(chain_pem(self_signed_device_cert(backend, device_id)))
    return path
