/**
 * Runs against: gcp-kms-emulator. Rotation, audit and compliance work unchanged on gcp-kms:
 * the rotation registry creates and rotates keys in the key ring, HsmManager signs by logical
 * key, an old signature verifies with its signing time after the rotation, and the audit log
 * (its checkpoints signed by a key in the same key ring) verifies.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackendRegistry, HsmManager } from '@olocus/hsm-core';
import { ComplianceManager, checkpointSignerFromBackend, inventoryFromRegistry, openAuditLog, withAudit } from '@olocus/hsm-compliance';
import { openRotation } from '@olocus/hsm-rotation';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as gcpPackage from '../src/index.js';
import { loopbackBackend, uniqueRing } from './helpers/backend.js';
import { isolateFromGoogle, startEmulator, type RunningEmulator } from './helpers/emulator.js';

isolateFromGoogle();
let emulator: RunningEmulator;
let work: string;
const keyRing = uniqueRing();

beforeAll(async () => {
  emulator = await startEmulator();
  work = mkdtempSync(join(tmpdir(), 'olocus-gcp-rotation-'));
});
afterAll(async () => {
  await emulator?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('rotation, audit and compliance work unchanged on gcp-kms', () => {
  it('rotate, then verify an old signature with its signing time (HsmManager through the registry)', async () => {
    const options = { projectId: 'olocus-test', location: 'us-east1', keyRing, createKeyRing: true, apiEndpoint: '127.0.0.1', port: emulator.port, insecure: true };
    const backend = loopbackBackend(emulator.port, { keyRing });
    await backend.initialize();
    const rotation = await openRotation({ storage: { kind: 'sqlite', path: join(work, 'registry.db') }, backend });
    // the registry loads this package by name, as the CLI does for `type: gcp-kms`
    const imported: string[] = [];
    const registry = new BackendRegistry({
      importer: async (specifier) => {
        imported.push(specifier);
        return gcpPackage;
      },
    });
    const hsm = new HsmManager({ backend: { type: 'gcp-kms', package: '@olocus/hsm-backend-gcp', options } }, { registry, resolver: rotation.registry });
    await hsm.initialize();
    try {
      expect(imported).toEqual(['@olocus/hsm-backend-gcp']);
      const base = 'invoices';
      await rotation.manager.createKey(base, 'ECDSA_P256', { actor: 'alice', reason: 'new invoice key' });
      const data = randomBytes(64);
      const old = await hsm.signWithLogicalKey(base, data);
      expect(old.version.version).toBe(1);
      await rotation.manager.rotateKey(base, { actor: 'alice', reason: 'scheduled rotation' });
      const fresh = await hsm.signWithLogicalKey(base, data);
      expect(fresh.version.version).toBe(2);
      expect(await hsm.verifyWithLogicalKey(base, data, old.signature, old.signedAt)).toBe(true);
      expect(await hsm.verifyWithLogicalKey(base, data, fresh.signature, fresh.signedAt)).toBe(true);
      // the two versions are two CryptoKeys in the key ring, resolved by their version names
      const v1 = await backend.getKey(String(old.version.key));
      const v2 = await backend.getKey(String(fresh.version.key));
      expect(v1.ref).not.toBe(v2.ref);
      expect(v1.ref).toMatch(new RegExp(`^projects/olocus-test/locations/us-east1/keyRings/${keyRing}/cryptoKeys/.+/cryptoKeyVersions/1$`));
      // a signature of v1 does not pass for v2's time
      expect(await hsm.verifyWithLogicalKey(base, randomBytes(64), old.signature, old.signedAt)).toBe(false);
    } finally {
      await hsm.close();
      await rotation.close();
      await backend.close();
    }
  });

  it('the audit log signs its checkpoints with a key in the key ring and verifies; HSM protection passes NIST-SC-13 on the provider claim', async () => {
    const backend = loopbackBackend(emulator.port, { keyRing });
    await backend.initialize();
    const from = new Date(Date.now() - 60_000);
    const log = await openAuditLog({
      storage: { kind: 'sqlite', path: join(work, 'audit.db') },
      checkpoint: { everyRecords: 2, signer: checkpointSignerFromBackend(backend, 'audit-checkpoint') },
    });
    const audited = withAudit(backend, log, { actor: 'svc-test' });
    const rotation = await openRotation({ storage: { kind: 'sqlite', path: join(work, 'registry-audit.db') }, backend: audited });
    try {
      await rotation.manager.createKey('payments', 'ECDSA_P384', { actor: 'alice', reason: 'new payments key' });
      const active = await rotation.registry.getActiveKey('payments');
      await audited.sign(active.keyId, randomBytes(32));
      await rotation.manager.rotateKey('payments', { actor: 'alice', reason: 'scheduled rotation' });
      const modules = [{ backend: backend.type, info: await backend.info(), fips: await backend.fipsStatus(), capabilities: await backend.capabilities() }];
      const evaluation = await new ComplianceManager({ audit: log, inventory: inventoryFromRegistry(rotation.registry), modules }).evaluate({
        framework: 'fisma',
        from,
        to: new Date(Date.now() + 60_000),
      });
      await log.flush();
      const checkpoint = await log.checkpoint();
      const verification = await log.verify();
      expect(checkpoint?.signature).toBeTruthy();
      expect(verification.ok).toBe(true);
      expect(verification.checkpoints).toBeGreaterThan(0);
      const sc13 = evaluation.findings.filter((f) => f.ruleId === 'NIST-SC-13');
      expect(sc13.length).toBeGreaterThan(0);
      expect(sc13.every((f) => f.status === 'pass'), JSON.stringify(sc13)).toBe(true);
    } finally {
      await rotation.close();
      await log.close();
      await backend.close();
    }
  });
});
