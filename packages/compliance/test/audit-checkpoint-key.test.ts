import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SoftwareBackend } from '@olocus/hsm-backend-software';
import { CHECKPOINT_KEY_ROTATED, checkpointSignerFromBackend, keyFingerprint, openAuditLog, type AuditRecord, type CheckpointSigner, type WitnessEntry } from '../src/audit/index.js';
import { rawSqlite, storageFor, tempDir, type StorageKind } from './audit-helpers.js';

/**
 * Issue 18 item 12: the checkpoint key can be rotated, recorded in the chain, and the log stays
 * verifiable across checkpoint keys (old checkpoints with the old key, kept by fingerprint).
 */

let backend: SoftwareBackend;
let oldSigner: CheckpointSigner;
let newSigner: CheckpointSigner;

beforeAll(async () => {
  backend = new SoftwareBackend({ directory: tempDir('rot-keys'), scrypt: { N: 2 ** 15, r: 8, p: 1 } }, { passphrase: randomBytes(12).toString('hex') });
  await backend.initialize();
  oldSigner = checkpointSignerFromBackend(backend, 'cp-1');
  newSigner = checkpointSignerFromBackend(backend, 'cp-2');
});
afterAll(() => backend?.close());

describe.each<StorageKind>(['sqlite', 'postgres'])('rotateCheckpointKey (%s)', (kind) => {
  it('records the rotation in the chain, the old key signs the checkpoint covering it, and verify holds across both keys', async () => {
    const { storage, raw } = await storageFor(kind, `rot${kind === "postgres" ? "pg" : "lite"}`);
    const witnessPath = join(tempDir('rot-w'), 'w.jsonl');
    const log = await openAuditLog({ storage, logName: 'rot', checkpoint: { signer: oldSigner, everyRecords: 1000, intervalMs: 0 }, witnesses: [{ kind: 'file', path: witnessPath }] });
    for (let i = 0; i < 10; i++) await log.append({ type: 'key.sign', actor: 'a', outcome: 'success' });
    await log.checkpoint();
    const rotation = await log.rotateCheckpointKey(newSigner, { actor: 'alice', reason: 'yearly rotation' });
    const oldSpki = await oldSigner.publicKey();
    const newSpki = await newSigner.publicKey();
    expect(rotation).toMatchObject({ seq: 12, oldKeyId: 'cp-1', newKeyId: 'cp-2', oldFingerprint: keyFingerprint(oldSpki), newFingerprint: keyFingerprint(newSpki), checkpoint: { size: 12, keyId: 'cp-1' } });
    const records: AuditRecord[] = [];
    for await (const r of log.iterate({ types: ['config.change'] })) records.push(r);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ seq: 12, actor: 'alice', reason: 'yearly rotation', details: { action: CHECKPOINT_KEY_ROTATED, oldKeyId: 'cp-1', newKeyId: 'cp-2', newFingerprint: keyFingerprint(newSpki), newPublicKey: Buffer.from(newSpki).toString('base64') } });
    expect(log.settings.checkpointKeyId).toBe('cp-2');
    expect(await log.checkpointKeys()).toEqual([
      { keyId: 'cp-1', fingerprint: keyFingerprint(oldSpki), fromSeq: 0 },
      { keyId: 'cp-2', fingerprint: keyFingerprint(newSpki), fromSeq: 12 },
    ]);
    for (let i = 0; i < 5; i++) await log.append({ type: 'key.sign', actor: 'a', outcome: 'success' });
    const after = await log.checkpoint();
    expect(after).toMatchObject({ size: 17, keyId: 'cp-2' });

    const result = await log.verify();
    expect(result).toMatchObject({ ok: true, checkpoints: 3, checkpointKeys: [{ keyId: 'cp-1', fromSeq: 0 }, { keyId: 'cp-2', fromSeq: 12 }] });
    expect(result.message).toContain('matches the newest witnessed checkpoint (size 17');
    // the witness holds the new key's checkpoint, verified with the new key
    const witnessed = readFileSync(witnessPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as WitnessEntry);
    expect(witnessed.map((e) => [e.size, e.keyId])).toEqual([[11, 'cp-1'], [12, 'cp-1'], [17, 'cp-2']]);
    // verifying with the retired key is refused with a sentence saying which key is in charge
    const withOld = await log.verify({ publicKey: oldSpki });
    expect(withOld).toMatchObject({ ok: false, problem: 'bad-checkpoint-signature' });
    expect(withOld.message).toMatch(/the key given \(cp-1, sha256:[0-9a-f]+\) was retired as checkpoint key; the key in charge is cp-2/);
    await log.close();

    // reopening with the old key's signer follows the rotation (withKey), and without withKey is refused
    const reopened = await openAuditLog({ storage, logName: 'rot', checkpoint: { signer: oldSigner, intervalMs: 0 } });
    expect(reopened.checkpointSigner?.keyId).toBe('cp-2');
    expect((await reopened.verify()).ok).toBe(true);
    await reopened.close();
    const bare: CheckpointSigner = { keyId: 'cp-1', algorithm: 'ECDSA_P256', sign: (d) => oldSigner.sign(d), publicKey: () => oldSigner.publicKey() };
    await expect(openAuditLog({ storage, logName: 'rot', checkpoint: { signer: bare, intervalMs: 0 } })).rejects.toMatchObject({
      code: 'InvalidConfiguration',
      message: expect.stringContaining('its checkpoint key was rotated to cp-2'),
    });

    // tampering: an old-key checkpoint after the handover, or a swapped key index, is caught
    const r = raw();
    const [last] = await r.all<{ id: number }>("select max(id) as id from audit_checkpoints where log_name = 'rot'");
    const [old] = await r.all<{ signature: string; head_hash: string; size: number }>("select signature, head_hash, size from audit_checkpoints where log_name = 'rot' and key_id = 'cp-1' order by id desc limit 1");
    await r.exec("update audit_checkpoint_keys set spki = ?, fingerprint = ? where log_name = 'rot'", [Buffer.from(oldSpki).toString('base64'), keyFingerprint(oldSpki)]);
    const checker = await openAuditLog({ storage, logName: 'rot', checkpoint: { signer: newSigner, intervalMs: 0 } });
    const swapped = await checker.verify();
    expect(swapped).toMatchObject({ ok: false, problem: 'bad-checkpoint-signature' });
    expect(swapped.message).toMatch(/not what record 12 of the chain says/);
    await r.exec("update audit_checkpoint_keys set spki = ?, fingerprint = ? where log_name = 'rot'", [Buffer.from(newSpki).toString('base64'), keyFingerprint(newSpki)]);
    expect((await checker.verify()).ok).toBe(true);
    await r.exec("update audit_checkpoints set key_id = 'cp-1', signature = ? where id = ?", [old!.signature, last!.id]);
    const stale = await checker.verify();
    expect(stale).toMatchObject({ ok: false, problem: 'bad-checkpoint-signature' });
    await r.close();
    await checker.close();
  });
});

