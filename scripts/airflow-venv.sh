#!/usr/bin/env bash
# Creates .cache/airflow-venv/ (git-ignored) with a pinned Apache Airflow, for the DAGs in
# pipelines/airflow/dags and their test (tests/pipelines/airflow.test.ts). The service itself
# never imports Python.
#
# Reproducible: apache-airflow==$AIRFLOW_VERSION is installed with pipelines/airflow/constraints.txt
# (the project's own lock of every dependency, made with `pip freeze` from a good install on CPython
# 3.11), so every machine gets the same packages from PyPI.
# Idempotent and quiet: when the venv already holds this version installed from this very lock, it
# only checks that (well under a second) and prints one line; otherwise it (re)builds the venv
# (70–150 s with an empty pip cache on 2 cores, depending on load) and prints one line. Errors go to
# stderr with pip's own output.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

AIRFLOW_VERSION=3.3.2
PYTHON_VERSION=3.11 # the lock was made on this minor version; others resolve differently

venv=.cache/airflow-venv
python=$venv/bin/python
constraints=pipelines/airflow/constraints.txt
stamp=$venv/.constraints.sha256

lock_sum() { sha256sum "$constraints" | cut -d' ' -f1; }

pins_ok() {
  [ -x "$python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(lock_sum)" ] &&
    "$python" - "$AIRFLOW_VERSION" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if version("apache-airflow") == sys.argv[1] else 1)
PY
}

if pins_ok; then
  echo "airflow-venv: $venv ready (apache-airflow $AIRFLOW_VERSION)"
  exit 0
fi

# One builder at a time (setup.sh and a developer may run this together); re-check after the wait.
# The lock is this script file itself, so that no lock file is left in the work tree.
exec 9<"$self"
if command -v flock >/dev/null; then flock 9; fi
if pins_ok; then
  echo "airflow-venv: $venv ready (apache-airflow $AIRFLOW_VERSION)"
  exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail() {
  cat "$log" >&2
  echo "airflow-venv: $*" >&2
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
  "apache-airflow==$AIRFLOW_VERSION" -c "$constraints" >"$log" 2>&1 ||
  fail "pip install apache-airflow==$AIRFLOW_VERSION -c $constraints failed"
lock_sum >"$stamp"
pins_ok || fail "installed packages do not match the pins"
echo "airflow-venv: installed apache-airflow $AIRFLOW_VERSION in $venv ($(($(date +%s) - started)) s)"
