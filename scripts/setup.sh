#!/usr/bin/env bash
# Creates .venv with everything fastdllm-ray needs (CPU torch here; the GPU image brings its own).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first, pinned, so the project's torch requirement does not pull a multi-GB CUDA build
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "fastdllm-ray installed in .venv"
