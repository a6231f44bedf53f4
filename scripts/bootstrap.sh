#!/usr/bin/env bash
# Make this checkout ready to run (`run`) or test (`test`): Debian packages, a virtualenv
# in .venv, the Python dependencies from the lock file (hashes checked). Idempotent and quick
# when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

bash scripts/system-deps.sh "$mode"

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "bootstrap: python3 not found. Install it: sudo apt-get install python3 python3-venv" >&2
  exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "bootstrap: Python 3.11 or newer is needed ($("$PY" --version 2>&1) found)" >&2
  exit 1
fi
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv </dev/null
  else
    echo "bootstrap: the venv module is missing. Install it: sudo apt-get install python3-venv" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
# Every package, transitive ones and the build backend included, comes from the lock file at
# its pinned version with its hash checked (`make lock` regenerates the files from
# pyproject.toml); then the portal itself, editable, with nothing more.
lock="requirements.lock"
[ "$mode" = "test" ] && lock="requirements-test.lock"
stamp=".venv/.installed-${mode}"
want="$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing Python dependencies ($mode) from $lock"
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r "$lock"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
