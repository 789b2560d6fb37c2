// Prints each failed test with the start of its failure message, then the plain line
// "N passed, N failed". CI keeps only the tail of the output, so the causes must come last.
const fs = require("node:fs");
const { stripVTControlCharacters } = require("node:util");

let passed = Number(process.env.CHECKS_PASSED);
let failed = Number(process.env.CHECKS_FAILED);
try {
  const report = JSON.parse(fs.readFileSync("bench/out/vitest.json", "utf8"));
  passed += report.numPassedTests;
  failed += report.numTotalTests - report.numPassedTests;
  if (report.numTotalTests === 0) failed += 1;
  for (const file of report.testResults) {
    const failures = file.assertionResults.filter((t) => t.status === "failed");
    if (file.status === "failed" && failures.length === 0 && file.message) {
      console.log(`FAILED ${file.name}: ${clip(file.message)}`);
    }
    for (const test of failures) {
      console.log(`FAILED ${test.fullName}:\n${clip(test.failureMessages.join("\n"))}`);
    }
  }
} catch {
  failed += 1; // vitest did not even write its report
}
if (Number(process.env.VITEST_STATUS) !== 0 && failed === 0) failed = 1; // e.g. an error outside any test
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

function clip(text) {
  const plain = stripVTControlCharacters(text);
  return plain.length > 2000 ? `${plain.slice(0, 2000)}…` : plain;
}
