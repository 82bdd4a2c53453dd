#!/usr/bin/env bash
# Sets up .venv if needed, then runs the bundled end-to-end job.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/tvm-onednn ] || bash scripts/setup.sh
exec .venv/bin/tvm-onednn demo "$@"
