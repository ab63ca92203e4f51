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
# the playground's browser test drives Debian's chromium headless; it skips where there is none
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver; } >/dev/null 2>&1 || echo "chromium: not installed (the browser test will skip)"
    else
        echo "chromium: not installed (needs root and apt-get; the browser test will skip)"
    fi
fi
echo "fastdllm-ray installed in .venv"
