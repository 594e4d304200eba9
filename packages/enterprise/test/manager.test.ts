/**
 * EnterpriseKeyManager end to end on memory members: a real rotation registry (SQLite), a real
 * audit log (@olocus/hsm-compliance, SQLite), Cedar policies from files.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, verify as nodeVerify } from 'node:crypto';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { exportPublicKey } from '@olocus/hsm-core';
import { MemoryKeyStore } from '@olocus/hsm-core/testing';
import { openRotation } from '@olocus/hsm-rotation';
import { openAuditLog, type AuditLog, type AuditRecord } from '@olocus/hsm-compliance';
import { CedarAuthorizer, EnterpriseKeyManager, HsmPool, readPolicyDirectory, type CallContext, type GroupGenerator } from '../src/index.js';
import { FlakyBackend, replicateMemoryKey } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'olocus-enterprise-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const fixtures = join(import.meta.dirname, 'fixtures', 'policies');

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

let n = 0;
async function setup() {
  n++;
  const backends = [0, 1, 2].map(() => new FlakyBackend(new MemoryKeyStore()));
  const pool = new HsmPool({ members: backends.map((backend, i) => ({ name: `m${i}`, backend, zone: `z${i}` })), startHealthChecks: false });
  // memory members replicate by copying key material between stores
  const groupGenerator: GroupGenerator = async (spec, members, p) => {
    const first = backends[p.memberNames().indexOf(members[0]!)]!;
    await first.generateKeyPair(spec);
    replicateMemoryKey(spec.id, first.keyStore, members.slice(1).map((m) => backends[p.memberNames().indexOf(m)]!.keyStore));
  };
  let manager: EnterpriseKeyManager | undefined;
  const backend = EnterpriseKeyManager.poolBackend(pool, () => manager, groupGenerator);
  await backend.initialize();
  const rotation = await openRotation({ storage: { kind: 'sqlite', path: join(work, `registry-${n}.db`) }, backend, policy: { allowEmergencyRotation: true } });
  const audit: AuditLog = await openAuditLog({ storage: { kind: 'sqlite', path: join(work, `audit-${n}.db`) } });
  const authorizer = new CedarAuthorizer();
  authorizer.loadGlobal(readPolicyDirectory(join(fixtures, 'global')));
  authorizer.loadApplication('payments', readPolicyDirectory(join(fixtures, 'payments')));
  authorizer.loadApplication('hr', readPolicyDirectory(join(fixtures, 'hr')));
  manager = new EnterpriseKeyManager({ pool, rotation, authorizer, audit });
  closers.push(() => pool.close(), () => rotation.close(), () => audit.close());
  const records = async (): Promise<AuditRecord[]> => {
    await audit.flush();
    const out: AuditRecord[] = [];
    for await (const r of audit.iterate()) out.push(r);
    return out;
  };
  return { manager, pool, backends, rotation, audit, records };
}

const paymentsApp = { type: 'Application', id: 'payments' } as const;

describe('EnterpriseKeyManager', () => {
  it('a policy that requires backup makes the logical key backup-eligible: every version is generated with KeySpec.backup', async () => {
    const { manager, rotation, records } = await setup();
    await manager.generateApplicationKey('payments', { algorithm: 'ECDSA_P256', backupRequired: true, allowedOperations: ['sign', 'verify', 'backup'] }, { actor: 'alice' });
    await manager.generateApplicationKey('hr', { algorithm: 'ECDSA_P256' }, { actor: 'alice' });
    expect((await rotation.registry.getLogicalKey('payments')).backup).toBe(true);
    expect((await rotation.registry.getLogicalKey('hr')).backup).toBeUndefined();
    const generated = (await records()).filter((r) => r.type === 'key.generate');
    expect(generated.find((r) => r.baseKeyId === 'payments')?.details).toMatchObject({ backupRequired: true, backupEligible: true });
    expect(generated.find((r) => r.baseKeyId === 'hr')?.details).toMatchObject({ backupRequired: false, backupEligible: false });
  });

  it('generates an application key on members that satisfy its policy, replicated, registered with rotation', async () => {
    const { manager, pool, rotation, backends, records } = await setup();
    const app = await manager.generateApplicationKey('payments', { algorithm: 'ECDSA_P256', replicas: 2, zones: ['z1', 'z2'], rotationInterval: '90d' }, { actor: 'alice' });
    expect(app.members).toEqual(['m1', 'm2']);
    expect(pool.placementOf('payments.v1')).toEqual({ keyId: 'payments.v1', members: ['m1', 'm2'] });
    expect(backends[0]!.keyStore.keys.has('payments.v1')).toBe(false);
    expect((await rotation.registry.getActiveKey('payments')).version).toBe(1);
    expect((await rotation.registry.getLogicalKey('payments')).rotationIntervalMs).toBe(90 * 86_400_000);
    const generated = (await records()).find((r) => r.type === 'key.generate' && r.keyId === 'payments.v1');
    expect(generated?.details).toMatchObject({ members: 'm1,m2' });
    // a policy no member meets is refused before anything is generated
    await expect(manager.generateApplicationKey('hr', { algorithm: 'ECDSA_P256', hardwareRequired: true }, { actor: 'alice' })).rejects.toMatchObject({
      code: 'PolicyViolation',
      message: expect.stringMatching(/m0 fails hardwareRequired/),
    });
    await expect(rotation.registry.hasLogicalKey('hr')).resolves.toBe(false);
  });

  it('signs when Cedar and the policy allow, returns the decision, and audits it; a deny never reaches an HSM', async () => {
    const { manager, backends, records, audit } = await setup();
    await manager.generateApplicationKey('payments', { algorithm: 'ECDSA_P256', replicas: 3 }, { actor: 'alice' });
    const data = randomBytes(64);
    const result = await manager.signWithPolicyEnforcement('payments', data, { principal: paymentsApp, purpose: 'invoice' });
    expect(result).toMatchObject({ keyId: 'payments.v1', baseKeyId: 'payments', version: 1, algorithm: 'ECDSA_P256', decision: { decision: 'allow' } });
    expect(result.decision.determining).toEqual(['payments/policies.cedar#0']);
    expect(result.decision.policyVersion).toMatch(/^global:[0-9a-f]{16}\/app:[0-9a-f]{16}$/);
    const pem = exportPublicKey(await backends[0]!.getPublicKey('payments.v1'), 'pem');
    expect(nodeVerify('sha256', data, { key: pem, dsaEncoding: 'ieee-p1363' }, result.signature)).toBe(true);

    const signsBefore = backends.reduce((s, b) => s + b.signCalls, 0);
    await expect(manager.signWithPolicyEnforcement('payments', data, { principal: paymentsApp, classification: 'secret' })).rejects.toMatchObject({
      code: 'PermissionDenied',
      message: expect.stringMatching(/forbidden by global\/10-guards.cedar#1/),
    });
    await expect(manager.signWithPolicyEnforcement('payments', data, { principal: { type: 'Caller', id: 'mallory', groups: [], roles: [] } })).rejects.toMatchObject({
      code: 'PermissionDenied',
      message: expect.stringMatching(/default deny/),
    });
    expect(backends.reduce((s, b) => s + b.signCalls, 0)).toBe(signsBefore);

    const signs = (await records()).filter((r) => r.type === 'key.sign');
    expect(signs.map((r) => [r.outcome, r.details?.decision])).toEqual([
      ['success', 'allow'],
      ['failure', 'deny'],
      ['failure', 'deny'],
    ]);
    expect(signs[0]).toMatchObject({ actor: 'app:payments', keyId: 'payments.v1', baseKeyId: 'payments', keyVersion: 1, details: { purpose: 'invoice', policyVersion: result.decision.policyVersion } });
    expect(signs[0]!.dataDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(signs[1]!.details).toMatchObject({ rule: 'cedar', determining: 'global/10-guards.cedar#1' });
    expect(signs[2]).toMatchObject({ actor: 'caller:mallory', details: { rule: 'cedar' } });
    expect((await audit.verify()).ok).toBe(true);
  });

  it('enforces the key policy: operations, message size, usage per version, rate limits per key and per caller', async () => {
    const { manager } = await setup();
    await manager.generateApplicationKey('payments', { algorithm: 'Ed25519', maxMessageBytes: 32, maxUsesPerVersion: 50, rateLimits: { perKey: { limit: 20, per: '60s' }, perCaller: { limit: 5, per: '60s' } } }, { actor: 'alice' });
    await expect(manager.signWithPolicyEnforcement('payments', randomBytes(33), { principal: paymentsApp })).rejects.toMatchObject({ code: 'PolicyViolation', details: { rule: 'maxMessageBytes' } });
    // per caller: 5 of 8 pass for the application itself
    const outcomes = await Promise.allSettled(Array.from({ length: 8 }, () => manager.signWithPolicyEnforcement('payments', randomBytes(8), { principal: paymentsApp })));
    expect(outcomes.filter((o) => o.status === 'fulfilled').length).toBe(5);
    for (const o of outcomes.filter((o) => o.status === 'rejected')) expect((o as PromiseRejectedResult).reason).toMatchObject({ code: 'PolicyViolation', details: { rule: 'rateLimits' } });
    // per key: other callers share the key's 20 (5 used): 15 more pass
    const team = (i: number): CallContext => ({ principal: { type: 'Caller', id: `clerk${i}`, groups: ['payments-team'], roles: [] }, purpose: 'invoice' });
    const manager2 = manager as unknown as { now: () => Date };
    manager2.now = () => new Date('2026-12-02T10:00:00Z');
    const more = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => manager.signWithPolicyEnforcement('payments', randomBytes(8), team(i % 5))));
    expect(more.filter((o) => o.status === 'fulfilled').length).toBe(15);
    // an operation outside allowedOperations
    expect((await manager.authorize('payments', 'rotate', { principal: { type: 'Caller', id: 'bob', groups: [], roles: ['key-admin'] } })).rule).toBe('allowedOperations');
  });

  it('refuses to sign past maxUsesPerVersion until the key is rotated', async () => {
    const { manager, rotation } = await setup();
    await manager.generateApplicationKey('payments', { algorithm: 'ECDSA_P256', maxUsesPerVersion: 3 }, { actor: 'alice' });
    for (let i = 0; i < 3; i++) await manager.signWithPolicyEnforcement('payments', randomBytes(8), { principal: paymentsApp });
    await expect(manager.signWithPolicyEnforcement('payments', randomBytes(8), { principal: paymentsApp })).rejects.toMatchObject({ code: 'PolicyViolation', details: { rule: 'maxUsesPerVersion' } });
    await rotation.manager.rotateKey('payments', { actor: 'alice', reason: 'usage limit' });
    expect((await manager.signWithPolicyEnforcement('payments', randomBytes(8), { principal: paymentsApp })).version).toBe(2);
  });

  it('dual control: 1 of 2 approvals refused, the same approver twice counts once, 2 distinct approvers run it and are recorded', async () => {
    const { manager, rotation, records } = await setup();
    await manager.generateApplicationKey('payments', { algorithm: 'ECDSA_P256', dualControl: { approvers: ['olga', 'peter', 'quinn'], required: 2 } }, { actor: 'alice' });
    await rotation.manager.rotateKey('payments', { actor: 'alice', reason: 'quarterly' });
    const request = manager.requestOperation('payments', 'destroy', { requestedBy: 'alice', reason: 'retire v1', keyId: 'payments.v1' });
    await manager.approve(request.id, 'olga');
    await manager.approve(request.id, 'olga');
    await expect(manager.execute(request.id, 'alice')).rejects.toMatchObject({ code: 'PermissionDenied', message: expect.stringMatching(/needs 2 distinct approvers; it has 1 \(olga\)/) });
    await expect(manager.approve(request.id, 'alice')).rejects.toMatchObject({ code: 'PermissionDenied' });
    await expect(manager.approve(request.id, 'mallory')).rejects.toMatchObject({ code: 'PermissionDenied' });
    expect((await rotation.registry.getKeyVersion('payments.v1')).state).toBe('Superseded');
    await manager.approve(request.id, 'peter');
    await manager.execute(request.id, 'alice');
    expect((await rotation.registry.getKeyVersion('payments.v1')).state).toBe('PendingDestruction');
    const destroys = (await records()).filter((r) => r.type === 'key.destroy');
    expect(destroys.map((r) => [r.outcome, r.details?.approvers])).toEqual([
      ['failure', 'olga'],
      ['success', 'olga,peter'],
    ]);

    const emergency = manager.requestOperation('payments', 'emergency-rotation', { requestedBy: 'alice', reason: 'suspected compromise' });
    await manager.approve(emergency.id, 'quinn');
    await manager.approve(emergency.id, 'peter');
    await manager.execute(emergency.id, 'alice');
    expect((await rotation.registry.getActiveKey('payments')).version).toBe(3);
    expect((await rotation.registry.getKeyVersion('payments.v2')).state).toBe('Compromised');
  });

  it('fails over on the pool while enforcing policy', async () => {
    const { manager, backends } = await setup();
    await manager.generateApplicationKey('payments', { algorithm: 'ECDSA_P256', replicas: 3 }, { actor: 'alice' });
    const { pool } = manager;
    backends[0]!.down = true;
    for (let i = 0; i < 10; i++) expect((await manager.signWithPolicyEnforcement('payments', randomBytes(8), { principal: paymentsApp })).member).not.toBe('m0');
    backends[1]!.down = true;
    await pool.checkHealth();
    for (let i = 0; i < 10; i++) expect((await manager.signWithPolicyEnforcement('payments', randomBytes(8), { principal: paymentsApp })).member).toBe('m2');
    backends[2]!.down = true;
    await pool.checkHealth();
    await expect(manager.signWithPolicyEnforcement('payments', randomBytes(8), { principal: paymentsApp })).rejects.toMatchObject({ code: 'KeyUnavailable' });
  });

  it('reports drift between the registry and the members', async () => {
    const { manager, backends, rotation } = await setup();
    await manager.generateApplicationKey('payments', { algorithm: 'ECDSA_P256', replicas: 3 }, { actor: 'alice' });
    await rotation.manager.rotateKey('payments', { actor: 'alice', reason: 'test' });
    expect((await manager.drift()).missing).toEqual([]);
    backends[1]!.keyStore.keys.delete('payments.v1');
    const report = await manager.drift();
    expect(report.missing).toEqual([{ keyId: 'payments.v1', member: 'm1' }]);
    expect(report.mismatched).toEqual([]);
  });
});
