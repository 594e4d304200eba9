import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { renderHtml, renderJson, renderMarkdown, type ComplianceReport } from '../src/report/index.js';
import { GOLDEN_FROM, GOLDEN_TO, goldenManager, HOSTILE_KEY_ID } from './fixtures-compliance/golden-fixture.js';

const GOLDEN_DIR = join(dirname(fileURLToPath(import.meta.url)), 'golden');
const UPDATE = process.env['UPDATE_GOLDEN'] === '1';

/**
 * Compares a rendering with its golden file. Golden files are written only when UPDATE_GOLDEN=1
 * (review the diff before committing); otherwise a missing or different file fails the test.
 */
function golden(name: string, actual: string): void {
  const path = join(GOLDEN_DIR, name);
  if (UPDATE) {
    mkdirSync(GOLDEN_DIR, { recursive: true });
    writeFileSync(path, actual);
    return;
  }
  if (!existsSync(path)) throw new Error(`golden file ${path} is missing: run UPDATE_GOLDEN=1 npx vitest run test/compliance-golden.test.ts and review it`);
  const expected = readFileSync(path, 'utf8');
  if (expected !== actual) {
    const a = actual.split('\n');
    const e = expected.split('\n');
    const line = a.findIndex((l, i) => l !== e[i]);
    throw new Error(`${name} differs from its golden file at line ${line + 1}:\n  golden: ${JSON.stringify(e[line])}\n  actual: ${JSON.stringify(a[line])}\n(if the change is intended, regenerate with UPDATE_GOLDEN=1 and review the diff)`);
  }
}

describe('golden reports (fixed fixture, fixed clock)', () => {
  let report: ComplianceReport;
  beforeAll(async () => {
    const { manager, framework } = goldenManager();
    report = await manager.generateComplianceReport({ framework, from: GOLDEN_FROM, to: GOLDEN_TO });
  });

  it('the same inputs give byte-identical output on a second run', async () => {
    const { manager, framework } = goldenManager();
    const again = await manager.generateComplianceReport({ framework, from: GOLDEN_FROM, to: GOLDEN_TO });
    expect(renderJson(again)).toBe(renderJson(report));
    expect(renderHtml(again)).toBe(renderHtml(report));
  });

  it('JSON', () => {
    const json = renderJson(report);
    expect(json.endsWith('}\n')).toBe(true);
    expect(JSON.parse(json)).toEqual(JSON.parse(JSON.stringify(report)));
    golden('pci-dss-report.json', json);
  });

  it('Markdown', () => {
    const text = renderMarkdown(report);
    expect(text).not.toContain(HOSTILE_KEY_ID);
    expect(text).toContain('&lt;script&gt;alert("x")&lt;/script&gt;');
    golden('pci-dss-report.md', text);
  });

  it('HTML', () => {
    const html = renderHtml(report);
    expect(html).not.toContain('<script');
    expect(html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;');
    golden('pci-dss-report.html', html);
  });
});
