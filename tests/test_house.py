"""The house keeps its shape: which package may import which, and what each install needs.

docs/decisions/0011-one-house.md sets the rules: the evidence format, the wire protocol
and the shared configuration helpers import nothing else of the project; the centre
never imports device, recorder, index or uplink code; the unit never imports the
centre. Checked twice: statically over every import statement (lazy ones inside
functions included), and by importing every module of a side in a fresh interpreter
where the other side's packages and libraries cannot be imported at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {
    "evidence", "protocol", "common", "store", "hw", "recorder", "signer", "uplink",
    "firmware_py", "central",
}  # fmt: skip

# package -> the project packages its modules may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "evidence": set(),
    "protocol": set(),
    "common": set(),
    "store": {"evidence"},
    "hw": set(),
    "recorder": {"hw", "evidence", "store"},
    "signer": {"hw", "evidence", "store"},
    "uplink": {"hw", "evidence", "protocol", "signer", "store"},
    "firmware_py": {
        "hw",
        "recorder",
        "signer",
        "uplink",
        "store",
        "evidence",
        "protocol",
        "common",
    },
    "central": {"evidence", "protocol", "common", "signer"},
}

UNIT_LIBRARIES = ["av", "numpy", "PIL", "pyaudio", "gpiozero", "picamera2", "rich", "evdev", "cv2"]
CENTRE_LIBRARIES = ["django", "psycopg", "boto3", "sqlalchemy", "alembic", "uvicorn"]


def imported_packages(path: Path) -> set[str]:
    """Top-level project packages named by any import in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & PROJECT


def package_modules(package: str) -> list[str]:
    return sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / package).rglob("*.py")
        if "migrations" not in p.parts  # Django/Alembic migrations are loaded by their tools
    )


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_rules(package: str) -> None:
    broken = []
    for path in sorted((ROOT / package).rglob("*.py")):
        extra = imported_packages(path) - ALLOWED[package] - {package}
        if extra:
            broken.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not broken, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(
        broken
    )


def test_every_package_has_a_rule() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= set(ALLOWED), f"no import rule for {sorted(packages - set(ALLOWED))}"


_IMPORT_ALL_BLOCKING = """
import importlib, importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not installed on this side")
        return None
sys.meta_path.insert(0, Refuse())
for module in sys.argv[2].split(","):
    importlib.import_module(module)
leaked = sorted({m.split(".")[0] for m in sys.modules} & blocked)
assert not leaked, leaked
print("ok", len(sys.argv[2].split(",")))
"""


def _import_all(modules: list[str], blocked: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL_BLOCKING, ",".join(blocked), ",".join(modules)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok"), done.stdout


def test_the_centre_imports_without_any_unit_code_or_device_library() -> None:
    modules = [m for m in package_modules("central")]
    unit_side = ["hw", "recorder", "store", "uplink", "firmware_py"]
    _import_all(modules, unit_side + UNIT_LIBRARIES)


def test_the_unit_imports_without_the_centre_or_its_libraries() -> None:
    modules = [
        m
        for package in ("firmware_py", "hw", "recorder", "signer", "uplink", "store")
        for m in package_modules(package)
        if m not in {"hw.camera_pi", "signer.keys.tpm2", "signer.c2pa_embed", "hw.card_reader"}
    ]  # (the Pi camera, TPM, C2PA and evdev adapters need their optional libraries)
    _import_all(modules, ["central", *CENTRE_LIBRARIES])


def test_the_evidence_format_needs_only_the_standard_library_and_cryptography() -> None:
    modules = [m for p in ("evidence", "protocol", "common") for m in package_modules(p)]
    others = sorted(PROJECT - {"evidence", "protocol", "common"})
    _import_all(
        modules,
        others + UNIT_LIBRARIES + CENTRE_LIBRARIES + ["paho", "sqlite_utils", "pkcs11"],
    )


def test_each_install_pulls_in_only_its_own_side() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {
            r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip() for r in requirements
        }

    base, unit, centre = (
        names(project["dependencies"]),
        names(extras["unit"]),
        names(extras["central"]),
    )
    device = {"av", "numpy", "pillow", "pyaudio", "gpiozero", "picamera2", "rich", "evdev"}
    server = {"django", "psycopg", "boto3", "sqlalchemy", "alembic", "uvicorn", "argon2-cffi"}
    assert not (base & (device | server)), (
        "the base install is the auditor's: no device or server libraries"
    )
    assert not (centre & device), f"the centre would install device libraries: {centre & device}"
    assert not (unit & server), f"a unit would install server libraries: {unit & server}"
    scripts = project["scripts"]
    assert scripts["liuhen"].startswith("firmware_py.") and scripts["liuhen-central"].startswith(
        "central."
    )
