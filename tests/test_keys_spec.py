"""KeySpec: a configuration mistake is refused at once, with the field that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer.keys import InvalidKeySpec, KeySpec, KeyUnavailable, open_backend


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidKeySpec, match=r"'hsm'.*pkcs11, tpm2, software"):
        KeySpec(kind="hsm")  # type: ignore[arg-type]


def test_pkcs11_needs_module_token_and_pin() -> None:
    with pytest.raises(InvalidKeySpec, match="needs module, token_label, pin or pin_file"):
        KeySpec(kind="pkcs11")


def test_field_of_another_kind_is_refused() -> None:
    with pytest.raises(InvalidKeySpec, match=r"kind='software'\) does not use module"):
        KeySpec(kind="software", path="k.pem", module="/usr/lib/x.so")
    with pytest.raises(InvalidKeySpec, match="does not use tpm_handle"):
        KeySpec(kind="software", path="k.pem", tpm_handle=0x81010002)


def test_pin_and_pin_file_together_are_refused() -> None:
    with pytest.raises(InvalidKeySpec, match="both pin and pin_file"):
        KeySpec(kind="software", path="k.pem", pin="1", pin_file="/p")


def test_tpm_handle_must_be_persistent() -> None:
    with pytest.raises(InvalidKeySpec, match="0x80000001 is not a TPM persistent handle"):
        KeySpec(kind="tpm2", tpm_handle=0x80000001)


def test_repr_never_shows_the_pin() -> None:
    spec = KeySpec(kind="pkcs11", module="/m.so", token_label="t", pin="s3cret-pin")
    assert "s3cret-pin" not in repr(spec)


def test_pin_file_first_line_is_the_pin(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("9876\n")
    pin_file.chmod(0o600)
    assert KeySpec(kind="software", path="k", pin_file=str(pin_file)).resolve_pin() == "9876"


def test_pin_file_problems_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(KeyUnavailable, match=f"PIN file {missing}: cannot read it"):
        KeySpec(kind="software", path="k", pin_file=str(missing)).resolve_pin()
    public = tmp_path / "pin"
    public.write_text("1234\n")
    public.chmod(0o644)
    with pytest.raises(KeyUnavailable, match="readable by every user"):
        KeySpec(kind="software", path="k", pin_file=str(public)).resolve_pin()
    empty = tmp_path / "empty"
    empty.write_text("")
    empty.chmod(0o600)
    with pytest.raises(KeyUnavailable, match="is empty"):
        KeySpec(kind="software", path="k", pin_file=str(empty)).resolve_pin()


def test_open_backend_wants_a_keyspec() -> None:
    with pytest.raises(TypeError, match="expected a KeySpec"):
        open_backend({"kind": "software"})  # type: ignore[arg-type]
