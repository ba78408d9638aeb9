"""The machine a run was made on: what every published figure must name.

Owns: reading CPU model and count, memory, kernel, load, and the versions of Python,
PyAV/FFmpeg libraries, the ffmpeg/openssl/sha256sum/mosquitto commands used as
baselines. Must not: measure anything.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import av


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    """The instruction-set extensions SHA-256 speed depends on."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return sorted(have & {"sha_ni", "avx2", "sha2", "aes", "neon", "asimd"})
    except OSError:
        pass
    return []


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, Any]:
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "pyav": av.__version__,
        "libavformat": ".".join(str(x) for x in av.library_versions["libavformat"]),
        "cryptography": _pkg("cryptography"),
        "paho_mqtt": _pkg("paho-mqtt"),
        "ffmpeg": _first_line(["ffmpeg", "-hide_banner", "-version"]),
        "openssl": _first_line(["openssl", "version"]),
        "sha256sum": _first_line(["sha256sum", "--version"]),
        "mosquitto": _first_line(["mosquitto", "-h"]),
    }


def one_line(m: dict[str, Any]) -> str:
    return (
        f"{m['nproc']} x {m['cpu_model']} ({', '.join(m['cpu_flags']) or 'no SHA extensions'}), "
        f"{m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}, PyAV {m['pyav']}, "
        f"{m['ffmpeg'].split(' Copyright')[0]}, {m['openssl'].split(' (')[0]}"
    )