describe('rotateCheckpointKey refusals', () => {
  it('refuses the same key, a log without a signer, and a new key that cannot sign; nothing is recorded', async () => {
    const path = join(tempDir('rot-refuse'), 'a.db');
    const log = await openAuditLog({ storage: { kind: 'sqlite', path }, checkpoint: { signer: oldSigner, intervalMs: 0 } });
    await expect(log.rotateCheckpointKey(oldSigner)).rejects.toMatchObject({ code: 'InvalidArgument', message: expect.stringContaining('must differ') });
    const broken: CheckpointSigner = { keyId: 'cp-x', algorithm: 'ECDSA_P256', sign: async () => new Uint8Array(64), publicKey: () => newSigner.publicKey() };
    await expect(log.rotateCheckpointKey(broken)).rejects.toMatchObject({ code: 'SigningFailed' });
    const raw = rawSqlite(path);
    expect(await raw.all("select * from audit_records where type = 'config.change'")).toEqual([]);
    await raw.close();
    await log.close();
    const unsigned = await openAuditLog({ storage: { kind: 'sqlite', path: join(tempDir('rot-unsigned'), 'b.db') } });
    await expect(unsigned.rotateCheckpointKey(newSigner)).rejects.toMatchObject({ code: 'InvalidConfiguration' });
    await unsigned.close();
  });
});
