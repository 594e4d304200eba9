import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cli, lines, tempDir, testEnv } from './helpers.js';

/**
 * `monitor` and `health` over the software backend made by `init`. The audit log is switched off
 * in these configs: it has tests of its own, and these are about monitoring.
 */

let dir: string;
let cleanup: () => Promise<void>;
const children = new Set<ChildProcessWithoutNullStreams>();

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('olocus-cli-monitor-'));
  const init = await cli(['init', '--json'], { cwd: dir });
  expect(init.code, init.stderr).toBe(0);
  const path = join(dir, '.olocus', 'config.json');
  const config = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  await writeFile(path, JSON.stringify({ ...config, audit: { enabled: false } }));
  // A logical key (version 1 Active, rotating every 10 days): the registry exists from here on.
  const created = await cli(['keys', 'create', '--id', 'mon-key', '--algorithm', 'ECDSA_P256', '--rotation-interval', '10d'], { cwd: dir });
  expect(created.code, created.stderr).toBe(0);
});
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

interface Running {
  child: ChildProcessWithoutNullStreams;
  /** The first stdout line (the "listening" line). */
  first: Promise<string>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

function startMonitor(args: string[]): Running {
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
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => {
      children.delete(child);
      resolveFirst('');
      resolve({ code, signal, stdout, stderr });
    }),
  );
  return { child, first, exit };
}

describe('olocus-hsm monitor', () => {
  it('serves /metrics, /healthz, /readyz and /status with key counts, alerts on stderr, exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const m = startMonitor(['monitor', '--listen', `127.0.0.1:${port}`, '--interval', '1s', '--json']);
    const first = await m.first;
    expect(first, (await Promise.race([m.exit, new Promise((r) => setTimeout(r, 100))]) as { stderr?: string })?.stderr).not.toBe('');
    const announced = JSON.parse(first) as { listening: string; endpoints: string[]; registry: boolean };
    expect(announced.listening).toBe(`http://127.0.0.1:${port}`);
    expect(announced.registry).toBe(true);
    const base = announced.listening;

    const healthz = await fetch(`${base}/healthz`);
    expect(healthz.status).toBe(200);
    expect(((await healthz.json()) as { status: string }).status).toBe('alive');

    const readyz = await fetch(`${base}/readyz`);
    expect(readyz.status).toBe(200);
    const ready = (await readyz.json()) as { ready: boolean; status: string; checks: { name: string; status: string }[] };
    expect(ready).toMatchObject({ ready: true, status: 'Healthy' });
    expect(ready.checks.map((c) => c.name)).toEqual(['connectivity', 'performance', 'capacity', 'security', 'fips']);

    const status = await fetch(`${base}/status`);
    expect(status.status).toBe(200);
    const html = await status.text();
    expect(html).toContain('id="overall-status"');
    expect(html).toContain('<span data-state="Active"><span class="state Active">Active</span> <b class="n">1</b></span>');
    expect(html).toMatch(/<tr data-key="mon-key\.v1" data-state="Active" data-attention="soon">/);

    const metricsResponse = await fetch(`${base}/metrics`);
    expect(metricsResponse.status).toBe(200);
    const families = parsePrometheusTextFormat(await metricsResponse.text());
    const byName = new Map(families.map((f) => [f.name, f]));
    expect(byName.get('olocus_hsm_health_status')?.metrics[0]?.value).toBe('0');
    const keys = byName.get('olocus_hsm_keys');
    expect(keys?.type).toBe('GAUGE');
    expect(keys?.metrics).toEqual([{ labels: { state: 'Active' }, value: '1' }]);
    expect(byName.has('olocus_hsm_health_check_status')).toBe(true);

    // Rotation due within 30 days (interval 10 d): one alert line on stderr, even after several checks.
    await new Promise((r) => setTimeout(r, 2500));
    m.child.kill('SIGTERM');
    const done = await m.exit;
    expect(done.code, done.stderr).toBe(0);
    expect(done.signal).toBeNull();
    const alertLines = lines(done.stderr).filter((l) => l.startsWith('{'));
    const alerts = alertLines.map((l) => JSON.parse(l) as { msg: string; key: string; rule: string; state: string; severity: string });
    expect(alerts.filter((a) => a.key === 'rotation-due:mon-key.v1')).toEqual([expect.objectContaining({ msg: 'olocus-hsm alert', rule: 'rotation-due', state: 'firing', severity: 'warning' })]);
    expect(done.stderr).toContain('SIGTERM');
    // stdout held only the listening line.
    expect(lines(done.stdout)).toEqual([first]);
  });

  it('prints one human line with the URL, stops on SIGINT with exit 0', async () => {
    const port = await freePort();
    const m = startMonitor(['monitor', '--listen', `127.0.0.1:${port}`]);
    const first = await m.first;
    expect(first).toContain(`http://127.0.0.1:${port}`);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    m.child.kill('SIGINT');
    const done = await m.exit;
    expect(done.code, done.stderr).toBe(0);
  });

  it.each(['127.0.0.1', '127.0.0.1:0', '127.0.0.1:65536', 'localhost:http', '127.0.0.1:-5'])('rejects --listen %s naming the value (exit 2)', async (value) => {
    const r = await cli(['monitor', '--listen', value], { cwd: dir });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain('InvalidArgument');
    expect(r.stderr).toContain(`"${value}"`);
    expect(r.stdout).toBe('');
  });

  it('rejects a bad --interval naming the value (exit 2)', async () => {
    const r = await cli(['monitor', '--listen', '127.0.0.1:9', '--interval', 'soon', '--json'], { cwd: dir });
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toMatchObject({ error: { code: 'InvalidArgument' } });
    expect(r.stderr).toContain('"soon"');
  });
});

