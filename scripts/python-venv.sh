#!/usr/bin/env bash
# Creates .venv/ (git-ignored) with pinned numpy and scipy: the reference implementation the drift
# tests (tests/core/drift.test.ts) compare core/drift/ against. Nothing in the service imports Python.
#
# Idempotent and quiet: when .venv/ already holds exactly these versions it only checks them
# (a few tens of milliseconds) and prints one line; otherwise it (re)builds .venv/ and prints one line.
# Errors go to stderr with the tool's own output.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

# Versions published on PyPI for CPython 3.11 (`pip index versions scipy|numpy`).
NUMPY_VERSION=2.4.6
SCIPY_VERSION=1.17.1

venv=.venv
python=$venv/bin/python

pins_ok() {
  [ -x "$python" ] && "$python" - "$NUMPY_VERSION" "$SCIPY_VERSION" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if (version("numpy"), version("scipy")) == (sys.argv[1], sys.argv[2]) else 1)
PY
}

if pins_ok; then
  echo "python-venv: $venv ready (numpy $NUMPY_VERSION, scipy $SCIPY_VERSION)"
  exit 0
fi

# One builder at a time (setup.sh and a developer may run this together); re-check after the wait.
# The lock is this script file itself, so that no lock file is left in the work tree.
exec 9<"$self"
if command -v flock >/dev/null; then flock 9; fi
if pins_ok; then
  echo "python-venv: $venv ready (numpy $NUMPY_VERSION, scipy $SCIPY_VERSION)"
  exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail() {
  cat "$log" >&2
  echo "python-venv: $*" >&2
  exit 1
}

command -v python3 >/dev/null || fail "python3 not found (scripts/setup.sh installs it)"

# A venv whose interpreter is gone or whose packages are wrong is rebuilt from scratch.
if ! [ -x "$python" ] || ! "$python" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >"$log" 2>&1; then
    # Debian's own python3 ships venv/ensurepip separately.
    rm -rf "$venv"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$pyver-venv" >>"$log" 2>&1 ||
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$log" 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$pyver-venv" >>"$log" 2>&1; } ||
        fail "could not install python$pyver-venv"
      python3 -m venv "$venv" >>"$log" 2>&1 || fail "python3 -m venv failed"
    else
      fail "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
  fi
fi

"$python" -m pip install --quiet --disable-pip-version-check --no-input \
  "numpy==$NUMPY_VERSION" "scipy==$SCIPY_VERSION" >"$log" 2>&1 ||
  fail "pip install numpy==$NUMPY_VERSION scipy==$SCIPY_VERSION failed"
pins_ok || fail "installed packages do not match the pins"
echo "python-venv: installed numpy $NUMPY_VERSION and scipy $SCIPY_VERSION in $venv"
