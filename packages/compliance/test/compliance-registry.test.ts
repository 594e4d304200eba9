import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SoftwareBackend } from '@olocus/hsm-backend-software';
import { openRotation, type RotationContext, type RotationEvent } from '@olocus/hsm-rotation';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../src/audit/types.js';
import { ComplianceManager } from '../src/report/index.js';
import { inventoryFromRegistry, policyFactsFromRotation, type InventoryLogicalKey, type RegistryLike } from '../src/rules/index.js';
import { DAY, HOUR, hsmModule, softwareModule } from './fixtures-compliance/builders.js';
import { chain, MemoryAuditReader, type RecordInput } from './fixtures-compliance/memory-audit.js';

/**
 * A real @olocus/hsm-rotation registry (SQLite in a temporary directory, software-backend keys)
 * feeding inventoryFromRegistry. The audit records are what the CLI writes for the registry's
 * events; they sit in the in-memory reader, standing for the audit store.
 */
describe('inventoryFromRegistry with a real rotation registry', () => {
  let dir: string;
  let rotation: RotationContext;
  let backend: SoftwareBackend;
  let ms = Date.UTC(2026, 0, 1);
  const now = () => new Date(ms);
  const events: RotationEvent[] = [];
  const inputs: RecordInput[] = [];
  let keys: InventoryLogicalKey[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'olocus-compliance-registry-'));
    backend = new SoftwareBackend({ directory: join(dir, 'keys'), scrypt: { N: 2 ** 15, r: 8, p: 1 }, cacheRevalidateMs: 0 }, { passphrase: 'compliance-registry-test' });
    await backend.initialize();
    rotation = await openRotation({
      storage: { kind: 'sqlite', path: join(dir, 'registry.db') },
      backend,
      policy: { allowEmergencyRotation: true, destructionDelay: '30d', overlapPeriod: '1h', rotationInterval: '90d' },
      now,
      onEvent: (e) => events.push(e),
    });
    // The registry type-checks as RegistryLike (the compiler proves the structural match).
    const like: RegistryLike = rotation.registry;
    void like;

    const { manager } = rotation;
    await manager.createKey('payments', 'ECDSA_P256', { actor: 'alice@example.com', reason: 'new payments key' });
    await manager.createKey('tokens', 'Ed25519', { actor: 'alice@example.com', reason: 'new token key' });
    ms += 10 * DAY;
    const sign = async (base: string) => {
      const active = await rotation.registry.getActiveKey(base);
      await backend.sign(active.keyId, new TextEncoder().encode('data'));
      inputs.push({ type: 'key.sign', time: now().toISOString(), actor: 'svc-app', backend: 'software', keyId: active.keyId, baseKeyId: base, keyVersion: active.version, algorithm: active.algorithm });
    };
    await sign('payments');
    await sign('tokens');
    ms += DAY;
    await manager.rotateKey('payments', { actor: 'alice@example.com', reason: 'quarterly rotation' });
    ms += 2 * HOUR;
    await sign('payments');
    ms += DAY;
    await manager.emergencyRotateKey('tokens', { actor: 'secops@example.com', reason: 'private key exposed' });
    ms += HOUR;
    await sign('tokens');
    ms += DAY;
    await manager.scheduleDestruction('tokens.v1', { actor: 'secops@example.com', reason: 'compromised key: destroy after the waiting period' });
    ms += DAY;

    for (const e of events) {
      if (e.type === 'stateChanged') {
        inputs.push({ type: 'key.state', time: e.at.toISOString(), actor: e.actor, keyId: e.keyId, baseKeyId: e.baseKeyId, keyVersion: e.version, reason: e.reason, details: { from: e.from, to: e.to } });
      } else if (e.type === 'rotated') {
        inputs.push({ type: 'key.rotate', time: e.at.toISOString(), actor: e.actor, keyId: e.keyId, baseKeyId: e.baseKeyId, keyVersion: e.toVersion, reason: e.reason, details: { kind: e.kind, fromVersion: e.fromVersion, toVersion: e.toVersion } });
      }
    }
    inputs.sort((a, b) => a.time.localeCompare(b.time));
    keys = await inventoryFromRegistry(rotation.registry).logicalKeys();
  });

  afterAll(async () => {
    await rotation?.close();
    await backend?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reads every logical key, version and recorded state change', () => {
    expect(keys.map((k) => k.baseKeyId)).toEqual(['payments', 'tokens']);
    const payments = keys[0]!;
    expect(payments.versions.map((v) => [v.keyId, v.state, v.algorithm, v.backend])).toEqual([
      ['payments.v1', 'Superseded', 'ECDSA_P256', 'software'],
      ['payments.v2', 'Active', 'ECDSA_P256', 'software'],
    ]);
    expect(payments.rotationIntervalMs).toBe(90 * DAY);
    expect(payments.createdBy).toBe('alice@example.com');
    const tokens = keys[1]!;
    expect(tokens.versions.map((v) => v.state)).toEqual(['PendingDestruction', 'Active']);
    expect(tokens.versions[0]!.destroyAfter!.getTime() - tokens.versions[0]!.stateChangedAt.getTime()).toBe(30 * DAY);
    const changes = tokens.history.map((h) => `${h.keyId}:${h.from ?? 'new'}→${h.to}`);
    expect([...changes].sort()).toEqual(
      ['tokens.v1:new→PreActivation', 'tokens.v1:PreActivation→Active', 'tokens.v2:new→PreActivation', 'tokens.v2:PreActivation→Active', 'tokens.v1:Active→Compromised', 'tokens.v1:Compromised→PendingDestruction'].sort(),
    );
    // Recorded in time order.
    expect(tokens.history.map((h) => h.at!.getTime())).toEqual([...tokens.history.map((h) => h.at!.getTime())].sort((a, b) => a - b));
    expect(tokens.history.every((h) => h.at instanceof Date && h.actor && h.reason)).toBe(true);
  });

  it('a PCI DSS report over the registry: lifecycle rules pass on the registry\'s own records, dual control is missing', async () => {
    const records: AuditRecord[] = chain(inputs);
    const checker = new ComplianceManager({
      audit: new MemoryAuditReader(records),
      inventory: inventoryFromRegistry(rotation.registry),
      modules: async () => [softwareModule(), hsmModule()],
      config: { policy: policyFactsFromRotation(rotation.manager.policy) },
      clock: now,
    });
    const report = await checker.generateComplianceReport({ framework: 'pci-dss', from: new Date(Date.UTC(2026, 0, 1)), to: now() });
    const passed = new Set(report.passes.map((p) => p.ruleId));
    for (const id of ['LC-PROTECT', 'LC-PRIMARY', 'LC-RECORD', 'LC-EMERG', 'LC-PENDING', 'LC-DESTROY-ACTIVE']) expect(passed.has(id), id).toBe(true);
    const violated = report.violations.map((v) => `${v.ruleId}:${v.keyId ?? ''}`);
    // Software keys are outside an HSM; the emergency rotation and the destruction request carry no approvers.
    expect(violated).toContain('PCI-3.6.1.2:payments.v2');
    expect(violated).toContain('PCI-3.7.6:tokens.v2');
    expect(violated).toContain('PCI-3.7.6:tokens.v1');
    expect(report.metrics.totals.signs).toBe(4);
    expect(report.inventory).toMatchObject({ source: 'rotation registry', logicalKeys: 2, versions: 4, byState: { Active: 2, PendingDestruction: 1, Superseded: 1 } });
    expect(report.metadata.config.policy.destruction.waitingDays).toBe(30);
  });
});
