import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createMonitoring, startMonitorServer } from '../src/index.js';
import { launchChromium } from './helpers/chromium.js';
import { softwareBackend } from './helpers/software.js';

const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c();
});

describe('/status page in headless Chromium', () => {
  it('shows the overall status, every check, the operation counts and an inline SVG latency chart', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    const { backend, metrics, monitor } = createMonitoring({ backend: raw, health: { thresholds: { healthyMs: 10_000, warningMs: 20_000 } } });
    await backend.generateKeyPair({ id: 'page-key', algorithm: 'ECDSA_P256' });
    const data = randomBytes(32);
    for (let i = 0; i < 17; i++) await backend.sign('page-key', data);
    await backend.sign('missing', data).catch(() => undefined);

    const server = await startMonitorServer({ monitor, metrics, listen: '127.0.0.1:0' });
    closers.push(() => server.close());
    const { browser, dispose } = await launchChromium();
    closers.push(dispose);
    const page = await browser.newPage();
    const external: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(server.url)) external.push(r.url());
    });
    const response = await page.goto(`${server.url}/status`);
    expect(response?.status()).toBe(200);

    expect(await page.title()).toBe('Olocus HSM status');
    expect(await page.locator('#overall-status').textContent()).toBe('Healthy');
    for (const check of ['connectivity', 'performance', 'capacity', 'security', 'fips']) {
      expect(await page.locator(`tr[data-check="${check}"] td.s`).textContent()).toBe('Healthy');
    }
    const signRow = page.locator('tr[data-operation="sign"][data-algorithm="ECDSA_P256"]');
    expect(await signRow.locator('td.success').textContent()).toBe('17');
    expect(await page.locator('tr[data-operation="sign"][data-algorithm="unknown"] td.failure').textContent()).toBe('1');
    expect(await page.locator('#total-success').textContent()).toBe('18');
    expect(await page.locator('#total-failure').textContent()).toBe('1');
    expect(await page.locator('#errors').textContent()).toContain('KeyNotFound');
    const chart = page.locator('svg#latency-chart');
    expect(await chart.isVisible()).toBe(true);
    const points = (await chart.locator('polyline').getAttribute('points'))?.trim().split(/\s+/) ?? [];
    expect(points).toHaveLength(19);
    expect(external).toEqual([]);
  });
});
