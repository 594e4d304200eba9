import { describe, expect, it } from 'vitest';
import type { FipsStatus } from '@olocus/hsm-core';
import { ActivityAggregator, assessFips, callbackSink, createMonitoring, startMonitorServer, type Alert, type ActivityRecord, type ActivitySource } from '../src/index.js';
import { softwareBackend } from './helpers/software.js';

const MIN = 60_000;
const T0 = Date.parse('2026-06-01T12:00:30Z');

/** An in-memory log with seq numbers; records the queries it was asked. */
function memoryLog(): { source: ActivitySource; push(r: Omit<ActivityRecord, 'seq'>): void; queries: Array<{ from: string; afterSeq?: number }> } {
  const records: ActivityRecord[] = [];
  const queries: Array<{ from: string; afterSeq?: number }> = [];
  return {
    queries,
    push: (r) => records.push({ ...r, seq: records.length + 1 }),
    source: {
      description: 'memory log',
      async *read({ from, afterSeq }) {
        queries.push({ from: from.toISOString(), ...(afterSeq !== undefined ? { afterSeq } : {}) });
        for (const r of records) {
          if (afterSeq !== undefined ? r.seq > afterSeq : Date.parse(String(r.time)) >= from.getTime()) yield r;
        }
      },
    },
  };
}

const sign = (at: number, latencyMs: number, extra: Partial<ActivityRecord> = {}): Omit<ActivityRecord, 'seq'> => ({
  time: new Date(at).toISOString(),
  type: 'key.sign',
  outcome: 'success',
  origin: 'host:1',
  latencyMs,
  ...extra,
});

describe('ActivityAggregator', () => {
  it('reads the window once, then only records after the last seq; buckets per minute with p50/p99 of successes', async () => {
    let now = T0;
    const log = memoryLog();
    log.push(sign(now - 2 * 3_600_000, 5)); // older than the window: never read
    for (let i = 1; i <= 100; i++) log.push(sign(now - 10 * MIN, i)); // latencies 1..100 ms in one minute
    log.push(sign(now - 10 * MIN, 9_000, { outcome: 'failure', errorCode: 'Timeout' }));
    log.push(sign(now - 5 * MIN, 3, { details: { purpose: 'health-canary' } })); // a probe, not traffic
    log.push({ time: new Date(now - 4 * MIN).toISOString(), type: 'auth.failure', outcome: 'failure', origin: 'host:2', errorCode: 'LoginFailed', backend: 'pkcs11', details: { operation: 'open' } });
    log.push({ time: new Date(now - 4 * MIN).toISOString(), type: 'audit.start', outcome: 'success', origin: 'host:2' });
    const agg = new ActivityAggregator({ source: log.source, now: () => now, minRefreshMs: 0 });
    await agg.refresh();
    expect(log.queries).toEqual([{ from: '2026-06-01T11:01:00.000Z' }]);
    let v = agg.view();
    expect(v.connected).toBe(true);
    expect(v.series).toHaveLength(60);
    expect(v.series[0]!.start).toBe('2026-06-01T11:01:00.000Z');
    expect(v.series.at(-1)!.start).toBe('2026-06-01T12:00:00.000Z');
    expect(v.totals).toMatchObject({ success: 100, failure: 1 });
    const minute = v.series.find((p) => p.start === '2026-06-01T11:50:00.000Z')!;
    expect(minute).toMatchObject({ success: 100, failure: 1 });
    // 2 % relative error; the 9 s failure is not the latency of the signing path.
    expect(minute.p50Ms).toBeGreaterThan(49);
    expect(minute.p50Ms).toBeLessThan(51.5);
    expect(minute.p99Ms).toBeGreaterThan(97);
    expect(minute.p99Ms).toBeLessThanOrEqual(100);
    expect(v.errors).toEqual([{ type: 'key.sign', code: 'Timeout', count: 1 }]);
    expect(v.processes).toEqual([{ origin: 'host:1', operations: 101, failures: 1, lastSeen: '2026-06-01T11:50:30.000Z' }]);
    expect(v.loginFailures.count).toBe(1);
    expect(v.loginFailures.recent).toEqual([{ time: '2026-06-01T11:56:30.000Z', origin: 'host:2', errorCode: 'LoginFailed', backend: 'pkcs11', operation: 'open' }]);
    expect(agg.loginFailuresSince(now - 5 * MIN)).toBe(1);
    expect(agg.loginFailuresSince(now - 3 * MIN)).toBe(0);

    // Later reads ask only for what is new.
    log.push(sign(now - 1000, 7, { origin: 'host:3' }));
    await agg.refresh();
    expect(log.queries.at(-1)).toMatchObject({ afterSeq: 105 });
    v = agg.view();
    expect(v.totals.success).toBe(101);
    expect(v.processes.map((p) => p.origin)).toEqual(['host:3', 'host:1']);

    // An hour later the old minutes have left the window.
    now += 57 * MIN;
    await agg.refresh();
    v = agg.view();
    expect(v.totals).toMatchObject({ success: 1, failure: 0 });
    expect(v.loginFailures.count).toBe(0);
    expect(agg.loginFailuresSince(0)).toBe(0);
  });

  it('keeps what it read when the source fails, and says why', async () => {
    const now = T0;
    const log = memoryLog();
    log.push(sign(now - MIN, 4));
    let broken = false;
    const source: ActivitySource = {
      read: (q) => {
        if (broken) throw new Error('database is locked');
        return log.source.read(q);
      },
    };
    const agg = new ActivityAggregator({ source, now: () => now, minRefreshMs: 0 });
    await agg.refresh();
    broken = true;
    await agg.refresh();
    const v = agg.view();
    expect(v.totals.success).toBe(1);
    expect(v.readError).toBe('database is locked');
  });

  it('without a source counts observed operations of this process', () => {
    const agg = new ActivityAggregator({ now: () => T0 });
    agg.observe('key.sign', false, 2.5);
    agg.observe('key.sign', true, 1, 'KeyNotFound');
    const v = agg.view();
    expect(v.connected).toBe(false);
    expect(v.source).toContain('this process only');
    expect(v.operations).toEqual([{ type: 'key.sign', success: 1, failure: 1, meanMs: 2.5, p50Ms: expect.closeTo(2.5, 1) as number, p99Ms: expect.closeTo(2.5, 1) as number, maxMs: 2.5 }]);
  });
});

