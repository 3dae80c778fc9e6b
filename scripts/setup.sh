#!/usr/bin/env bash
# Create .venv and install diccae with its test tools at the exact versions in
# requirements.lock (made by scripts/lock.sh), so every machine runs what CI ran.
# Idempotent: a second run only compares a fingerprint of the lock, pyproject.toml
# and the Python version, and re-installs when one of them changed (packages the
# new lock no longer lists are removed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOCK=requirements.lock
if command -v flock >/dev/null; then  # demo.sh and test.sh started together: one installs
  exec 9>.setup.lock
  flock 9
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: $LOCK is resolved for Python >= 3.11, but $PY is $("$PY" -V 2>&1)." >&2
    echo "       Run with PYTHON=python3.11 (or newer), or install without the lock:" >&2
    echo "       python -m pip install -e '.[dev]'" >&2
    exit 1
  fi
  "$PY" -m venv .venv
fi
stamp=.venv/.diccae-installed
want="$(cat "$LOCK" pyproject.toml | sha256sum | cut -d' ' -f1) $(.venv/bin/python -V 2>&1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -f "$stamp"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$LOCK"
  # The lock must satisfy pyproject.toml (an edit there needs `bash scripts/lock.sh`).
  .venv/bin/python - "$LOCK" <<'EOF'
import re, sys, tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
text = open(sys.argv[1]).read()
pins = {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", text, re.M)}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project.get("optional-dependencies", {})
stale = []
for spec in project["dependencies"] + extras.get("dev", []) + extras.get("analysis", []):
    req = Requirement(spec)
    have = pins.get(canonicalize_name(req.name))
    if have is None or not req.specifier.contains(have, prereleases=True):
        stale.append(f"{spec} (lock: {have or 'missing'})")
if stale:
    sys.exit(f"error: {sys.argv[1]} does not satisfy pyproject.toml: {'; '.join(stale)}.\n"
             "       Refresh it with `bash scripts/lock.sh`, then rerun.")
EOF
  .venv/bin/python -m pip install -q --no-deps -e .
  # Remove what an older lock installed and this one does not list.
  stale=$(.venv/bin/python - "$LOCK" <<'EOF'
import re, sys
from importlib.metadata import distributions
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = {norm(m.group(1)) for line in open(sys.argv[1])
          if (m := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", line))}
keep = locked | {"pip", "setuptools", "wheel", "diccae"}
print(" ".join(sorted({norm(d.metadata["Name"]) for d in distributions()} - keep)))
EOF
)
  if [ -n "$stale" ]; then
    echo "removing packages not in $LOCK: $stale"
    .venv/bin/python -m pip uninstall -q -y $stale
  fi
  .venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check >&2; exit 1; }
  echo "$want" > "$stamp"
fi
