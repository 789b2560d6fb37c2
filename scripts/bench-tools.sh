#!/usr/bin/env bash
# Installs the load tools bench/transport.ts runs in their own processes: wrk (Debian) and ghz (Go,
# from the module proxy), into $BIKESHARE_TOOLS_DIR/bin like scripts/ops-tools.sh. Only `npm run bench`
# needs them; the test suite does not.
set -euo pipefail
GHZ_VERSION=v0.93.0 # the newest the module proxy lists (`go list -m -versions github.com/bojand/ghz`, 2026-12-02)

dir=${BIKESHARE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bikeshare-tools}
mkdir -p "$dir/bin"
if ! command -v wrk >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get install -y -q wrk >/dev/null
fi
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then PATH=$PATH:/usr/local/go/bin; fi
stamp=$dir/stamps/ghz
if [ ! -x "$dir/bin/ghz" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$GHZ_VERSION" ]; then
  (cd "$dir" && GOBIN=$dir/bin go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION")
  mkdir -p "$dir/stamps"
  printf '%s' "$GHZ_VERSION" >"$stamp"
fi
