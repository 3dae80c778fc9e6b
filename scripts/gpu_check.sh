#!/usr/bin/env bash
# The prepared GPU check: one command, under 8 minutes on an H200 test machine.
#
#   bash scripts/gpu_check.sh OUTDIR        on the GPU machine, with .whl/ (scripts/gpu_wheels.sh) beside it
#   GPU_CHECK_ONLY=kmeans,trainer GPU_CHECK_PYTEST_K=cluster bash scripts/gpu_check.sh OUTDIR
#                                            only those suite sections / GPU tests (pytest -k)
#   bash scripts/gpu_check.sh --dry-run [OUTDIR]   on any CPU machine: every section at toy size,
#                                                   then the wheel list is checked against the imports
#
# Writes OUTDIR/gpu_check.json and gpu_check.md (bench/gpu_suite.py), nvidia-smi.txt,
# pip-list.txt, pytest-gpu.txt and extract.json.  Each stage has its own time limit, so
# a slow stage cannot take the others' time; the suite writes its results after every section.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--dry-run" ]; then
  out=${2:-$(mktemp -d)}
  PY=${PYTHON:-.venv/bin/python}
  [ -x "$PY" ] || PY=python3
  exec "$PY" bench/gpu_suite.py --dry-run --out "$out"
fi
out=${1:?usage: scripts/gpu_check.sh OUTDIR | --dry-run [OUTDIR]}
mkdir -p "$out"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
log() { echo "[gpu_check $(elapsed)s] $*"; }
TOTAL=${GPU_CHECK_SECONDS:-465}

log "installing $(ls .whl/*.whl 2>/dev/null | wc -l) carried wheels"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || log "wheel install failed; sections needing zarr/PyAV will report it"
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed"
python3 -m pip list 2>/dev/null > "$out/pip-list.txt"

log "pytest -m gpu"
files=$(grep -rl --include="*.py" "mark.gpu" tests/featstore tests/trainer 2>/dev/null | tr "\n" " ")
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu ${GPU_CHECK_PYTEST_K:+-k "$GPU_CHECK_PYTEST_K"} $files > "$out/pytest-gpu.txt" 2>&1
log "pytest exit $? : $(tail -1 "$out/pytest-gpu.txt")"

left=$(( TOTAL - $(elapsed) ))
log "benchmark suite, ${left}s left"
timeout $(( left + 5 )) python3 bench/gpu_suite.py --out "$out" --deadline-s $(( left - 15 )) ${GPU_CHECK_ONLY:+--only "$GPU_CHECK_ONLY"}
rc=$?
log "suite exit $rc; total $(elapsed)s"
cat "$out/gpu_check.md" 2>/dev/null
exit $rc
