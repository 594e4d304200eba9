import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openAuditLog, type AuditLog } from '@olocus/hsm-compliance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMonitoring, startMonitorServer, STATUS_PAGE_CSP, type ActivitySource, type KeyInventoryItem, type StatusView } from '../src/index.js';
import { launchChromium } from './helpers/chromium.js';
import { softwareBackend } from './helpers/software.js';

/**
 * The operator page in headless Chromium. Two separate processes sign through one audit log
 * (one also fails a sign and a passphrase); the page, served by a third process (this one),
 * must show their operations, the login failure, the FIPS warning and per-minute charts.
 */

const WRITER = fileURLToPath(new URL('./fixtures/audit-writer.mjs', import.meta.url));
const RESULTS = fileURLToPath(new URL('../.test-results/', import.meta.url));
const MIN = 60_000;

const closers: Array<() => Promise<void>> = [];
let dir: string;
afterAll(async () => {
  for (const c of closers.reverse()) await c();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function runWriter(args: string[]): Promise<{ origin: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, ...args], { cwd: fileURLToPath(new URL('.', import.meta.url)), env: { ...process.env, WRITER_PASSPHRASE: 'writer-test-passphrase' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.trim()) as { origin: string }) : reject(new Error(`audit writer exited ${code}: ${err}`))));
  });
}

/** The audit log as an activity source: the same few lines the CLI's monitor command has. */
function activityOf(log: AuditLog): ActivitySource {
  return {
    description: `audit log ${log.logName} (sqlite)`,
    read: ({ from, afterSeq }) => log.iterate({ ...(afterSeq === undefined ? { from } : { afterSeq }), types: ['key.sign', 'key.verify', 'key.generate', 'key.access', 'key.destroy', 'auth.failure'] }),
  };
}

let log: AuditLog;
let origins: { a: string; b: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'olocus-status-page-'));
  const db = join(dir, 'audit.db');
  log = await openAuditLog({ storage: { kind: 'sqlite', path: db }, origin: 'status-page-test' });
  closers.push(() => log.close());
  // An hour of history from a third node, so the charts have a shape: a few signs per minute
  // with latency rising and falling, and failures in three minutes.
  const now = Date.now();
  const history: Promise<unknown>[] = [];
  for (let m = 58; m >= 2; m--) {
    const per = 3 + ((m * 7) % 9);
    for (let i = 0; i < per; i++) {
      const latencyMs = 4 + 3 * Math.sin(m / 6) + 1.5 * i + (i === per - 1 ? 18 + (m % 5) * 4 : 0);
      history.push(log.append({ type: 'key.sign', actor: 'svc-payments', outcome: 'success', origin: 'node-b:7311', backend: 'pkcs11', keyId: 'payments.v3', algorithm: 'ECDSA_P256', latencyMs, time: new Date(now - m * MIN + i * 1000) }));
    }
    if (m % 17 === 0) history.push(log.append({ type: 'key.sign', actor: 'svc-payments', outcome: 'failure', origin: 'node-b:7311', backend: 'pkcs11', keyId: 'payments.v3', errorCode: 'DeviceUnavailable', latencyMs: 250, time: new Date(now - m * MIN + 30_000) }));
  }
  await Promise.all(history);
  // Two real processes: A signs 23 times and fails one sign; B signs 7 times and opens A's store with a wrong passphrase.
  const storeA = join(dir, 'store-a');
  const storeB = join(dir, 'store-b');
  const a = await runWriter([db, storeA, '23', '--fail-sign']);
  const b = await runWriter([db, storeB, '7', '--wrong-passphrase-on', storeA]);
  origins = { a: a.origin, b: b.origin };
}, 120_000);

