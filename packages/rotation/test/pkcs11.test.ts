/**
 * The same lifecycle against a PKCS#11 token (SoftHSM 2.6 through @olocus/hsm-backend-pkcs11):
 * key ids `<base>.v<N>` become CKA_LABEL/CKA_ID, listing finds them for reconcile, destroy
 * removes the token objects.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBackupKek, Pkcs11Backend } from '@olocus/hsm-backend-pkcs11';
import { isHsmError } from '@olocus/hsm-core';
import pkcs11js from 'pkcs11js';
import { openRotation, type RotationContext } from '../src/index.js';
import { cleanupStorage, DAY, FakeClock, freshStorage, HOUR, tempDir } from './helpers.js';

const SOFTHSM_LIB = '/usr/lib/softhsm/libsofthsm2.so';

afterAll(cleanupStorage);

describe('rotation on a PKCS#11 token (SoftHSM)', () => {
  let backend: Pkcs11Backend;
  let ctx: RotationContext;
  const clock = new FakeClock();

  beforeAll(async () => {
    if (!existsSync(SOFTHSM_LIB)) {
      throw new Error(`this test needs SoftHSM (${SOFTHSM_LIB}): apt-get install softhsm2`);
    }
    const dir = await tempDir('softhsm');
    mkdirSync(join(dir, 'tokens'));
    writeFileSync(join(dir, 'softhsm2.conf'), `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
    process.env['SOFTHSM2_CONF'] = join(dir, 'softhsm2.conf');
    // a throwaway token in a temporary directory: random PINs, removed with the directory
    const pin = randomBytes(8).toString('hex');
    const soPin = randomBytes(8).toString('hex');
    initToken('rotation', soPin, pin);
    // the backup KEK, so that backup-eligible versions can be exported (the SO's ceremony runs before any user login)
    await createBackupKek({ libraryPath: SOFTHSM_LIB, tokenLabel: 'rotation', soPin });
    backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: 'rotation', sessionPool: { minSessions: 1, maxSessions: 2 } }, { pin });
    await backend.initialize();
    ctx = await openRotation({ storage: await freshStorage('sqlite', 'p11'), backend, now: clock.now, policy: { allowEmergencyRotation: true, retentionVersions: 1, overlapPeriod: '1h', archiveRetention: 0 } });
  });
  afterAll(async () => {
    await ctx?.close();
    await backend?.close();
  });

  it('a logical key created with backup: every version, after rotations too, is generated backup-eligible; others never are', async () => {
    const { manager, registry } = ctx;
    await manager.createKey('kept', 'ECDSA_P256', { actor: 'alice', backup: true });
    await manager.createKey('plain', 'ECDSA_P256', { actor: 'alice' });
    expect((await registry.getLogicalKey('kept')).backup).toBe(true);
    expect((await registry.getLogicalKey('plain')).backup).toBeUndefined();
    clock.advance(HOUR);
    await manager.rotateKey('kept', { actor: 'alice', reason: 'a version made by rotation must be exportable too' });
    for (const keyId of ['kept.v1', 'kept.v2']) {
      const exported = await backend.backup!.exportKey(keyId);
      expect(exported).toMatchObject({ method: 'wrapped', id: keyId, parameters: { mechanism: 'CKM_AES_KEY_WRAP_PAD' } });
    }
    const refused = await backend.backup!.exportKey('plain.v1').then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(isHsmError(refused, 'KeyUsageNotAllowed'), String(refused)).toBe(true);
    await expect(manager.createKey('bad', 'ECDSA_P256', { actor: 'alice', backup: 'yes' as never })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'backup' } });
  });

  it('creates, rotates, signs with the Active version, reconciles and destroys on the token', async () => {
    const { manager, registry, scheduler } = ctx;
    const data = Buffer.from('pkcs11 rotation');
    const v1 = await manager.createKey('p11key', 'ECDSA_P256', { actor: 'alice' });
    expect(v1.backend).toBe('pkcs11');
    expect(v1.keyRef).toMatch(/^pkcs11:/);
    const sig1 = await backend.sign((await registry.resolveForSigning('p11key')).key, data);

    clock.advance(HOUR);
    const r = await manager.rotateKey('p11key', { actor: 'alice', reason: 'pkcs11 rotation' });
    expect(r.current.keyId).toBe('p11key.v2');
    const active = await registry.resolveForSigning('p11key');
    const sig2 = await backend.sign(active.key, data);
    expect(await backend.verify(active.key, data, sig2)).toBe(true);
    const forOld = await registry.resolveForVerification('p11key', new Date(clock.ms - HOUR));
    expect(forOld.version).toBe(1);
    expect(await backend.verify(forOld.key, data, sig1)).toBe(true);

    expect((await manager.reconcile()).orphans).toEqual([]);

    // retention: v1 archived after the overlap, then pending destruction, then destroyed on the token
    clock.advance(2 * HOUR);
    await scheduler.runDueTasks();
    clock.advance(1);
    await scheduler.runDueTasks();
    expect((await registry.getKeyVersion('p11key.v1')).state).toBe('PendingDestruction');
    clock.advance(30 * DAY);
    await scheduler.runDueTasks();
    expect((await registry.getKeyVersion('p11key.v1')).state).toBe('Destroyed');
    await expect(backend.getKey('p11key.v1')).rejects.toMatchObject({ code: 'KeyNotFound' });

    // emergency rotation on the token
    const e = await manager.emergencyRotateKey('p11key', { actor: 'sec', reason: 'token compromise drill' });
    expect(e.previous?.state).toBe('Compromised');
    expect((await registry.getActiveKey('p11key')).keyId).toBe('p11key.v3');
  });
});

/** C_InitToken + C_InitPIN through pkcs11js: the PINs never reach a command line `ps` can show. */
function initToken(label: string, soPin: string, pin: string): void {
  const p11 = new pkcs11js.PKCS11();
  p11.load(SOFTHSM_LIB);
  p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  try {
    const slot = p11.C_GetSlotList(true).find((s) => !(p11.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED));
    if (!slot) throw new Error('SoftHSM has no free slot');
    p11.C_InitToken(slot, soPin, label.padEnd(32, ' '));
    const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    p11.C_Login(session, pkcs11js.CKU_SO, soPin);
    p11.C_InitPIN(session, pin);
    p11.C_Logout(session);
    p11.C_CloseSession(session);
  } finally {
    p11.C_Finalize();
  }
}
