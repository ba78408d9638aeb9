"""Real key stores for tests: a SoftHSM2 token, an swtpm TPM 2.0, a development CA, a small fMP4.

Owns: starting and stopping those parts (SETUP.md recipes) for the key and identity
tests. A plain module: test modules import the fixtures they use by their
``*_fixture`` names; a conftest can list it in ``pytest_plugins`` instead.
Must not: mock anything. SoftHSM2 is required (fails if absent); swtpm tests are
skipped only when the swtpm binary is absent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest

from signer.identity import DevCA, make_dev_ca
from signer.keys import DEFAULT_TPM_HANDLE, KeyBackend, KeySpec, init_key

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "liuhen"
SO_PIN = "5678"
USER_PIN = "1234"


# ---------------------------------------------------------------------------
# SoftHSM2
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SoftHsm:
    directory: Path
    conf: Path
    module: str = SOFTHSM_MODULE
    token_label: str = TOKEN_LABEL
    user_pin: str = USER_PIN

    def spec(
        self,
        key_label: str,
        *,
        pin: str | None = USER_PIN,
        pin_file: str | None = None,
        token_label: str = TOKEN_LABEL,
        module: str = SOFTHSM_MODULE,
    ) -> KeySpec:
        return KeySpec(
            kind="pkcs11",
            module=module,
            token_label=token_label,
            pin=None if pin_file else pin,
            pin_file=pin_file,
            key_label=key_label,
        )

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}


@pytest.fixture(scope="session", name="softhsm")
def softhsm_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """A SoftHSM2 token labelled "liuhen" (user PIN 1234) in a private token directory.

    SOFTHSM2_CONF is set for the whole session and the (per-process, cached) PKCS#11
    library is re-initialised so it reads this configuration.
    """
    if not os.path.exists(SOFTHSM_MODULE) or shutil.which("softhsm2-util") is None:
        pytest.fail("SoftHSM2 is not installed (apt-get install softhsm2)")
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n",
        encoding="utf-8",
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pkcs11.lib(SOFTHSM_MODULE).reinitialize()
    yield SoftHsm(directory, conf)
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture(name="key_label")
def key_label_fixture() -> str:
    """A key label no other test uses (tests share the session's token)."""
    return f"test-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------
# swtpm
# ---------------------------------------------------------------------------


def _free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (swtpm: server P, control P+1)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of TCP ports on 127.0.0.1")


@dataclasses.dataclass
class Swtpm:
    state_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def spec(self, *, pin: str | None = None, tpm_handle: int = DEFAULT_TPM_HANDLE) -> KeySpec:
        return KeySpec(kind="tpm2", tcti=self.tcti, pin=pin, tpm_handle=tpm_handle)

    def start(self) -> None:
        for _ in range(5):
            self.port = _free_port_pair()
            self.process = subprocess.Popen(
                [
                    "swtpm",
                    "socket",
                    "--tpm2",
                    "--flags",
                    "not-need-init,startup-clear",
                    "--tpmstate",
                    f"dir={self.state_dir}",
                    "--server",
                    f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                    "--ctrl",
                    f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError("swtpm did not start")

    def _wait_ready(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # lost the port race, or failed
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port + 1), timeout=0.2),
            ):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same state: what a power cycle does."""
        self.stop()
        self.start()


@pytest.fixture(name="swtpm")
def swtpm_fixture(tmp_path: Path) -> Iterator[Swtpm]:
    """A fresh swtpm TPM 2.0 (empty state) on free ports; skipped if swtpm is absent."""
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (apt-get install swtpm swtpm-tools)")
    state = tmp_path / "tpmstate"
    state.mkdir()
    tpm = Swtpm(state)
    tpm.start()
    yield tpm
    tpm.stop()


# ---------------------------------------------------------------------------
# Media
# ---------------------------------------------------------------------------

FMP4_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer"


def make_fragmented_mp4(path: Path, frames: int = 12, gop: int = 4) -> Path:
    """A small real H.264 fragmented MP4 (libx264 via PyAV), a fragment per GOP."""
    import av
    import numpy as np

    width, height = 64, 48
    with av.open(str(path), "w", format="mp4", options={"movflags": FMP4_MOVFLAGS}) as out:
        stream = out.add_stream(
            "libx264",
            rate=10,
            options={
                "preset": "ultrafast",
                "tune": "zerolatency",
                "g": str(gop),
                "keyint_min": str(gop),
                "sc_threshold": "0",
            },
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            picture = np.full((height, width, 3), (i * 23) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(name="fmp4")
def fmp4_fixture(tmp_path: Path) -> Path:
    return make_fragmented_mp4(tmp_path / "segment.mp4")


# ---------------------------------------------------------------------------
# A device key of each kind, and a development CA
# ---------------------------------------------------------------------------


@pytest.fixture(name="device_backend", params=["pkcs11", "tpm2", "software"])
def device_backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyBackend]:
    """A freshly created device key, once per kind of key store."""
    kind = request.param
    if kind == "pkcs11":
        softhsm: SoftHsm = request.getfixturevalue("softhsm")
        spec = softhsm.spec(f"test-{uuid.uuid4().hex[:12]}")
    elif kind == "tpm2":
        swtpm: Swtpm = request.getfixturevalue("swtpm")
        spec = swtpm.spec()
    else:
        spec = KeySpec(kind="software", path=str(tmp_path / "device.key"))
    with init_key(spec) as backend:
        yield backend


@pytest.fixture(name="dev_ca")
def dev_ca_fixture(tmp_path: Path) -> DevCA:
    return make_dev_ca(tmp_path / "dev-ca")
