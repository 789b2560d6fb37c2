#!/usr/bin/env bash
# The whole test suite: static checks, then every vitest test. Ends with the plain line
# "N passed, N failed", where each static check counts as one test beside the vitest tests.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out

checks_passed=0
checks_failed=0
check() {
  echo "== $1"
  if "${@:2}"; then checks_passed=$((checks_passed + 1)); else checks_failed=$((checks_failed + 1)); echo "FAILED: $1"; fi
}
check "biome (lint + format)" npx biome check .
check "tsc --noEmit (strict)" npx tsc --noEmit
check "buf lint" npx buf lint
check "gen/ matches buf generate" bash scripts/check-generated.sh

rm -f bench/out/vitest.json
npx vitest run --reporter=default --reporter=json --outputFile.json=bench/out/vitest.json
vitest_status=$?

CHECKS_PASSED=$checks_passed CHECKS_FAILED=$checks_failed VITEST_STATUS=$vitest_status node scripts/test-summary.cjs
