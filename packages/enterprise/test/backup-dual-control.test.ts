/**
 * Backup under dual control (issues 16 and 17): the enterprise manager's backup gate in front of
 * @olocus/hsm-backup's createBundle, on a pool member that is the real software backend (sealed
 * key files), with a real rotation registry and a real audit log (SQLite).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { openRotation } from '@olocus/hsm-rotation';
import { openAuditLog, type AuditLog, type AuditRecord } from '@olocus/hsm-compliance';
import { SoftwareBackend } from '@olocus/hsm-backend-software';
import { createBundle, verifyBundle } from '@olocus/hsm-backup';
import { CedarAuthorizer, EnterpriseKeyManager, HsmPool } from '../src/index.js';

const work = mkdtempSync(join(tmpdir(), 'olocus-enterprise-backup-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

let n = 0;
async function setup() {
  n++;
  const member = new SoftwareBackend({ directory: join(work, `keys-${n}`), scrypt: { N: 2 ** 15, r: 8, p: 1 }, cacheRevalidateMs: 0 }, { passphrase: `enterprise-backup-test-${n}` });
  const pool = new HsmPool({ members: [{ name: 'soft', backend: member }], startHealthChecks: false });
  let manager: EnterpriseKeyManager | undefined;
  const backend = EnterpriseKeyManager.poolBackend(pool, () => manager);
  await backend.initialize();
  const rotation = await openRotation({ storage: { kind: 'sqlite', path: join(work, `registry-${n}.db`) }, backend });
  const audit: AuditLog = await openAuditLog({ storage: { kind: 'sqlite', path: join(work, `audit-${n}.db`) } });
  manager = new EnterpriseKeyManager({ pool, rotation, authorizer: new CedarAuthorizer(), audit });
  closers.push(() => pool.close(), () => rotation.close(), () => audit.close());
  const records = async (): Promise<AuditRecord[]> => {
    await audit.flush();
    const out: AuditRecord[] = [];
    for await (const r of audit.iterate()) out.push(r);
    return out;
  };
  const backup = async (keys: string[], out: string, options: { actor: string; requestId?: string }) => {
    const gate = manager!.backupGate(options);
    const result = await createBundle(out, { backend: member, registry: rotation.registry, keys, actor: options.actor, authorize: gate.authorize });
    return { result, spent: await gate.complete({ file: out, sha256: result.sha256 }) };
  };
  return { manager, rotation, records, backup };
}

const dualPolicy = { algorithm: 'ECDSA_P256', backupRequired: true, allowedOperations: ['sign', 'verify', 'backup'], dualControl: { approvers: ['olga', 'peter', 'quinn'], required: 2, operations: ['backup'] } };

describe('backup under dual control', () => {
  it('refuses without a request and with 1 of 2 approvals (no bundle written); 2 distinct approvers let one backup run, recorded with them; the request is then spent', async () => {
    const { manager, records, backup } = await setup();
    await manager.generateApplicationKey('payments', dualPolicy, { actor: 'alice' });
    const out = join(work, 'payments-1.olocus-backup');

    await expect(backup(['payments'], out, { actor: 'alice' })).rejects.toMatchObject({ code: 'PermissionDenied', message: expect.stringMatching(/backup of payments is under dual control.*2 of olga, peter, quinn/) });
    expect(existsSync(out)).toBe(false);

    const request = manager.requestOperation('payments', 'backup', { requestedBy: 'alice', reason: 'quarterly off-site copy' });
    await manager.approve(request.id, 'olga');
    await manager.approve(request.id, 'olga');
    await expect(backup(['payments'], out, { actor: 'alice', requestId: request.id })).rejects.toMatchObject({ code: 'PermissionDenied', message: expect.stringMatching(/needs 2 distinct approvers; request .* has 1 \(olga\)/) });
    expect(existsSync(out)).toBe(false);
    // the backup is carried out by the backup itself, not by execute()
    await expect(manager.execute(request.id, 'alice')).rejects.toMatchObject({ code: 'InvalidArgument', message: expect.stringContaining('--request') });

    await manager.approve(request.id, 'peter');
    const { result, spent } = await backup(['payments'], out, { actor: 'alice', requestId: request.id });
    expect(result.keys.map((k) => k.id)).toEqual(['payments.v1']);
    expect(spent.map((r) => r.id)).toEqual([request.id]);
    expect(manager.approvalRequest(request.id).state).toBe('executed');
    expect((await verifyBundle(out, { trustedSigners: [result.signer.fingerprint] })).trusted).toBe(true);

    // approvals count for one backup
    await expect(backup(['payments'], join(work, 'payments-2.olocus-backup'), { actor: 'alice', requestId: request.id })).rejects.toMatchObject({ code: 'PermissionDenied', message: expect.stringContaining('already used') });

    const backups = (await records()).filter((r) => r.type === 'admin.action' && r.details?.action === 'backup');
    expect(backups.map((r) => [r.outcome, r.details?.approvers ?? null])).toEqual([
      ['failure', null],
      ['failure', null],
      ['success', 'olga,peter'],
      ['failure', null],
    ]);
    expect(backups[2]!.details).toMatchObject({ request: request.id, required: 2, sha256: result.sha256 });
  });

  it('a request for another application or operation does not open the gate; a policy without backup refuses; an app without dual control needs no request', async () => {
    const { manager, backup } = await setup();
    await manager.generateApplicationKey('payments', dualPolicy, { actor: 'alice' });
    await manager.generateApplicationKey('hr', { algorithm: 'ECDSA_P256', backupRequired: true, allowedOperations: ['sign', 'verify', 'backup'] }, { actor: 'alice' });
    await manager.generateApplicationKey('ops', { algorithm: 'ECDSA_P256', dualControl: { approvers: ['olga', 'peter'], required: 2 } }, { actor: 'alice' });

    const destroy = manager.requestOperation('ops', 'destroy', { requestedBy: 'alice', reason: 'x', keyId: 'ops.v1' });
    await manager.approve(destroy.id, 'olga');
    await manager.approve(destroy.id, 'peter');
    await expect(backup(['payments'], join(work, 'x.olocus-backup'), { actor: 'alice', requestId: destroy.id })).rejects.toMatchObject({ message: expect.stringContaining('is not a backup request for payments') });
    await expect(backup(['ops'], join(work, 'y.olocus-backup'), { actor: 'alice' })).rejects.toMatchObject({ code: 'PolicyViolation', details: { rule: 'allowedOperations' } });
    const { result } = await backup(['hr'], join(work, 'hr.olocus-backup'), { actor: 'alice' });
    expect(result.keys.map((k) => k.id)).toEqual(['hr.v1']);
  });
});
