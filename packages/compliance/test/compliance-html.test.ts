import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderHtml, type ComplianceReport } from '../src/report/index.js';
import { GOLDEN_FROM, GOLDEN_TO, goldenManager, HOSTILE_KEY_ID } from './fixtures-compliance/golden-fixture.js';

const CHROMIUM = '/usr/bin/chromium';

/** Debian's Chromium driven by playwright-core (no browser download); fails, never skips, when absent. */
async function launch(profile: string): Promise<BrowserContext> {
  if (!existsSync(CHROMIUM)) throw new Error(`the HTML report test needs Debian's Chromium at ${CHROMIUM}: apt-get install chromium`);
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

describe('HTML report in headless Chromium', () => {
  let dir: string;
  let browser: BrowserContext;
  let report: ComplianceReport;
  let file: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'olocus-compliance-html-'));
    const { manager, framework } = goldenManager();
    report = await manager.generateComplianceReport({ framework, from: GOLDEN_FROM, to: GOLDEN_TO });
    file = join(dir, 'report.html');
    writeFileSync(file, renderHtml(report));
    browser = await launch(join(dir, 'profile'));
  });
  afterAll(async () => {
    await browser?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows the key numbers, both charts, the escaped hostile key id, and loads nothing external', async () => {
    const page = await browser.newPage();
    const requests: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith('file:')) requests.push(r.url());
    });
    const dialogs: string[] = [];
    page.on('dialog', async (d) => {
      dialogs.push(d.message());
      await d.dismiss();
    });
    await page.goto(pathToFileURL(file).href);

    expect(await page.title()).toBe('Compliance report: PCI DSS v4.0.1');
    // Summary numbers, as the page shows them.
    expect(await page.locator('#overall-status').textContent()).toBe(report.summary.status);
    expect(await page.locator('#metric-signs').textContent()).toBe(String(report.metrics.totals.signs));
    expect(await page.locator('#violations-count').textContent()).toBe(String(report.violations.length));
    expect(await page.locator('#score-integrity').textContent()).toBe(String(report.scores.integrity.value));
    // biome-ignore lint/performance/useDomNodeTextContent: Playwright's innerText is the rendered text a reader sees
    const text = (await page.locator('body').innerText()).replace(/\s+/g, ' ');
    expect(text).toContain(`${report.metrics.totals.signs} signatures`);
    expect(text).toContain(`${report.scores.availability.value} availability score`);
    // The summary comes before the findings.
    const order: number[] = [];
    for (const id of ['summary', 'metrics', 'violations-section', 'recommendations', 'modules', 'audit-integrity']) order.push((await page.locator(`#${id}`).boundingBox())?.y ?? -1);
    expect(order.every((y, i) => y >= 0 && (i === 0 || y > order[i - 1]!))).toBe(true);
    // Charts: inline SVG with one bar per day.
    for (const id of ['chart-operations', 'chart-failures']) {
      const chart = page.locator(`svg#${id}`);
      expect(await chart.isVisible()).toBe(true);
      expect(await chart.locator('rect').count()).toBe(report.metrics.perDay.length);
    }
    const failureBars = await page.locator('svg#chart-failures rect').evaluateAll((rects) => rects.map((r) => Number(r.getAttribute('data-value'))));
    expect(failureBars).toEqual(report.metrics.perDay.map((d) => d.failures));
    // The hostile key id is text, not markup.
    expect(await page.locator('script').count()).toBe(0);
    expect(text).toContain(HOSTILE_KEY_ID);
    expect(dialogs).toEqual([]);
    expect(requests).toEqual([]);
    // Violations table rows carry the rule ids.
    expect(await page.locator('#violations tbody tr').count()).toBe(report.violations.length);
  });
});
