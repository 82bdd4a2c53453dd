#!/usr/bin/env bash
# Runs the whole test suite in .venv (run scripts/setup.sh first, or use .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q "$@"
