#!/usr/bin/env bash
# Make this checkout ready to run (`run`) or test (`test`): Debian packages, a virtualenv
# in .venv, the pinned Python dependencies. Idempotent and quick when nothing changed.
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
extra=""
[ "$mode" = "test" ] && extra="[test]"
stamp=".venv/.installed-${mode}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing Python dependencies ($mode)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}"
  echo "$want" > "$stamp"
fi
