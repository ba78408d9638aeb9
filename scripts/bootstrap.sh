#!/usr/bin/env bash
# Install whatever is missing for liuhen on Debian 12 / Raspberry Pi OS bookworm:
# the apt packages the devices and tests need, then a virtualenv in .venv with the
# project installed in it. Safe to run again: it only does what is not done yet.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev build-essential pkg-config
  ffmpeg portaudio19-dev libportaudio2 alsa-utils libcap-dev
  mosquitto mosquitto-clients softhsm2
  swtpm swtpm-tools tpm2-tools libtss2-dev
  chromium
  strace e2fsprogs  # fault tests: SIGKILL at a chosen system call; an ext4 image that fails
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing apt packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bootstrap: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PYTHON=$(command -v "$candidate"); break
  fi
done
[ -n "$PYTHON" ] || { echo "bootstrap: Python 3.11 or newer is required" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  args=()
  # On a Pi, picamera2 and libcamera come from apt and must be visible in the venv.
  [ -d /usr/lib/python3/dist-packages/picamera2 ] && args+=(--system-site-packages)
  echo "bootstrap: creating .venv with $PYTHON ${args[*]:-}"
  "$PYTHON" -m venv "${args[@]}" .venv
fi

extras="dev,tpm"
[ -d /usr/lib/python3/dist-packages/picamera2 ] && extras="unit,tpm,c2pa"  # a unit: no centre, no test tools
echo "bootstrap: installing liuhen[$extras] into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import av, pyaudio, pkcs11, firmware_py" || {
  echo "bootstrap: the virtualenv is incomplete; see pip's messages above" >&2; exit 1; }
