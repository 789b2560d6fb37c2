#!/usr/bin/env bash
# Creates a git-ignored venv .cache/NAME/ holding pinned Python packages that tests run as real peer
# clients (Airflow, MLflow's client, Triton and KServe clients); the service itself never imports Python.
#   scripts/pinned-venv.sh NAME CONSTRAINTS 'package[extras]==version' ...
# Reproducible: the packages are installed with CONSTRAINTS (`pip freeze` of a good install on CPython
# 3.11), so every machine gets the same packages from PyPI.
# Idempotent and quiet: when the venv already holds these versions installed from this very lock, it only
# checks that (well under a second) and prints one line; otherwise it (re)builds the venv (a minute or a
# few with an empty pip cache on 2 cores) and prints one line. Errors go to stderr with pip's own output.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: pinned-venv.sh NAME CONSTRAINTS REQUIREMENT..." >&2; exit 2; }
name=$1
constraints=$2
shift 2
requirements=("$@")
PYTHON_VERSION=3.11 # the locks were made on this minor version; others resolve differently

venv=.cache/$name
python=$venv/bin/python
stamp=$venv/.constraints.sha256

lock_sum() { sha256sum "$constraints" | cut -d' ' -f1; }

pins_ok() {
  [ -x "$python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(lock_sum)" ] &&
    "$python" - "${requirements[@]}" 2>/dev/null <<'PY'
import re, sys
from importlib.metadata import version
pins = [re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(.+)", r).group(1, 3) for r in sys.argv[1:]]
sys.exit(0 if all(version(p) == v for p, v in pins) else 1)
PY
}

ready() { echo "$name: $venv ready (${requirements[*]})"; }

if pins_ok; then
  ready
  exit 0
fi

# One builder of this venv at a time (setup.sh and a test may run this together); re-check after the
# wait. The lock is the constraints file, so that no lock file is left in the work tree.
exec 9<"$constraints"
if command -v flock >/dev/null; then flock 9; fi
if pins_ok; then
  ready
  exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail() {
  cat "$log" >&2
  echo "$name: $*" >&2
  exit 1
}

# python3.11 by name first (pyenv or Debian), else python3 if that is 3.11.
base=""
for candidate in "python$PYTHON_VERSION" python3; do
  if command -v "$candidate" >/dev/null &&
    [ "$("$candidate" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" = "$PYTHON_VERSION" ]; then
    base=$candidate
    break
  fi
done
[ -n "$base" ] || fail "Python $PYTHON_VERSION not found (the lock $constraints is for $PYTHON_VERSION)"

# Anything short of a venv that matches the lock is rebuilt from scratch, so no stale package stays.
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
if ! "$base" -m venv "$venv" >"$log" 2>&1; then
  # Debian's own python3 ships venv/ensurepip separately.
  rm -rf "$venv"
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$PYTHON_VERSION-venv" >>"$log" 2>&1 ||
      { DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$PYTHON_VERSION-venv" >>"$log" 2>&1; } ||
      fail "could not install python$PYTHON_VERSION-venv"
    "$base" -m venv "$venv" >>"$log" 2>&1 || fail "$base -m venv failed"
  else
    fail "$base -m venv failed (on Debian: apt-get install python$PYTHON_VERSION-venv)"
  fi
fi

started=$(date +%s)
"$python" -m pip install --quiet --disable-pip-version-check --no-input \
  "${requirements[@]}" -c "$constraints" >"$log" 2>&1 ||
  fail "pip install ${requirements[*]} -c $constraints failed"
lock_sum >"$stamp"
pins_ok || fail "installed packages do not match the pins"
echo "$name: installed ${requirements[*]} in $venv ($(($(date +%s) - started)) s)"
