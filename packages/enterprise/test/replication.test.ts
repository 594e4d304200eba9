/**
 * Replication across SoftHSM tokens by wrap/unwrap under a trusted group KEK: the key signs on
 * every member, the public keys are identical, and the private key leaves a token only wrapped
 * under the trusted KEK (pkcs11-tool and a direct C_WrapKey under an untrusted key both refused).
 */
import { createRequire } from 'node:module';
import { randomBytes, verify as nodeVerify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { exportPublicKey } from '@olocus/hsm-core';
import { Pkcs11Backend } from '@olocus/hsm-backend-pkcs11';
import { SOFTHSM_LIB, createToken, runTool } from '@olocus/hsm-test-support';
import { HsmPool, Pkcs11Replicator } from '../src/index.js';

const tokens = ['rep-a', 'rep-b', 'rep-c'].map((label) => createToken(label));

describe('replication by wrap/unwrap under a trusted group KEK', () => {
  it('a key generated for the group signs on every member with one public key, and is extractable only under the trusted KEK', async () => {
    const replicator = new Pkcs11Replicator(SOFTHSM_LIB!);
    try {
      replicator.provisionGroupKek(tokens.map((t) => ({ tokenLabel: t.label, soPin: t.soPin })));
      const result = replicator.generateReplicated(tokens.map((t) => ({ tokenLabel: t.label, pin: t.pin })), 'group-p256', 'ECDSA_P256');
      expect(result.tokens).toEqual(['rep-a', 'rep-b', 'rep-c']);

      // the private key cannot be wrapped under a key that is not CKA_TRUSTED
      const { PKCS11 } = createRequire(import.meta.url)('pkcs11js') as typeof import('pkcs11js');
      const p11 = new PKCS11();
      p11.load(SOFTHSM_LIB!);
      const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === 'rep-b')!;
      const session = p11.C_OpenSession(slot, 0x6);
      p11.C_Login(session, 1, tokens[1]!.pin);
      const untrusted = p11.C_GenerateKey(session, { mechanism: 0x1080 /* CKM_AES_KEY_GEN */ }, [
        { type: 0x161, value: 32 },
        { type: 0x106, value: true },
        { type: 0x1, value: false },
      ]);
      p11.C_FindObjectsInit(session, [{ type: 0x0, value: 3 }, { type: 0x3, value: 'group-p256' }]);
      const priv = p11.C_FindObjects(session, 1)[0]!;
      p11.C_FindObjectsFinal(session);
      const attrs = p11.C_GetAttributeValue(session, priv, [{ type: 0x162 }, { type: 0x210 }, { type: 0x103 }]);
      expect(attrs.map((a) => (a.value as Buffer)[0])).toEqual([1, 1, 1]); // extractable, wrap-with-trusted, sensitive
      expect(() => p11.C_WrapKey(session, { mechanism: 0x210a }, untrusted, priv, Buffer.alloc(4096))).toThrow(/CKR_KEY_NOT_WRAPPABLE|CKR_WRAPPING_KEY/);
      // ...and can under the trusted group KEK
      p11.C_FindObjectsInit(session, [{ type: 0x0, value: 4 }, { type: 0x3, value: 'olocus-group-kek' }, { type: 0x86, value: true }]);
      const kek = p11.C_FindObjects(session, 1)[0]!;
      p11.C_FindObjectsFinal(session);
      expect(p11.C_WrapKey(session, { mechanism: 0x210a }, kek, priv, Buffer.alloc(4096)).length).toBeGreaterThanOrEqual(64);
      p11.C_Logout(session);
      p11.C_CloseSession(session);
    } finally {
      replicator.close();
    }

    // pkcs11-tool, an independent client, sees a sensitive private key that is extractable (only the
    // direct attribute read above shows CKA_WRAP_WITH_TRUSTED: pkcs11-tool does not print it, and
    // its --wrap handles secret keys only)
    const listing = runTool('pkcs11-tool', ['--module', SOFTHSM_LIB!, '--token-label', 'rep-c', '--login', '--pin', 'env:OLOCUS_PIN', '--list-objects', '--type', 'privkey'], {
      OLOCUS_PIN: tokens[2]!.pin,
    });
    expect(listing.status, listing.stderr).toBe(0);
    expect(listing.stdout).toMatch(/label:\s+group-p256[\s\S]*Access:\s+sensitive, extractable/);

    const backends = tokens.map((t) => new Pkcs11Backend({ libraryPath: SOFTHSM_LIB!, tokenLabel: t.label }, { pin: t.pin }));
    const pool = new HsmPool({ members: backends.map((backend, i) => ({ name: `tok${i}`, backend })), startHealthChecks: false });
    await pool.initialize();
    try {
      expect(await pool.discover('group-p256')).toEqual({ keyId: 'group-p256', members: ['tok0', 'tok1', 'tok2'] });
      const spkis = await Promise.all(backends.map(async (b) => Buffer.from((await b.getPublicKey('group-p256')).spki).toString('hex')));
      expect(new Set(spkis).size).toBe(1);
      const pem = exportPublicKey(await backends[0]!.getPublicKey('group-p256'), 'pem');
      for (const backend of backends) {
        const data = randomBytes(32);
        expect(nodeVerify('sha256', data, { key: pem, dsaEncoding: 'ieee-p1363' }, await backend.sign('group-p256', data))).toBe(true);
      }
    } finally {
      await pool.close();
    }
  });
});
