#!/usr/bin/env bash
# Sets up .venv if needed, then runs the bundled end-to-end job: MobileNetV2 (ImageNet
# weights) compiled once with a dynamic batch, fp32 and int8, on bundled photos at batch 1
# and 8, timed beside ONNX Runtime. Options pass through (e.g. --batch 1 4 16 --repeats 20).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/tvm-onednn ] || bash scripts/setup.sh
exec .venv/bin/tvm-onednn demo "$@"
