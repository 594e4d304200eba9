import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { HsmError } from '@olocus/hsm-core';
import { eventToRecords } from '../src/audit/index.js';

describe('OperationEvent → audit records', () => {
  const data = Buffer.from('the signed bytes');
  const digest = 'sha256:' + createHash('sha256').update(data).digest('hex');

  it('maps each operation to its type, records data by digest only, and logical keys', () => {
    const types = (['generateKey', 'getKey', 'getPublicKey', 'sign', 'verify', 'destroyKey'] as const).map(
      (operation) => eventToRecords({ operation, backend: 'software', keyId: 'k', outcome: 'success', latencyMs: 1.23456 }, 'svc')[0]!.type,
    );
    expect(types).toEqual(['key.generate', 'key.access', 'key.access', 'key.sign', 'key.verify', 'key.destroy']);
    const [sign] = eventToRecords({ operation: 'sign', backend: 'pkcs11', keyId: 'pay.v3', algorithm: 'ECDSA_P256', data, outcome: 'success', latencyMs: 2, logicalKey: { baseKeyId: 'pay', version: 3 } }, 'alice');
    expect(sign).toMatchObject({ type: 'key.sign', actor: 'alice', backend: 'pkcs11', keyId: 'pay.v3', baseKeyId: 'pay', keyVersion: 3, algorithm: 'ECDSA_P256', dataDigest: digest, outcome: 'success' });
    expect(JSON.stringify(sign)).not.toContain('the signed bytes');
    const [verify] = eventToRecords({ operation: 'verify', backend: 'software', keyId: 'k', data, outcome: 'success', valid: false, verifiedLocally: true, latencyMs: 0.1 }, 'bob');
    expect(verify).toMatchObject({ type: 'key.verify', outcome: 'success', details: { operation: 'verify', valid: false, verifiedLocally: true } });
  });

  it('records the error code, and credential failures again as auth.failure', () => {
    const failed = eventToRecords({ operation: 'sign', backend: 'software', keyId: 'k', outcome: 'failure', error: new HsmError('KeyNotFound', 'no key k'), latencyMs: 1 }, 'a');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ type: 'key.sign', outcome: 'failure', errorCode: 'KeyNotFound', reason: 'no key k' });
    for (const code of ['LoginFailed', 'PinLocked', 'WrongPassphrase'] as const) {
      const recs = eventToRecords({ operation: 'getKey', backend: 'pkcs11', keyId: 'k', outcome: 'failure', error: new HsmError(code, 'denied'), latencyMs: 1 }, 'a');
      expect(recs.map((r) => r.type)).toEqual(['key.access', 'auth.failure']);
      expect(recs[1]).toMatchObject({ errorCode: code, outcome: 'failure' });
    }
    // a foreign error's message (which could hold anything) is not copied
    const foreign = eventToRecords({ operation: 'sign', backend: 'x', outcome: 'failure', error: new Error('pin=1234'), latencyMs: 1 }, 'a');
    expect(JSON.stringify(foreign)).not.toContain('1234');
  });
});

describe('purpose through the audited backend', () => {
  it('a checkpoint signer on an audited backend is recorded with details.purpose audit-checkpoint; a canary sign with health-canary', async () => {
    const { MemoryBackend } = await import('@olocus/hsm-core/testing');
    const { join } = await import('node:path');
    const { openAuditLog, withAudit, checkpointSignerFromBackend } = await import('../src/audit/index.js');
    const { tempDir } = await import('./audit-helpers.js');
    const log = await openAuditLog({ storage: { kind: 'sqlite', path: join(tempDir('purpose'), 'audit.db') }, logName: 'purpose' });
    const backend = withAudit(new MemoryBackend(), log, { actor: 'svc' });
    await backend.initialize();
    const signer = checkpointSignerFromBackend(backend, 'cp-key');
    await signer.sign(Buffer.from('checkpoint body'));
    const key = await backend.generateKeyPair({ id: 'app', algorithm: 'Ed25519' });
    await backend.sign(key, Buffer.from('canary'), { purpose: 'health-canary' });
    await backend.sign(key, Buffer.from('payload'));
    const signs: { keyId?: string; details?: Record<string, unknown> }[] = [];
    for await (const r of log.iterate({ types: ['key.sign'] })) signs.push(r);
    expect(signs.map((r) => [r.keyId, r.details?.['purpose']])).toEqual([
      ['cp-key', 'audit-checkpoint'],
      ['app', 'health-canary'],
      ['app', undefined],
    ]);
    await backend.close();
    await log.close();
  });
});
