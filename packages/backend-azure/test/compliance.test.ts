import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ComplianceManager, checkpointSignerFromBackend, inventoryFromRegistry, openAuditLog, withAudit, type ModuleFacts } from '@olocus/hsm-compliance';
import { openRotation } from '@olocus/hsm-rotation';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AzureKeyVaultBackend } from '../src/index.js';
import { startFakeKeyVault, type FakeKeyVault } from './fake-key-vault.js';
import { backendFor } from './helpers.js';

// Audit and compliance on azure-keyvault, against the project's wire-level Key Vault (README).
let fake: FakeKeyVault;
let work: string;
beforeAll(async () => {
  fake = await startFakeKeyVault();
  work = mkdtempSync(join(tmpdir(), 'olocus-azure-compliance-'));
});
afterAll(async () => {
  await fake?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function moduleFacts(backend: AzureKeyVaultBackend): Promise<ModuleFacts> {
  return { backend: backend.type, info: await backend.info(), fips: await backend.fipsStatus(), capabilities: await backend.capabilities() };
}

async function scenario(hsm: boolean) {
  const dir = mkdtempSync(join(work, hsm ? 'hsm-' : 'std-'));
  const backend = backendFor(fake, { hsm });
  await backend.initialize();
  const from = new Date(Date.now() - 60_000);
  // the audit log signs its checkpoints with a key in the same vault
  const log = await openAuditLog({
    storage: { kind: 'sqlite', path: join(dir, 'audit.db') },
    checkpoint: { everyRecords: 2, signer: checkpointSignerFromBackend(backend, `audit-checkpoint-${hsm ? 'hsm' : 'std'}`) },
  });
  const audited = withAudit(backend, log, { actor: 'svc-test' });
  const rotation = await openRotation({ storage: { kind: 'sqlite', path: join(dir, 'registry.db') }, backend: audited });
  const base = `payments-${hsm ? 'hsm' : 'std'}`;
  await rotation.manager.createKey(base, 'ECDSA_P256', { actor: 'alice', reason: 'new payments key' });
  const active = await rotation.registry.getActiveKey(base);
  await audited.sign(active.keyId, randomBytes(32));
  await rotation.manager.rotateKey(base, { actor: 'alice', reason: 'scheduled rotation' });
  const manager = new ComplianceManager({ audit: log, inventory: inventoryFromRegistry(rotation.registry), modules: [await moduleFacts(backend)] });
  const evaluation = await manager.evaluate({ framework: 'fisma', from, to: new Date(Date.now() + 60_000) });
  await log.flush();
  const checkpoint = await log.checkpoint();
  const verification = await log.verify();
  await rotation.close();
  await log.close();
  await backend.close();
  return { evaluation, verification, checkpoint };
}

describe('audit and compliance work unchanged on azure-keyvault', () => {
  it('a Standard-vault (software) key is flagged: not a FIPS-validated module; the audit chain verifies', async () => {
    const { evaluation, verification, checkpoint } = await scenario(false);
    expect(checkpoint?.signature).toBeTruthy();
    expect(verification.ok).toBe(true);
    // checkpoints were signed by a key in the vault and verified
    expect(verification.checkpoints).toBeGreaterThan(0);
    const sc13 = evaluation.findings.filter((f) => f.ruleId === 'NIST-SC-13');
    expect(sc13.some((f) => f.status === 'violation' && /azure-keyvault .* is not a FIPS-validated module/.test(f.message))).toBe(true);
  });

  it('HSM-protected keys pass the same rule on the provider\'s claim', async () => {
    const { evaluation } = await scenario(true);
    const sc13 = evaluation.findings.filter((f) => f.ruleId === 'NIST-SC-13');
    expect(sc13.length).toBeGreaterThan(0);
    expect(sc13.every((f) => f.status === 'pass'), JSON.stringify(sc13)).toBe(true);
    expect(sc13[0]!.message).toMatch(/provider-claim/);
  });
});
