import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRotation, type RotationContext, type RotationPolicyInput } from '@olocus/hsm-rotation';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AlertManager, alertsFromRotation, callbackSink, CryptoperiodWatch, registryKeyCounts, registryKeyList, type Alert } from '../src/index.js';
import { softwareBackend } from './helpers/software.js';

/**
 * Cryptoperiod and rotation-due alerts over a real key registry (SQLite file in a temporary
 * folder, software backend), with a clock the tests move by hand.
 */

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 1);

const dirs: string[] = [];
const contexts: RotationContext[] = [];
afterEach(async () => {
  for (const c of contexts.splice(0)) await c.close();
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

class Clock {
  ms = T0;
  readonly now = (): number => this.ms;
  readonly date = (): Date => new Date(this.ms);
  advance(ms: number): void {
    this.ms += ms;
  }
}

async function open(clock: Clock, policy: RotationPolicyInput): Promise<RotationContext> {
  const dir = mkdtempSync(join(tmpdir(), 'olocus-monitoring-registry-'));
  dirs.push(dir);
  const ctx = await openRotation({ storage: { kind: 'sqlite', path: join(dir, 'registry.db') }, backend: await softwareBackend(), policy, now: clock.date, reconcile: false });
  contexts.push(ctx);
  return ctx;
}

function recorder(clock: Clock): { alerts: AlertManager; sent: Alert[]; of: (key: string) => Array<[Alert['state'], Alert['severity']]> } {
  const sent: Alert[] = [];
  const alerts = new AlertManager({ sinks: [callbackSink((a) => void sent.push(a))], now: clock.now });
  return { alerts, sent, of: (key) => sent.filter((a) => a.key === key).map((a) => [a.state, a.severity]) };
}

const who = { actor: 'alice', reason: 'test' };

describe('CryptoperiodWatch over a key registry', () => {
  it('warns N days ahead once (not per check), escalates when past, resolves after rotation', async () => {
    const clock = new Clock();
    const rot = await open(clock, { rotationInterval: '30d', cryptoperiod: '40d' });
    await rot.manager.createKey('pay', 'ECDSA_P256', { actor: 'alice' });
    const { alerts, sent, of } = recorder(clock);
    const watch = new CryptoperiodWatch({ alerts, keys: registryKeyList(rot.registry), warnDays: 10, now: clock.now });

    // The provider: the Active version, protect-stop = activation + 40 d, rotation due = activation + 30 d.
    expect(await registryKeyList(rot.registry)()).toEqual([{ keyId: 'pay.v1', baseKeyId: 'pay', expiresAt: new Date(T0 + 40 * DAY), rotationDueAt: new Date(T0 + 30 * DAY) }]);

    expect((await watch.check()).fired).toEqual([]);
    clock.advance(19 * DAY); // rotation due in 11 days: outside the 10-day window
    expect((await watch.check()).fired).toEqual([]);
    clock.advance(DAY); // due in 10 days
    expect((await watch.check()).fired).toEqual(['rotation-due:pay.v1']);
    for (let i = 0; i < 3; i++) {
      clock.advance(DAY / 4);
      expect((await watch.check()).fired).toEqual([]);
    }
    await alerts.flush();
    expect(of('rotation-due:pay.v1')).toEqual([['firing', 'warning']]);
    expect(sent[0]!.summary).toMatch(/pay.*rotation due in 10 day/);

    clock.ms = T0 + 31 * DAY; // rotation overdue, cryptoperiod ends in 9 days
    const r31 = await watch.check();
    expect(r31.fired.sort()).toEqual(['cryptoperiod:expiring:pay.v1', 'rotation-due:pay.v1']);
    await watch.check();
    await alerts.flush();
    expect(of('rotation-due:pay.v1')).toEqual([
      ['firing', 'warning'],
      ['resolved', 'warning'], // escalated
      ['firing', 'critical'],
    ]);
    expect(of('cryptoperiod:expiring:pay.v1')).toEqual([['firing', 'warning']]);

    clock.ms = T0 + 40 * DAY; // protect-stop reached
    expect((await watch.check()).fired).toEqual(['cryptoperiod:expired:pay.v1']);
    expect((await watch.check()).fired).toEqual([]);
    await alerts.flush();
    expect(of('cryptoperiod:expiring:pay.v1')).toEqual([
      ['firing', 'warning'],
      ['resolved', 'warning'],
    ]);
    expect(of('cryptoperiod:expired:pay.v1')).toEqual([['firing', 'critical']]);
    expect(alerts.active().map((a) => a.key).sort()).toEqual(['cryptoperiod:expired:pay.v1', 'rotation-due:pay.v1']);

    // Rotation: v1 leaves Active, v2 is due in 30 days (outside the window): everything resolves.
    await rot.manager.rotateKey('pay', who);
    const after = await watch.check();
    expect(after.fired).toEqual([]);
    expect(after.resolved.sort()).toEqual(['cryptoperiod:expired:pay.v1', 'rotation-due:pay.v1']);
    expect(after.firing).toEqual([]);
    await alerts.flush();
    expect(of('cryptoperiod:expired:pay.v1')).toEqual([
      ['firing', 'critical'],
      ['resolved', 'critical'],
    ]);
    expect(sent.at(-1)!.summary).toMatch(/no longer in use/);
    expect(alerts.active()).toEqual([]);
    expect(await registryKeyCounts(rot.registry)()).toEqual({ Active: 1, Superseded: 1 });
  });

  it('start() checks in the background; a failing provider is reported, not thrown', async () => {
    const clock = new Clock();
    const { alerts } = recorder(clock);
    const errors: unknown[] = [];
    let calls = 0;
    const watch = new CryptoperiodWatch({
      alerts,
      intervalMs: 20,
      now: clock.now,
      keys: async () => {
        calls++;
        if (calls === 1) throw new Error('registry unavailable');
        return [{ keyId: 'k', expiresAt: new Date(T0 - 1) }];
      },
      onError: (e) => errors.push(e),
    });
    watch.start();
    await expect.poll(() => alerts.active().map((a) => a.key), { timeout: 2000 }).toEqual(['cryptoperiod:expired:k']);
    await watch.stop();
    expect(errors).toHaveLength(1);
    expect(watch.isRunning).toBe(false);
    expect(() => new CryptoperiodWatch({ alerts, keys: async () => [], warnDays: -1 })).toThrow(/warnDays/);
  });
});

describe('alertsFromRotation', () => {
  it('a rotationWarning fires rotation-due once; the scheduled rotation resolves it', async () => {
    const clock = new Clock();
    const rot = await open(clock, { rotationInterval: '30d', advanceWarning: '7d' });
    await rot.manager.createKey('sched', 'Ed25519', { actor: 'alice' });
    const { alerts, sent, of } = recorder(clock);
    const stop = alertsFromRotation(rot.events, alerts);
    // The same alert key as the periodic check: the two sources never notify twice.
    const watch = new CryptoperiodWatch({ alerts, keys: registryKeyList(rot.registry), warnDays: 7, now: clock.now });

    clock.advance(23 * DAY);
    expect((await rot.scheduler.runDueTasks()).ran.map((r) => r.kind)).toEqual(['warn']);
    expect((await watch.check()).fired).toEqual([]);
    expect((await rot.scheduler.runDueTasks()).ran).toEqual([]);
    await alerts.flush();
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ key: 'rotation-due:sched.v1', rule: 'rotation-due', state: 'firing', severity: 'warning', details: { baseKeyId: 'sched', keyId: 'sched.v1', rotationDueAt: new Date(T0 + 30 * DAY).toISOString() } });

    clock.advance(7 * DAY);
    expect((await rot.scheduler.runDueTasks()).ran.map((r) => [r.kind, r.status])).toEqual([['rotate', 'done']]);
    await alerts.flush();
    expect(of('rotation-due:sched.v1')).toEqual([
      ['firing', 'warning'],
      ['resolved', 'warning'],
    ]);
    expect(sent.at(-1)!.summary).toMatch(/sched\.v1 is no longer Active/);
    expect(alerts.active()).toEqual([]);
    // v2 is not due for 30 days: the periodic check raises nothing.
    expect((await watch.check()).fired).toEqual([]);

    stop();
    clock.advance(23 * DAY);
    await rot.scheduler.runDueTasks();
    await alerts.flush();
    expect(sent).toHaveLength(2); // unsubscribed: the warning for v2 is not forwarded
  });
});