describe('alert rules over the installation', () => {
  it('error-rate and latency alerts fire on other processes\' records, the login failure makes health fire', async () => {
    const raw = await softwareBackend();
    const log = memoryLog();
    const sent: Alert[] = [];
    const m = createMonitoring({ backend: raw, activity: { source: log.source, minRefreshMs: 0 }, health: { thresholds: { healthyMs: 10_000, warningMs: 20_000 } }, alerts: { sinks: [callbackSink((a) => void sent.push(a))] } });
    try {
      await m.monitor.performHealthCheck(); // baseline
      const now = Date.now();
      // Slow successes (mean > 500 ms) and 5 failures in 25 calls (20 % > 5 %).
      for (let i = 0; i < 20; i++) log.push(sign(now, 600 + i, { origin: 'other:1' }));
      for (let i = 0; i < 5; i++) log.push(sign(now, 3, { origin: 'other:2', outcome: 'failure', errorCode: 'DeviceUnavailable' }));
      log.push({ time: new Date(now).toISOString(), type: 'auth.failure', outcome: 'failure', origin: 'other:3', errorCode: 'LoginFailed' });
      const report = await m.monitor.performHealthCheck();
      expect(report.checks.find((c) => c.name === 'security')).toMatchObject({ status: 'Degraded', metric: 1 });
      await m.alerts!.flush();
      const keys = m.alerts!.active().map((a) => a.key).sort();
      expect(keys).toEqual(['error-rate', 'health', 'latency:sign']);
      expect(sent.find((a) => a.key === 'error-rate')?.details).toMatchObject({ calls: 25, failures: 5 });

      // The same records as Prometheus counters: the CLI's processes cannot be scraped, the log can.
      const server = await startMonitorServer({ monitor: m.monitor, metrics: m.metrics, activity: m.activity, listen: '127.0.0.1:0' });
      try {
        const text = await (await fetch(`${server.url}/metrics`)).text();
        expect(text).toContain('olocus_hsm_audit_operations_total{operation="sign",outcome="success"} 20');
        expect(text).toContain('olocus_hsm_audit_operations_total{operation="sign",outcome="failure"} 5');
        expect(text).toContain('olocus_hsm_audit_login_failures_total 1');
        log.push(sign(Date.now(), 2, { origin: 'other:1' }));
        const again = await (await fetch(`${server.url}/metrics`)).text();
        expect(again).toContain('olocus_hsm_audit_operations_total{operation="sign",outcome="success"} 21');
      } finally {
        await server.close();
      }
    } finally {
      await m.stop();
      await raw.close();
    }
  });
});

describe('assessFips', () => {
  const base: FipsStatus = { standard: 'FIPS 140-3', level: 3, approvedMode: true, certificate: '4745', certificateStatus: 'active', notes: '', evidence: 'measured' };
  it('a measured, active validation is not a warning', () => {
    expect(assessFips(base).warning).toBeUndefined();
    expect(assessFips({ ...base, evidence: 'provider-claim' }).warning).toBeUndefined();
  });
  it('not validated, unknown, only attested, inactive certificates and findings are warnings', () => {
    expect(assessFips({ ...base, standard: 'none', level: 0, evidence: 'none' }).warning).toBe('the module is not FIPS validated');
    expect(assessFips({ ...base, standard: 'unknown', level: 0 }).warning).toBe('the FIPS level is unknown');
    expect(assessFips({ ...base, evidence: 'attested' }).warning).toContain('only attested');
    expect(assessFips({ ...base, certificateStatus: 'historical' }).warning).toBe('the certificate is historical');
    expect(assessFips({ ...base, findings: ['profile says luna but the token reports SoftHSM'] }).warning).toBe('profile says luna but the token reports SoftHSM');
  });
});
