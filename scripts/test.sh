#!/usr/bin/env bash
# The whole test suite: static checks, then every vitest test; ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out

status=0
npm run --silent lint || status=1
npm run --silent check:generated || status=1

npx vitest run --reporter=default --reporter=json --outputFile.json=bench/out/vitest.json
vitest_status=$?
[ $vitest_status -eq 0 ] || status=1

node -e '
  const fs = require("node:fs");
  let r = { numPassedTests: 0, numFailedTests: 0, numTotalTests: 0 };
  try { r = JSON.parse(fs.readFileSync("bench/out/vitest.json", "utf8")); } catch { r.numFailedTests = 1; }
  const failed = r.numFailedTests + (r.numTotalTests - r.numPassedTests - r.numFailedTests);
  console.log(`${r.numPassedTests} passed, ${failed} failed`);
'
exit $status
