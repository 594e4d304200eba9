import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pkcs11Backend } from '@olocus/hsm-backend-pkcs11';
import { afterAll, describe, expect, it } from 'vitest';
import { callbackSink, createMonitoring, type Alert, type HealthReport } from '../src/index.js';
import { P11KitServer, createToken, P11KIT_CLIENT_LIB } from '@olocus/hsm-test-support';

const token = createToken('mon-net');
const work = mkdtempSync(join(tmpdir(), 'olocus-monitoring-p11kit-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Polls until `predicate` holds; the deadline bounds a hung test, it is not a performance assertion. */
async function until(what: string, predicate: () => boolean, deadlineMs = 30_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('a real fault: SoftHSM behind p11-kit server', () => {
  it('goes Critical within one interval when the server dies, alerts once, and resolves after a restart', async () => {
    const server = new P11KitServer(join(work, 'p11kit.sock'), token.label);
    await server.start();
    process.env.P11_KIT_SERVER_ADDRESS = server.address; // read by p11-kit-client.so at C_Initialize
    const raw = new Pkcs11Backend(
      { libraryPath: P11KIT_CLIENT_LIB, tokenLabel: token.label, sessionPool: { minSessions: 1, maxSessions: 2, acquireTimeout: 2_000 }, signThreads: 0 },
      { pin: token.pin },
    );
    const seen: Alert[] = [];
    const reports: HealthReport[] = [];
    const intervalMs = 250;
    const m = createMonitoring({
      backend: raw,
      // generous latency thresholds: this test is about faults, not speed on a shared machine
      health: { intervalMs, checkTimeoutMs: 3_000, thresholds: { healthyMs: 5_000, warningMs: 10_000 } },
      alerts: { sinks: [callbackSink((a) => void seen.push(a))] },
    });
    m.monitor.onReport((r) => void reports.push(r));
    try {
      await raw.initialize();
      await m.backend.generateKeyPair({ id: 'app-p256', algorithm: 'ECDSA_P256' });
      for (let i = 0; i < 5; i++) await m.backend.sign('app-p256', new Uint8Array([i]));

      m.monitor.start();
      await until('a first Healthy report', () => reports.some((r) => r.status === 'Healthy'));
      const healthy = reports.find((r) => r.status === 'Healthy')!;
      expect(healthy.checks.find((c) => c.name === 'capacity')?.message).toMatch(/sessions \d+ in use of 2/);
      expect(seen.filter((a) => a.key === 'health')).toEqual([]);

      // unplug the HSM
      const killedAt = Date.now();
      server.kill();
      const afterKill = () => reports.filter((r) => r.timestamp.getTime() >= killedAt);
      await until('three reports after the kill', () => afterKill().length >= 3);
      // the first check that started after the kill already sees it
      const first = afterKill()[0]!;
      expect(first.status, JSON.stringify(first.checks)).toBe('Critical');
      expect(first.checks.find((c) => c.name === 'connectivity')?.status).toBe('Critical');
      expect(afterKill().every((r) => r.status === 'Critical')).toBe(true);
      await m.alerts!.flush();
      const healthAlerts = () => seen.filter((a) => a.key === 'health');
      expect(healthAlerts().map((a) => `${a.state}:${a.severity}`)).toEqual(['firing:critical']);
      expect(m.metrics.snapshot().health?.status).toBe('Critical');

      // plug it back in: the backend re-initialises in the background
      const restartedAt = Date.now();
      await server.start();
      await until('a Healthy report after the restart', () => reports.some((r) => r.timestamp.getTime() >= restartedAt && r.status === 'Healthy'), 60_000);
      await m.alerts!.flush();
      expect(healthAlerts().map((a) => a.state)).toEqual(['firing', 'resolved']);
      expect(healthAlerts()[1]!.summary).toMatch(/Healthy/);
      // signing works again through the instrumented backend
      await m.backend.sign('app-p256', new Uint8Array([42]));
      const sign = m.metrics.snapshot().operations.find((o) => o.operation === 'sign' && o.algorithm === 'ECDSA_P256');
      expect(sign?.success).toBe(6);
      expect((await raw.listKeys()).keys.map((k) => k.id).sort()).toEqual(['app-p256', 'olocus-health-canary']);
    } finally {
      await m.stop();
      await raw.close();
      server.kill();
    }
  });
});
