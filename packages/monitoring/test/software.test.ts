import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HsmError } from '@olocus/hsm-core';
import parsePrometheusTextFormat, { type ParsedFamily } from 'parse-prometheus-text-format';
import { afterAll, describe, expect, it } from 'vitest';
import { AlertManager, callbackSink, createMonitoring, HealthMonitor, HsmMetrics, logSink, startMonitorServer, webhookSink, type Alert, type HealthReport } from '../src/index.js';
import { counting, faulty, softwareBackend } from './helpers/software.js';

const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c();
});

const sample = (families: ParsedFamily[], name: string, labels: Record<string, string>): number | undefined => {
  const family = families.find((f) => f.name === name);
  const s = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  if (!s) return undefined;
  return Number(s.value ?? s.count);
};

describe('health checks (software backend)', () => {
  it('is Healthy, creates the canary key once and reuses it, and leaves application keys alone', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    const { backend, calls } = counting(raw);
    await raw.generateKeyPair({ id: 'app-key', algorithm: 'ECDSA_P256' });
    const monitor = new HealthMonitor({ backend, thresholds: { healthyMs: 10_000, warningMs: 20_000 } });

    const first = await monitor.performHealthCheck();
    expect(first.status, JSON.stringify(first.checks)).toBe('Healthy');
    expect(first.checks.map((c) => c.name)).toEqual(['connectivity', 'performance', 'capacity', 'security', 'fips']);
    for (const c of first.checks) {
      expect(c.status).toBe('Healthy');
      expect(c.message.length).toBeGreaterThan(0);
      expect(c.durationMs).toBeGreaterThanOrEqual(0);
    }
    expect(first.checks.find((c) => c.name === 'performance')?.unit).toBe('ms');
    // Not validated: Healthy (readiness is about operation), with a warning the status page shows.
    const fips = first.checks.find((c) => c.name === 'fips');
    expect(fips?.message).toMatch(/not FIPS validated/);
    expect(fips?.warning).toBe('the module is not FIPS validated');
    expect(fips?.details).toMatchObject({ standard: 'none', level: 0, evidence: 'none' });

    await monitor.performHealthCheck();
    await monitor.performHealthCheck();
    expect(calls.generateKeyPair).toBe(1);
    expect(monitor.canaryCreations).toBe(1);
    expect(calls.sign).toBe(3);

    // a second monitor (another process, a restart) finds the existing canary instead of creating one
    const again = new HealthMonitor({ backend, thresholds: { healthyMs: 10_000, warningMs: 20_000 } });
    expect((await again.performHealthCheck()).status).toBe('Healthy');
    expect(calls.generateKeyPair).toBe(1);
    expect(again.canaryCreations).toBe(0);

    const ids = (await raw.listKeys()).keys.map((k) => k.id).sort();
    expect(ids).toEqual(['app-key', 'olocus-health-canary']);
    const canary = await raw.getKey('olocus-health-canary');
    expect(canary.algorithm).toBe('ECDSA_P256');
    // the application's key was never signed with by the monitor, and its id is not taken
    await expect(raw.generateKeyPair({ id: 'app-key-2', algorithm: 'Ed25519' })).resolves.toMatchObject({ id: 'app-key-2' });

    // a configurable canary id
    const custom = new HealthMonitor({ backend, healthKeyId: 'ops.canary', thresholds: { healthyMs: 10_000, warningMs: 20_000 } });
    expect((await custom.performHealthCheck()).status).toBe('Healthy');
    expect((await raw.getKey('ops.canary')).id).toBe('ops.canary');
  });

  it('is Critical when the backend is unreachable, and for a closed backend', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    const report = await new HealthMonitor({ backend: faulty(raw, { info: 'reject' }) }).performHealthCheck();
    expect(report.status).toBe('Critical');
    const connectivity = report.checks.find((c) => c.name === 'connectivity')!;
    expect(connectivity.status).toBe('Critical');
    expect(connectivity.message).toMatch(/DeviceUnavailable/);

    const closed = await softwareBackend();
    await closed.close();
    const closedReport = await new HealthMonitor({ backend: closed }).performHealthCheck();
    expect(closedReport.status).toBe('Critical');
    expect(closedReport.checks.find((c) => c.name === 'connectivity')?.message).toMatch(/Closed/);
  });

  it('a hanging check times out: Critical for that check, the others still report', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    const monitor = new HealthMonitor({ backend: faulty(raw, { fipsStatus: 'hang' }), checkTimeoutMs: 200, thresholds: { healthyMs: 10_000, warningMs: 20_000 } });
    const report = await monitor.performHealthCheck();
    const fips = report.checks.find((c) => c.name === 'fips')!;
    expect(fips.status).toBe('Critical');
    expect(fips.message).toBe('timed out after 200 ms');
    expect(report.checks.find((c) => c.name === 'connectivity')?.status).toBe('Healthy');
    expect(report.checks.find((c) => c.name === 'performance')?.status).toBe('Healthy');
    expect(report.status).toBe('Critical');
  });

  it('security: login failures in the window and token flags from info().details', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    let clock = 1_000_000;
    let flags = 0;
    const withFlags = new Proxy(raw, {
      get(target, prop, receiver) {
        if (prop === 'info') return async () => ({ ...(await target.info()), details: { tokenFlags: flags } });
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const monitor = new HealthMonitor({ backend: withFlags, loginFailureWindowMs: 60_000, now: () => clock, thresholds: { healthyMs: 10_000, warningMs: 20_000 } });
    const security = async () => (await monitor.performHealthCheck()).checks.find((c) => c.name === 'security')!;
    expect((await security()).status).toBe('Healthy');
    monitor.observeError(new HsmError('LoginFailed', 'wrong PIN'));
    expect((await security()).status).toBe('Degraded');
    monitor.observeError(new HsmError('LoginFailed', 'wrong PIN'));
    monitor.observeError(new HsmError('LoginFailed', 'wrong PIN'));
    const three = await security();
    expect(three.status).toBe('Critical');
    expect(three.metric).toBe(3);
    clock += 61_000; // the failures leave the window
    expect((await security()).status).toBe('Healthy');
    flags = 0x800000; // CKF_SO_PIN_TO_BE_CHANGED
    expect(await security()).toMatchObject({ status: 'Degraded', message: expect.stringContaining('soPinToBeChanged') });
    flags = 0x40000 | 0x800000; // CKF_USER_PIN_LOCKED
    expect(await security()).toMatchObject({ status: 'Critical', message: expect.stringContaining('userPinLocked') });
  });

  it('createMonitoring feeds LoginFailed errors from application calls to the security check', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    const refusing = new Proxy(raw, {
      get(target, prop, receiver) {
        if (prop === 'sign') return () => Promise.reject(new HsmError('LoginFailed', 'the token refused the login (CKR_PIN_INCORRECT)'));
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const { backend, monitor, metrics } = createMonitoring({ backend: refusing, health: { thresholds: { healthyMs: 10_000, warningMs: 20_000 } } });
    for (let i = 0; i < 3; i++) await expect(backend.sign('app', new Uint8Array(1))).rejects.toMatchObject({ code: 'LoginFailed' });
    const report = await monitor.performHealthCheck();
    expect(report.checks.find((c) => c.name === 'security')).toMatchObject({ status: 'Critical', metric: 3 });
    // the canary signature (same refusing backend) failed too, concurrently: it counts from the next run
    expect(report.checks.find((c) => c.name === 'performance')?.status).toBe('Critical');
    expect((await monitor.performHealthCheck()).checks.find((c) => c.name === 'security')?.metric).toBe(4);
    expect(metrics.snapshot().errorsByCode).toEqual({ LoginFailed: 3 });
  });

  it('capacity reads the pool from an optional metrics() and FIPS can be required', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    let pool = { size: 4, inUse: 1, waiting: 0, max: 4 };
    const pooled = Object.assign(Object.create(raw) as typeof raw, { metrics: () => ({ pool, circuitOpen: false }) });
    const monitor = new HealthMonitor({ backend: pooled, thresholds: { healthyMs: 10_000, warningMs: 20_000 } });
    const capacity = async () => (await monitor.performHealthCheck()).checks.find((c) => c.name === 'capacity')!;
    expect(await capacity()).toMatchObject({ status: 'Healthy', metric: 0.25 });
    pool = { size: 4, inUse: 4, waiting: 2, max: 4 };
    expect((await capacity()).status).toBe('Degraded');
    pool = { size: 4, inUse: 4, waiting: 9, max: 4 };
    expect((await capacity()).status).toBe('Critical');

    const strict = new HealthMonitor({ backend: raw, fips: { standard: 'FIPS 140-3', minLevel: 3 }, thresholds: { healthyMs: 10_000, warningMs: 20_000 } });
    const fips = (await strict.performHealthCheck()).checks.find((c) => c.name === 'fips')!;
    expect(fips.status).toBe('Critical');
    expect(fips.message).toMatch(/requires FIPS 140-3/);
  });
});

describe('metrics', () => {
  it('instrument() counts every operation by outcome and error code; /metrics parses and agrees', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    const { backend, metrics, monitor } = createMonitoring({ backend: raw, health: { thresholds: { healthyMs: 10_000, warningMs: 20_000 } } });
    await backend.generateKeyPair({ id: 'k-p256', algorithm: 'ECDSA_P256' });
    await backend.generateKeyPair({ id: 'k-ed', algorithm: 'Ed25519' });
    const data = randomBytes(32);
    for (let i = 0; i < 15; i++) await backend.sign('k-p256', data);
    for (let i = 0; i < 10; i++) await backend.sign('k-ed', data);
    const sig = await backend.sign('k-ed', data);
    expect(await backend.verify('k-ed', data, sig)).toBe(true);
    const failures: string[] = [];
    for (const attempt of [
      () => backend.sign('no-such-key', data),
      () => backend.sign('no-such-key-either', data),
      () => backend.generateKeyPair({ id: 'k-p256', algorithm: 'ECDSA_P256' }),
    ]) {
      try {
        await attempt();
      } catch (error) {
        failures.push((error as HsmError).code);
      }
    }
    expect(failures).toEqual(['KeyNotFound', 'KeyNotFound', 'KeyAlreadyExists']);
    await monitor.performHealthCheck();

    const snap = metrics.snapshot();
    const op = (operation: string, algorithm: string) => snap.operations.find((o) => o.operation === operation && o.algorithm === algorithm);
    expect(op('sign', 'ECDSA_P256')).toMatchObject({ success: 15, failure: 0 });
    expect(op('sign', 'Ed25519')).toMatchObject({ success: 11, failure: 0 });
    expect(op('sign', 'unknown')).toMatchObject({ success: 0, failure: 2 });
    expect(op('verify', 'Ed25519')).toMatchObject({ success: 1, failure: 0 });
    expect(op('generateKeyPair', 'ECDSA_P256')).toMatchObject({ success: 1, failure: 1 });
    expect(snap.totals).toEqual({ success: 29, failure: 3 });
    expect(snap.errorsByCode).toEqual({ KeyNotFound: 2, KeyAlreadyExists: 1 });
    expect(snap.keyGenerations).toBe(2);
    expect(snap.health?.status).toBe('Healthy');
    expect(snap.recentLatencies).toHaveLength(32);
    // the monitor's canary signatures are not application operations
    expect(snap.operations.reduce((n, o) => n + (o.operation === 'sign' ? o.success : 0), 0)).toBe(26);

    const server = await startMonitorServer({ monitor, metrics, listen: '127.0.0.1:0' });
    closers.push(() => server.close());
    const response = await fetch(`${server.url}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const text = await response.text();
    const families = parsePrometheusTextFormat(text);
    const ops = 'olocus_hsm_operations_total';
    expect(sample(families, ops, { operation: 'sign', algorithm: 'ECDSA_P256', outcome: 'success' })).toBe(15);
    expect(sample(families, ops, { operation: 'sign', algorithm: 'Ed25519', outcome: 'success' })).toBe(11);
    expect(sample(families, ops, { operation: 'sign', algorithm: 'unknown', outcome: 'failure' })).toBe(2);
    expect(sample(families, ops, { operation: 'generateKeyPair', algorithm: 'ECDSA_P256', outcome: 'failure' })).toBe(1);
    expect(sample(families, 'olocus_hsm_errors_total', { operation: 'sign', code: 'KeyNotFound' })).toBe(2);
    expect(sample(families, 'olocus_hsm_errors_total', { operation: 'generateKeyPair', code: 'KeyAlreadyExists' })).toBe(1);
    expect(sample(families, 'olocus_hsm_key_generations_total', { algorithm: 'Ed25519' })).toBe(1);
    // parse-prometheus-text-format 1.1 drops the labels, _count and _sum of labelled histograms: read the _count line itself
    expect(text).toMatch(/^olocus_hsm_operation_duration_seconds_count\{operation="sign",algorithm="ECDSA_P256"\} 15$/m);
    expect(text).toMatch(/^olocus_hsm_operation_duration_seconds_bucket\{le="\+Inf",operation="sign",algorithm="Ed25519"\} 11$/m);
    expect(sample(families, 'olocus_hsm_health_status', {})).toBe(0);
    expect(sample(families, 'olocus_hsm_health_check_status', { check: 'performance' })).toBe(0);
    expect(sample(families, 'olocus_hsm_uptime_seconds', {})).toBeGreaterThanOrEqual(0);
    expect(families.find((f) => f.name === 'olocus_hsm_operation_duration_seconds')?.type).toBe('HISTOGRAM');
    // a registry per instance: nothing in prom-client's global registry
    const { register } = await import('prom-client');
    expect(await register.getMetricsAsJSON()).toEqual([]);
  });

  it('exports pool and circuit gauges from a backend that exposes metrics()', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    const state = { pool: { size: 3, inUse: 2, waiting: 1, max: 4, created: 5, evicted: 1, recycled: 2 }, circuitOpen: true, circuitOpens: 1 };
    const pooled = Object.assign(Object.create(raw) as typeof raw, { metrics: () => state });
    const metrics = new HsmMetrics();
    const wrapped = metrics.instrument(pooled) as typeof pooled;
    expect(typeof (wrapped as unknown as { metrics: unknown }).metrics).toBe('function');
    let families = parsePrometheusTextFormat(await metrics.prometheus());
    expect(sample(families, 'olocus_hsm_session_pool_size', {})).toBe(3);
    expect(sample(families, 'olocus_hsm_session_pool_in_use', {})).toBe(2);
    expect(sample(families, 'olocus_hsm_session_pool_waiting', {})).toBe(1);
    expect(sample(families, 'olocus_hsm_session_pool_created_total', {})).toBe(5);
    expect(sample(families, 'olocus_hsm_session_pool_evicted_total', {})).toBe(1);
    expect(sample(families, 'olocus_hsm_session_pool_recycled_total', {})).toBe(2);
    expect(sample(families, 'olocus_hsm_circuit_open', {})).toBe(1);
    state.pool.created = 7;
    state.circuitOpen = false;
    families = parsePrometheusTextFormat(await metrics.prometheus());
    expect(sample(families, 'olocus_hsm_session_pool_created_total', {})).toBe(7);
    expect(sample(families, 'olocus_hsm_circuit_open', {})).toBe(0);
    expect(metrics.snapshot().pool).toMatchObject({ size: 3, inUse: 2, waiting: 1, max: 4 });
  });
});

describe('HTTP endpoint', () => {
  it('/readyz is 200 when Healthy and 503 when Critical; /healthz is 200; unknown paths 404', async () => {
    const raw = await softwareBackend();
    closers.push(() => raw.close());
    let broken = false;
    const switchable = new Proxy(raw, {
      get(target, prop, receiver) {
        if (prop === 'info' && broken) return () => Promise.reject(new HsmError('DeviceUnavailable', 'unplugged'));
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const monitor = new HealthMonitor({ backend: switchable, thresholds: { healthyMs: 10_000, warningMs: 20_000 } });
    const metrics = new HsmMetrics();
    const server = await startMonitorServer({ monitor, metrics, listen: '127.0.0.1:0' });
    closers.push(() => server.close());

    const ok = await fetch(`${server.url}/readyz`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toMatch(/^application\/json/);
    const okBody = (await ok.json()) as { ready: boolean; status: string; checks: Array<{ name: string; status: string }> };
    expect(okBody).toMatchObject({ ready: true, status: 'Healthy' });
    expect(okBody.checks).toHaveLength(5);

    broken = true;
    const down = await fetch(`${server.url}/readyz`);
    expect(down.status).toBe(503);
    expect(await down.json()).toMatchObject({ ready: false, status: 'Critical', checks: expect.arrayContaining([expect.objectContaining({ name: 'connectivity', status: 'Critical' })]) });
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
    expect((await fetch(`${server.url}/metrics`, { method: 'POST' })).status).toBe(405);
    const page = await fetch(`${server.url}/status`);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const html = await page.text();
    expect(html).toContain('Critical');
    expect(html).not.toMatch(/<script|<link|src="http/);
  });
});

describe('alerts', () => {
  const report = (status: HealthReport['status']): HealthReport => ({
    status,
    timestamp: new Date(),
    durationMs: 1,
    checks: [{ name: 'connectivity', status, message: status === 'Healthy' ? 'ok' : 'down', durationMs: 1 }],
  });

  it('de-duplicates by key: fires once until resolved, then one resolve notification', async () => {
    const seen: Alert[] = [];
    const lines: string[] = [];
    const alerts = new AlertManager({ sinks: [callbackSink((a) => void seen.push(a)), logSink({ warn: (l: string) => lines.push(l), info: (l: string) => lines.push(l) })] });
    alerts.observeHealth(report('Healthy'));
    alerts.observeHealth(report('Critical'));
    alerts.observeHealth(report('Critical'));
    alerts.observeHealth(report('Degraded'));
    alerts.observeHealth(report('Healthy'));
    alerts.observeHealth(report('Healthy'));
    await alerts.flush();
    expect(seen.map((a) => `${a.key}:${a.state}:${a.severity}`)).toEqual(['health:firing:critical', 'health:resolved:critical']);
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0]!)).toMatchObject({ key: 'health', state: 'firing' });
  });

  it('metric rules: circuit opening, error rate and latency thresholds', async () => {
    const seen: Alert[] = [];
    const alerts = new AlertManager({ sinks: [callbackSink((a) => void seen.push(a))], rules: { errorRate: 0.1, errorRateMinCalls: 10, latencyMs: 50, latencyMinCalls: 2 } });
    const snap = (success: number, failure: number, meanMs: number, circuitOpen: boolean) => ({
      uptimeSeconds: 1,
      totals: { success, failure },
      operations: [{ operation: 'sign', algorithm: 'ECDSA_P256', success, failure, meanMs, maxMs: meanMs }],
      errorsByCode: {},
      errors: [],
      keyGenerations: 0,
      circuitOpen,
      recentLatencies: [],
    });
    alerts.observeMetrics(snap(100, 0, 1, false));
    alerts.observeMetrics(snap(105, 10, 1, true)); // 10 of 15 failed, circuit open
    alerts.observeMetrics(snap(110, 20, 1, true)); // still: no new notifications
    alerts.observeMetrics(snap(200, 20, 1, false)); // recovered
    alerts.observeMetrics(snap(210, 20, (220 * 1 + 10 * 1000) / 230, false)); // the last 10 calls took 1 s each
    await alerts.flush();
    expect(seen.map((a) => `${a.key}:${a.state}`)).toEqual(['circuit:firing', 'error-rate:firing', 'circuit:resolved', 'error-rate:resolved', 'latency:sign:firing']);
  });

  it('webhook sink retries with backoff against a local server, and does not retry a 4xx', async () => {
    const bodies: unknown[] = [];
    let answers = [503, 500, 200];
    const server = createServer((req: IncomingMessage, res) => {
      let body = '';
      req.on('data', (c) => (body += String(c)));
      req.on('end', () => {
        bodies.push(JSON.parse(body));
        res.writeHead(answers.shift() ?? 200).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => server.close(() => r())));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    const errors: unknown[] = [];
    const alerts = new AlertManager({ sinks: [webhookSink({ url, retries: 3, backoffMs: 10 })], onSinkError: (e) => errors.push(e) });
    alerts.fire('custom', { rule: 'custom', severity: 'warning', summary: 'test', details: { n: 1 } });
    await alerts.flush();
    expect(bodies).toHaveLength(3);
    expect(bodies[2]).toMatchObject({ key: 'custom', state: 'firing', summary: 'test' });
    expect(errors).toEqual([]);

    answers = [400];
    alerts.resolve('custom');
    await alerts.flush();
    expect(bodies).toHaveLength(4);
    expect(errors).toHaveLength(1);
    expect(String(errors[0])).toMatch(/HTTP 400/);
  });
});
