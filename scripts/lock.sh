#!/usr/bin/env bash
# Refresh requirements.lock, the exact version of every package (direct and
# transitive) that scripts/setup.sh, and so CI, installs.
#
#   bash scripts/lock.sh             # re-resolve after editing pyproject.toml; keeps
#                                    # every existing pin that still fits
#   bash scripts/lock.sh --upgrade   # move every package to its newest allowed version
#   bash scripts/lock.sh --upgrade-package typer   # move one package
#
# Extra arguments go to `uv pip compile`. Then run `bash scripts/test.sh` (setup.sh
# re-installs because the lock changed) and commit requirements.lock with the change.
#
# The lock is universal (one file for Linux, macOS and Windows; platform-only packages
# such as torch's CUDA libraries carry markers) and holds one version per package for
# Python >= 3.11 (--fork-strategy fewest), so 3.11 and 3.12 machines run the same
# versions. It covers the dev and analysis extras, not the gpu extra (CUDA-only wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
PY=${PYTHON:-python3}
if command -v uv >/dev/null && [ "$(uv --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then
  UV=uv
else
  # A pinned uv in its own venv, so the lock does not depend on which uv is around.
  if [ ! -x .venv-lock/bin/uv ] || [ "$(.venv-lock/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    "$PY" -m venv .venv-lock
    .venv-lock/bin/python -m pip install -q "uv==$UV_VERSION"
  fi
  UV=.venv-lock/bin/uv
fi
"$UV" pip compile pyproject.toml \
  --extra dev --extra analysis \
  --universal --fork-strategy fewest --python-version 3.11 \
  --custom-compile-command "bash scripts/lock.sh" \
  --quiet -o requirements.lock "$@"
echo "requirements.lock: $(grep -c '^[A-Za-z0-9]' requirements.lock) packages pinned"
