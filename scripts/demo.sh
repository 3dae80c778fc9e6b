#!/usr/bin/env bash
# Set up (if needed) and run the whole DICCAE pipeline on a generated demo data set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/diccae demo --out "${DEMO_OUT:-demo-out}" "$@"
