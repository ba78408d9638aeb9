"""TPM 2.0 key backend against a real swtpm (skipped only when swtpm is not installed)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from keyfixtures import Swtpm, swtpm_fixture  # noqa: F401  (fixture)

from signer.keys import KeyAlreadyExists, KeyUnavailable, init_key, open_backend

DIGEST = hashlib.sha256(b"segment 0001").digest()
PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))
REPO = Path(__file__).resolve().parent.parent


def test_init_sign_verify(swtpm: Swtpm) -> None:
    with init_key(swtpm.spec()) as key:
        assert key.protection == "tpm2"
        assert "0x81010001" in key.description and swtpm.tcti in key.description
        signature = key.sign_digest(DIGEST)
        key.public_key().verify(signature, DIGEST, PREHASHED)
        key.public_key().verify(signature, b"segment 0001", ec.ECDSA(hashes.SHA256()))


def test_key_survives_a_tpm_restart(swtpm: Swtpm) -> None:
    with init_key(swtpm.spec()) as key:
        public = key.public_key()
    with open_backend(swtpm.spec()) as again:
        assert again.public_key() == public
    swtpm.restart()  # power cycle: only persistent objects remain
    with open_backend(swtpm.spec()) as after:
        assert after.public_key() == public
        public.verify(after.sign_digest(DIGEST), DIGEST, PREHASHED)


def test_init_over_an_existing_key(swtpm: Swtpm) -> None:
    with init_key(swtpm.spec()) as key:
        public = key.public_key()
    with pytest.raises(KeyAlreadyExists, match="0x81010001: a persistent object already exists"):
        init_key(swtpm.spec())
    with open_backend(swtpm.spec()) as key:
        assert key.public_key() == public


def test_configurable_handle(swtpm: Swtpm) -> None:
    with init_key(swtpm.spec(tpm_handle=0x81010007)) as key:
        assert "0x81010007" in key.description
    with pytest.raises(KeyUnavailable, match="0x81010001: opening the key failed: no object"):
        open_backend(swtpm.spec())


def test_missing_key(swtpm: Swtpm) -> None:
    with pytest.raises(
        KeyUnavailable,
        match=r"TPM 2\.0 via swtpm:.* key at persistent handle 0x81010001: opening the key "
        r"failed: no object at that handle",
    ):
        open_backend(swtpm.spec())


def test_wrong_pin(swtpm: Swtpm) -> None:
    with init_key(swtpm.spec(pin="2468")) as key:
        key.public_key().verify(key.sign_digest(DIGEST), DIGEST, PREHASHED)
    with pytest.raises(KeyUnavailable, match=r"0x81010001: signing failed: wrong PIN"):
        open_backend(swtpm.spec(pin="1111"))
    with open_backend(swtpm.spec(pin="2468")) as right:
        right.public_key().verify(right.sign_digest(DIGEST), DIGEST, PREHASHED)


def test_unreachable_tpm(swtpm: Swtpm) -> None:
    swtpm.stop()
    with pytest.raises(KeyUnavailable, match=r"TPM 2\.0 via swtpm:host=127\.0\.0\.1.*connecting"):
        open_backend(swtpm.spec())


def test_key_is_fixed_to_the_tpm(swtpm: Swtpm) -> None:
    import tpm2_pytss as t

    init_key(swtpm.spec()).close()
    with t.ESAPI(swtpm.tcti) as esys:
        handle = esys.tr_from_tpmpublic(0x81010001)
        public, _, _ = esys.read_public(handle)
        attrs = public.publicArea.objectAttributes
        for required in ("FIXEDTPM", "FIXEDPARENT", "SENSITIVEDATAORIGIN", "SIGN_ENCRYPT"):
            assert attrs & getattr(t.TPMA_OBJECT, required), required
        assert not attrs & t.TPMA_OBJECT.RESTRICTED
        # No transient objects are left behind (a TPM has only a few slots).
        _more, handles = esys.get_capability(
            t.TPM2_CAP.HANDLES, t.TPM2_HT.TRANSIENT << t.TPM2_HR.SHIFT, 16
        )
        assert list(handles.data.handles) == []


def test_without_tpm2_pytss_the_rest_still_works(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["tpm2_pytss"] = None  # as if not installed
        from signer.keys import KeySpec, KeyUnavailable, init_key, open_backend
        try:
            open_backend(KeySpec(kind="tpm2"))
        except KeyUnavailable as e:
            print(e)
        init_key(KeySpec(kind="software", path={str(tmp_path / "k.pem")!r})).close()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "the tpm2-pytss package is not installed" in result.stdout