describe('/status in headless Chromium', () => {
  it('shows the installation: operations of other processes, the login failure, FIPS as a warning, alerts, keys and per-minute charts', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    const m = createMonitoring({ backend: raw, activity: activityOf(log), health: { thresholds: { healthyMs: 10_000, warningMs: 20_000 } }, alerts: { sinks: [] } });
    closers.push(() => m.stop());
    const alerts = m.alerts!;
    alerts.fire('cryptoperiod:expiring:payments.v3', { rule: 'cryptoperiod', severity: 'warning', summary: 'key payments (version payments.v3): cryptoperiod ends in 12 day(s)', details: {} });
    alerts.fire('circuit', { rule: 'circuit', severity: 'critical', summary: 'the HSM circuit breaker is open (device unavailable)', details: {} });
    alerts.resolve('circuit', 'the HSM circuit breaker closed');
    const now = Date.now();
    const day = 86_400_000;
    const keys: KeyInventoryItem[] = [
      { keyId: 'payments.v3', baseKeyId: 'payments', version: 3, state: 'Active', algorithm: 'ECDSA_P256', activatedAt: new Date(now - 78 * day), rotationDueAt: new Date(now + 12 * day), expiresAt: new Date(now + 12 * day), lastUsedAt: new Date(now - 2 * MIN), usageCount: 41_230, source: 'registry' },
      { keyId: 'payments.v2', baseKeyId: 'payments', version: 2, state: 'Superseded', algorithm: 'ECDSA_P256', expiresAt: new Date(now - 80 * day), source: 'registry' },
      { keyId: 'releases.v1', baseKeyId: 'releases', version: 1, state: 'Active', algorithm: 'Ed25519', rotationDueAt: new Date(now - 3 * day), expiresAt: new Date(now + 200 * day), source: 'registry' },
      { keyId: 'tokens.v7', baseKeyId: 'tokens', version: 7, state: 'Active', algorithm: 'RSA_PSS_3072', rotationDueAt: new Date(now + 60 * day), expiresAt: new Date(now + 400 * day), source: 'registry' },
      { keyId: 'payments.v1', baseKeyId: 'payments', version: 1, state: 'Destroyed', algorithm: 'ECDSA_P256', source: 'registry' },
      { keyId: 'olocus-health-canary', state: 'enabled', algorithm: 'ECDSA_P256', source: 'backend' },
    ];
    const server = await startMonitorServer({ monitor: m.monitor, metrics: m.metrics, listen: '127.0.0.1:0', activity: m.activity, alerts, inventory: async () => keys });
    closers.push(() => server.close());

    const { browser, dispose } = await launchChromium();
    closers.push(dispose);
    const page = await browser.newPage();
    await page.setViewportSize({ width: 1280, height: 900 });
    const external: string[] = [];
    const consoleErrors: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(server.url)) external.push(r.url());
    });
    page.on('console', (msg) => {
      if (msg.type() === 'error') consoleErrors.push(msg.text());
    });
    const response = await page.goto(`${server.url}/status`);
    expect(response?.status()).toBe(200);
    expect(response?.headers()['content-security-policy']).toBe(STATUS_PAGE_CSP);
    expect(await page.title()).toBe('Olocus HSM status');

    // Operations of the two writer processes and the history node, by process and by type.
    const row = (origin: string) => page.locator(`#processes tr[data-origin="${origin}"] td`);
    expect(await row(origins.a).nth(1).textContent()).toBe('25'); // generate + 23 signs + 1 failed sign
    expect(await row(origins.a).nth(2).textContent()).toBe('1');
    expect(await row(origins.b).nth(1).textContent()).toBe('8'); // generate + 7 signs
    expect(await row('node-b:7311').count()).toBe(4);
    const sign = page.locator('#operations tr[data-type="key.sign"]');
    const signOk = Number(await sign.locator('td.success').textContent());
    const signFailed = Number(await sign.locator('td.failure').textContent());
    expect(signFailed).toBe(1 + 3); // A's missing key + three DeviceUnavailable minutes
    expect(signOk).toBeGreaterThan(30);
    expect(Number(await page.locator('#total-success').textContent())).toBe(signOk + 2); // + two generates
    expect(await page.locator('#errors').textContent()).toContain('KeyNotFound');
    // The monitor's own canary signatures are not counted as traffic.
    expect(await page.locator('#operations').textContent()).not.toContain('olocus-health-canary');

    // B's wrong passphrase: one login failure, listed with its process, and the security check sees it.
    expect(await page.locator('#login-failures').textContent()).toBe('1');
    expect(await page.locator('#login-failure-list tr.login-failure').first().textContent()).toContain(origins.b);
    expect(await page.locator('#login-failure-list').textContent()).toContain('WrongPassphrase');
    expect(await page.locator('tr[data-check="security"] td.s').textContent()).toBe('Degraded');
    expect(await page.locator('#overall-status').textContent()).toBe('Degraded');

    // FIPS: the software backend is not validated, shown as a warning and not as Healthy.
    expect(await page.locator('#fips-warning').isVisible()).toBe(true);
    expect(await page.locator('#fips-warning').textContent()).toContain('not FIPS validated');
    expect(await page.locator('tr[data-check="fips"] td.s').textContent()).toBe('Warning');
    expect(await page.locator('#tile-fips').getAttribute('class')).toContain('warn');

    // Alerts with their state and since when.
    expect(await page.locator('#alerts tr[data-alert="cryptoperiod:expiring:payments.v3"]').getAttribute('data-state')).toBe('firing');
    expect(await page.locator('#alerts tr[data-alert="circuit"]').getAttribute('data-state')).toBe('resolved');
    // when it changed, relative to now ("now" when the page is rendered within the same second)
    expect(await page.locator('#alerts tr[data-alert="circuit"]').textContent()).toMatch(/\d{2}:\d{2}:\d{2} UTC(now|.+ ago)/);
    // The login failure made health Degraded: the health rule fired.
    expect(await page.locator('#alerts tr[data-alert="health"]').getAttribute('data-state')).toBe('firing');

    // Keys: state, next rotation, cryptoperiod end; overdue and soon marked; destroyed counted, not listed.
    expect(await page.locator('#key-inventory tr[data-key="releases.v1"]').getAttribute('data-attention')).toBe('overdue');
    expect(await page.locator('#key-inventory tr[data-key="payments.v3"]').getAttribute('data-attention')).toBe('soon');
    expect(await page.locator('#key-inventory tr[data-key="tokens.v7"]').getAttribute('data-attention')).toBe('ok');
    expect(await page.locator('#key-inventory tr[data-key="payments.v3"]').textContent()).toContain('in 12.0 d');
    expect(await page.locator('#key-inventory tr[data-key="payments.v1"]').count()).toBe(0);
    expect(await page.locator('#keys-total').textContent()).toBe('6');

    // Charts: one bar group per active minute, latency points with p50 <= p99, lines across minutes.
    const bars = page.locator('#rate-chart g.point');
    expect(await bars.count()).toBeGreaterThanOrEqual(50);
    let charted = 0;
    for (const g of await bars.all()) charted += Number(await g.getAttribute('data-success')) + Number(await g.getAttribute('data-failure'));
    expect(charted).toBe(signOk + signFailed + 2);
    const dots = page.locator('#latency-chart g.point');
    expect(await dots.count()).toBeGreaterThanOrEqual(50);
    for (const g of (await dots.all()).slice(0, 10)) {
      const p50 = Number(await g.getAttribute('data-p50'));
      const p99 = Number(await g.getAttribute('data-p99'));
      expect(p50).toBeGreaterThan(0);
      expect(p99).toBeGreaterThanOrEqual(p50);
    }
    expect(await page.locator('#latency-p50 polyline').count()).toBeGreaterThanOrEqual(1);
    expect(await page.locator('#latency-p99 polyline').count()).toBeGreaterThanOrEqual(1);
    expect(await page.locator('#rate-chart').isVisible()).toBe(true);

    // The page refreshes itself, loads nothing else and breaks none of its own policy.
    expect(await page.locator('meta[http-equiv="refresh"]').getAttribute('content')).toBe('10');
    expect(external).toEqual([]);
    expect(consoleErrors).toEqual([]);

    mkdirSync(RESULTS, { recursive: true });
    const shot = join(RESULTS, 'status.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(20_000);

    // The same view as JSON, by path and by Accept header.
    const json = (await (await fetch(`${server.url}/status.json`)).json()) as StatusView;
    expect(json.activity.processes.find((p) => p.origin === origins.a)).toMatchObject({ operations: 25, failures: 1 });
    expect(json.activity.loginFailures.count).toBe(1);
    expect(json.fips).toMatchObject({ display: 'Warning' });
    expect(json.fips.warning).toContain('not FIPS validated');
    expect(json.activity.series).toHaveLength(60);
    expect(json.alerts?.firing.map((a) => a.key).sort()).toEqual(['cryptoperiod:expiring:payments.v3', 'health']);
    const negotiated = await fetch(`${server.url}/status`, { headers: { accept: 'application/json' } });
    expect(negotiated.headers.get('content-type')).toContain('application/json');
    expect(((await negotiated.json()) as StatusView).activity.totals.success).toBe(signOk + 2);
  }, 120_000);

  it('without an audit log shows this process: its own operations and charts', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    const { backend, metrics, monitor, activity } = createMonitoring({ backend: raw, health: { thresholds: { healthyMs: 10_000, warningMs: 20_000 } } });
    await backend.generateKeyPair({ id: 'page-key', algorithm: 'ECDSA_P256' });
    const data = new Uint8Array(32);
    for (let i = 0; i < 17; i++) await backend.sign('page-key', data);
    await backend.sign('missing', data).catch(() => undefined);
    const server = await startMonitorServer({ monitor, metrics, activity, listen: '127.0.0.1:0' });
    closers.push(() => server.close());
    const { browser, dispose } = await launchChromium();
    closers.push(dispose);
    const page = await browser.newPage();
    expect((await page.goto(`${server.url}/status`))?.status()).toBe(200);
    expect(await page.locator('#activity-source').textContent()).toContain('this process only');
    expect(await page.locator('#operations tr[data-type="key.sign"] td.success').textContent()).toBe('17');
    expect(await page.locator('#operations tr[data-type="key.sign"] td.failure').textContent()).toBe('1');
    expect(await page.locator('#process-success').textContent()).toBe('18');
    expect(await page.locator('#rate-chart g.point').count()).toBe(1);
    expect(Number(await page.locator('#latency-chart g.point').getAttribute('data-p50'))).toBeGreaterThan(0);
    expect(await page.locator('#login-failures').textContent()).toBe('0');
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: join(RESULTS, 'status-this-process.png'), fullPage: true });
  }, 60_000);
});