describe('olocus-hsm health', () => {
  it('human output: the overall status and one line per check; exit 0 when Healthy', async () => {
    const r = await cli(['health'], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    const out = lines(r.stdout);
    // the software backend is not FIPS validated: Healthy, with the fips check's warning shown (issue 18)
    expect(out[0]).toMatch(/^Healthy with a warning \(fips\) \(\d+(\.\d+)? ms\)$/);
    expect(out).toHaveLength(7);
    for (const [i, name] of ['connectivity', 'performance', 'capacity', 'security', 'fips'].entries()) {
      expect(out[i + 1]).toMatch(new RegExp(`^  ${name} +Healthy +\\S.* \\(\\d+(\\.\\d+)? ms\\)$`));
    }
    expect(out[6]).toMatch(/^ +warning +\S/);
    expect(r.stderr).toMatch(/^olocus-hsm: health warning \(fips\): \S.*\n$/);
  });

  it('--json: status, healthy and the five checks', async () => {
    const r = await cli(['health', '--json'], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { health: { status: string; healthy: boolean; checks: { name: string; status: string; message: string; durationMs: number }[] } };
    expect(out.health.status).toBe('Healthy');
    expect(out.health.healthy).toBe(true);
    expect(out.health.checks.map((c) => [c.name, c.status])).toEqual([
      ['connectivity', 'Healthy'],
      ['performance', 'Healthy'],
      ['capacity', 'Healthy'],
      ['security', 'Healthy'],
      ['fips', 'Healthy'],
    ]);
    for (const c of out.health.checks) expect(c.durationMs).toBeGreaterThanOrEqual(0);
    expect(out.health.checks[1]!.message).toMatch(/canary signature in/);
  });

  it('a PKCS#11 module that does not exist is Critical: exit 2, the cause named, no secret printed', async () => {
    const pin = 'pin-7f3a9c2e41';
    await writeFile(join(dir, 'p11-pin.txt'), pin + '\n', { mode: 0o600 });
    const missing = join(dir, 'no-such-module.so');
    await writeFile(
      join(dir, 'p11-missing.json'),
      JSON.stringify({ backend: { type: 'pkcs11', options: { libraryPath: missing, tokenLabel: 'nothing', pin: { file: 'p11-pin.txt' } } }, audit: { enabled: false } }),
    );
    const human = await cli(['--config', 'p11-missing.json', 'health'], { cwd: dir });
    expect(human.code).toBe(2);
    expect(lines(human.stdout)[0]).toMatch(/^Critical /);
    expect(human.stdout).toMatch(/connectivity +Critical +backend could not be opened: .*no-such-module\.so/);
    expect(lines(human.stderr)).toEqual(['olocus-hsm: health is Critical: connectivity']);

    const json = await cli(['--config', 'p11-missing.json', 'health', '--json'], { cwd: dir });
    expect(json.code).toBe(2);
    const out = JSON.parse(json.stdout) as { health: { status: string; healthy: boolean; checks: { name: string; status: string; message: string }[] } };
    expect(out.health).toMatchObject({ status: 'Critical', healthy: false });
    expect(out.health.checks[0]).toMatchObject({ name: 'connectivity', status: 'Critical' });
    expect(out.health.checks[0]!.message).toContain(missing);
    for (const text of [human.stdout, human.stderr, json.stdout, json.stderr]) expect(text).not.toContain(pin);
  });

  it('a config that cannot be read is still an error (exit 2, one line)', async () => {
    const r = await cli(['--config', 'nowhere.json', 'health'], { cwd: dir });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stdout).toBe('');
  });
});
