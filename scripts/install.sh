#!/usr/bin/env bash
# Idempotent install into $VENV. Without an NVIDIA GPU, torch comes from the CPU wheel
# (torch==2.13.0 lies on this machine's disk; elsewhere pip takes it from the PyTorch CPU index),
# so that the plain `torch` requirement never pulls a multi-GB CUDA build.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip setuptools wheel >/dev/null
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[install] NVIDIA GPU found: installing the CUDA build of torch"
    "${PIP[@]}" install torch
  else
    echo "[install] no NVIDIA GPU: installing the CPU build of torch"
    "${PIP[@]}" install torch==2.13.0 \
      || "${PIP[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"${PIP[@]}" install -e ".[dev]"
# Optional system tools the tests use when present: dciodvfy (dicom3tools) validates the DICOM
# files medsynth writes; headless chromium renders the evaluate report. Installed when root.
apt_tool() {  # apt_tool COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq "$2" >/dev/null 2>&1 \
      || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$2" >/dev/null 2>&1)) && return 0
  fi
  echo "[install] $2 not installed: the tests that need $1 will be skipped"
}
apt_tool dciodvfy dicom3tools
apt_tool chromium chromium
echo "[install] done: $("$VENV/bin/python" -c 'import torch, medsynth; print("medsynth", medsynth.__version__, "torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
