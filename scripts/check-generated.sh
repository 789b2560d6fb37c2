#!/usr/bin/env bash
# Fails when gen/ is not exactly what `buf generate` makes from proto/ (someone edited it, or forgot to regenerate).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npx buf generate --output "$tmp"
if ! diff -r gen "$tmp/gen" >"$tmp/diff"; then
  echo "gen/ differs from what 'buf generate' produces; run 'make generate' and commit:" >&2
  head -40 "$tmp/diff" >&2
  exit 1
fi
echo "gen/ is up to date with proto/"
