import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { StatusView } from '@olocus/hsm-monitoring';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cli, tempDir, testEnv } from './helpers.js';

/**
 * `monitor` is an operator's view of the installation: other CLI processes sign and fail a
 * login while it runs, and its /status (JSON and HTML) counts them from the shared audit log.
 */

let dir: string;
let cleanup: () => Promise<void>;
const children = new Set<ChildProcessWithoutNullStreams>();

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('olocus-cli-monitor-activity-'));
  const init = await cli(['init', '--json'], { cwd: dir, env: testEnv() });
  expect(init.code, init.stderr).toBe(0);
  const created = await cli(['keys', 'create', '--id', 'act-key', '--algorithm', 'ECDSA_P256', '--rotation-interval', '10d'], { cwd: dir, env: testEnv() });
  expect(created.code, created.stderr).toBe(0);
  await writeFile(join(dir, 'message.txt'), 'signed while the monitor watches');
}, 120_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await cleanup?.();
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function startMonitor(args: string[]): { child: ChildProcessWithoutNullStreams; first: Promise<string>; exit: Promise<{ code: number | null; stderr: string }> } {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: dir, env: testEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  let resolveFirst!: (line: string) => void;
  const first = new Promise<string>((resolve) => (resolveFirst = resolve));
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    const nl = stdout.indexOf('\n');
    if (nl !== -1) resolveFirst(stdout.slice(0, nl));
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<{ code: number | null; stderr: string }>((resolve) =>
    child.on('close', (code) => {
      children.delete(child);
      resolveFirst('');
      resolve({ code, stderr });
    }),
  );
  return { child, first, exit };
}

async function statusJson(base: string): Promise<StatusView> {
  const r = await fetch(`${base}/status.json`);
  expect(r.status).toBe(200);
  return (await r.json()) as StatusView;
}

describe('olocus-hsm monitor: the installation from the audit log', () => {
  it('counts the signatures of two other CLI processes and the login failure of a third', async () => {
    const port = await freePort();
    const m = startMonitor(['monitor', '--listen', `127.0.0.1:${port}`, '--interval', '1s', '--json']);
    const first = await m.first;
    expect(first, (await Promise.race([m.exit, new Promise((r) => setTimeout(r, 100))]) as { stderr?: string })?.stderr).not.toBe('');
    const announced = JSON.parse(first) as { listening: string; endpoints: string[]; activity: string };
    expect(announced.endpoints).toContain('/status.json');
    expect(announced.activity).toMatch(/^audit log .* \(sqlite .*audit\.db\)$/);
    const base = announced.listening;

    const before = await statusJson(base);
    expect(before.activity.operations.find((o) => o.type === 'key.sign')?.success ?? 0).toBe(0);
    expect(before.activity.loginFailures.count).toBe(0);

    // Two separate processes sign at the same time; a third opens the store with a wrong passphrase.
    const [a, b] = await Promise.all([
      cli(['sign', '--key', 'act-key', '--in', 'message.txt', '--out', 'a.sig'], { cwd: dir, env: testEnv() }),
      cli(['sign', '--key', 'act-key', '--in', 'message.txt', '--out', 'b.sig'], { cwd: dir, env: testEnv() }),
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const wrong = await cli(['sign', '--key', 'act-key', '--in', 'message.txt', '--out', 'c.sig'], { cwd: dir, env: testEnv({ OLOCUS_HSM_PASSPHRASE: 'not-the-store-passphrase' }) });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain('WrongPassphrase');

    // The page reads only what was appended since its last read; the health report refreshes every second.
    let view = await statusJson(base);
    for (let i = 0; i < 40 && (view.activity.loginFailures.count < 1 || view.health.checks.find((c) => c.name === 'security')?.status === 'Healthy'); i++) {
      await new Promise((r) => setTimeout(r, 250));
      view = await statusJson(base);
    }
    const sign = view.activity.operations.find((o) => o.type === 'key.sign');
    expect(sign).toMatchObject({ success: 2, failure: 0 });
    expect(sign?.p50Ms).toBeGreaterThan(0);
    const monitorOrigin = `${hostname()}:${m.child.pid}`;
    const signers = view.activity.processes.filter((p) => p.origin !== monitorOrigin && p.operations > 0);
    expect(signers.length).toBeGreaterThanOrEqual(2);
    expect(view.activity.series.reduce((n, p) => n + p.success, 0)).toBe(view.activity.totals.success);

    expect(view.activity.loginFailures.count).toBe(1);
    expect(view.activity.loginFailures.recent[0]).toMatchObject({ errorCode: 'WrongPassphrase', backend: 'software' });
    expect(view.activity.loginFailures.recent[0]?.origin).not.toBe(monitorOrigin);
    const security = view.health.checks.find((c) => c.name === 'security');
    expect(security).toMatchObject({ status: 'Degraded', metric: 1 });
    expect(security?.message).toContain('all processes');

    // FIPS: the software backend is a warning, not Healthy.
    expect(view.fips.display).toBe('Warning');
    expect(view.health.checks.find((c) => c.name === 'fips')?.display).toBe('Warning');

    // Keys: the registry's version with its next rotation, and the backend's own keys.
    const key = view.keys?.items.find((k) => k.keyId === 'act-key.v1');
    expect(key).toMatchObject({ state: 'Active', baseKeyId: 'act-key', attention: 'soon' });
    expect(Date.parse(key!.rotationDueAt!) - Date.parse(key!.activatedAt!)).toBe(10 * 86_400_000);
    expect(view.keys?.items.find((k) => k.keyId === 'olocus-health-canary')).toMatchObject({ source: 'backend' });
    expect(view.alerts?.firing.map((x) => x.key)).toContain('rotation-due:act-key.v1');

    // Prometheus gets the installation's counts too (the signing processes could not be scraped).
    const prom = await (await fetch(`${base}/metrics`)).text();
    expect(prom).toContain('olocus_hsm_audit_operations_total{operation="sign",outcome="success"} 2');
    expect(prom).toContain('olocus_hsm_audit_login_failures_total 1');

    // The HTML page shows the same numbers, under its Content-Security-Policy.
    const page = await fetch(`${base}/status`);
    expect(page.headers.get('content-security-policy')).toMatch(/^default-src 'none'; style-src 'sha256-/);
    const html = await page.text();
    expect(html).toMatch(/<tr data-type="key\.sign"><td>key\.sign<\/td><td class="n success">2<\/td>/);
    expect(html).toContain('<span id="login-failures" class="late">1</span>');
    expect(html).toContain('id="fips-warning"');
    // The canary signatures of the monitor itself are not counted as traffic (they are in the log, tagged).
    const canary = await cli(['audit', 'tail', '--lines', '500', '--json'], { cwd: dir, env: testEnv() });
    expect(canary.stdout).toContain('health-canary');

    m.child.kill('SIGTERM');
    const done = await m.exit;
    expect(done.code, done.stderr).toBe(0);
  }, 120_000);
});
