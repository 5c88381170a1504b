#!/usr/bin/env bash
# Idempotent install into $VENV. Without an NVIDIA GPU, torch comes from the CPU wheel
# (torch==2.13.0 lies on this machine's disk; elsewhere pip takes it from the PyTorch CPU index),
# so that the plain `torch` requirement never pulls a multi-GB CUDA build.
# With an NVIDIA GPU (`nvidia-smi -L` lists one), torch comes from the PyTorch index of the newest
# CUDA build the driver supports (`nvidia-smi`'s "CUDA Version"), or from
# $MEDSYNTH_TORCH_INDEX_URL when set; a CPU torch already in the venv is replaced, and the install
# fails when torch then cannot use the GPU.
#   bash scripts/install.sh --print-torch-index   # only print the index it would use, install nothing
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# The PyTorch wheel index for the driver's CUDA version: the newest build not above it.
torch_index() {
  if [ -n "${MEDSYNTH_TORCH_INDEX_URL:-}" ]; then echo "$MEDSYNTH_TORCH_INDEX_URL"; return; fi
  local v major minor tag
  v=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9]*\.[0-9]*' | grep -o '[0-9]*\.[0-9]*' | head -1)
  [ -n "$v" ] || { echo "[install] nvidia-smi shows no CUDA version" >&2; return 1; }
  major=${v%.*}; minor=${v#*.}
  for tag in 130 129 128 126 124 121 118; do
    if [ $(( major * 10 + minor )) -ge "$tag" ]; then
      echo "https://download.pytorch.org/whl/cu$tag"; return
    fi
  done
  echo "[install] the driver's CUDA $v is older than any PyTorch build (11.8+): update it" >&2
  return 1
}

if [ "${1:-}" = "--print-torch-index" ]; then
  if has_gpu; then torch_index; else echo "cpu"; fi
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip setuptools wheel >/dev/null
torch_cuda() { "$VENV/bin/python" -c "import torch; print(torch.version.cuda or '')" 2>/dev/null; }
if has_gpu; then
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null || [ -z "$(torch_cuda)" ]; then
    INDEX=$(torch_index)
    echo "[install] NVIDIA GPU found: installing the CUDA build of torch from $INDEX"
    # --force-reinstall: a CPU torch (2.13.0+cpu) satisfies `torch` and would be kept otherwise
    "${PIP[@]}" install --force-reinstall torch --index-url "$INDEX"
  fi
elif ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[install] no NVIDIA GPU: installing the CPU build of torch"
  "${PIP[@]}" install torch==2.13.0 \
    || "${PIP[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
fi
"${PIP[@]}" install -e ".[dev]"
if has_gpu && ! "$VENV/bin/python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "[install] ERROR: nvidia-smi sees a GPU but torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)') cannot use it" >&2
  echo "[install] (driver too old for this build? set MEDSYNTH_TORCH_INDEX_URL to an older cuXXX index)" >&2
  exit 1
fi
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
