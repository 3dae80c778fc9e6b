#!/usr/bin/env bash
# Download the wheels the GPU check needs (scripts/gpu_wheels.txt) into .whl/ (git-ignored),
# for the GPU test machine's Python 3.12 on x86-64, and print their total size.
# The device tool carries at most 64 MiB with the working tree, so stop above 60 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .whl && mkdir -p .whl
grep -v '^\s*#' scripts/gpu_wheels.txt | grep -v '^\s*$' > .whl/.want
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r .whl/.want
rm -f .whl/.want
bytes=$(du -cb .whl/*.whl | tail -1 | cut -f1)
ls -l .whl
echo "total: $bytes bytes ($(( bytes / 1048576 )) MiB) in $(ls .whl/*.whl | wc -l) wheels"
if [ "$bytes" -gt $(( 60 * 1048576 )) ]; then
  echo "over the 60 MiB budget: drop a wheel from scripts/gpu_wheels.txt" >&2
  exit 1
fi
