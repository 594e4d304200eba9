// Adds up the JSON reports that each package's vitest run wrote and prints one closing line.
// Exits non-zero when any test failed, or when no test ran at all.
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
let passed = 0;
let failed = 0;
let skipped = 0;
const missing = [];
const failures = [];
// every workspace folder whose package.json has a test script must have left a report
const workspaces = [...readdirSync(join(root, 'packages')).map((name) => join('packages', name)), 'examples'];
for (const name of workspaces) {
  const manifest = join(root, name, 'package.json');
  if (!existsSync(manifest) || !JSON.parse(readFileSync(manifest, 'utf8')).scripts?.test) continue;
  const file = join(root, name, '.test-results', 'vitest.json');
  if (!existsSync(file)) {
    missing.push(name);
    continue;
  }
  const report = JSON.parse(readFileSync(file, 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  skipped += report.numPendingTests + report.numTodoTests;
  for (const file of report.testResults ?? []) {
    const where = relative(root, file.name);
    for (const test of file.assertionResults ?? []) {
      if (test.status === 'failed') failures.push(`${where} > ${test.fullName}\n${firstLines(test.failureMessages?.join('\n'))}`);
    }
    // a file can fail outside any test (an unhandled error, a crash at import or teardown)
    if (file.status === 'failed' && !(file.assertionResults ?? []).some((t) => t.status === 'failed')) {
      failures.push(`${where} (the file, outside its tests)\n${firstLines(file.message)}`);
    }
  }
}
// CI shows only the end of the output: the failures are repeated here, short, so they are seen there
function firstLines(text = '') {
  return String(text)
    .split('\n')
    .filter((line) => line.trim() && !line.includes('node_modules'))
    .slice(0, 8)
    .map((line) => `    ${line.slice(0, 300)}`)
    .join('\n');
}
if (failures.length) console.log(`failed:\n${failures.map((f) => `  ${f}`).join('\n')}`);
if (missing.length) console.log(`workspaces without a test report (their tests did not run): ${missing.join(', ')}`);
console.log(`${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ''));
process.exit(failed > 0 || passed === 0 || missing.length > 0 ? 1 : 0);
