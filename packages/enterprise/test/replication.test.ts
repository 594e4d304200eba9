/**
 * Replication across SoftHSM tokens on backend-pkcs11's backup API (group KEK = the backup KEK):
 * the key signs on every member, the public keys are identical, the private key leaves a token
 * only wrapped under the trusted KEK (pkcs11-tool and a direct C_WrapKey under an untrusted key
 * both refused), a session with no login cannot unwrap a replica's wrapped blob on any member (the
 * hole of the earlier public wrap+unwrap KEK is closed), and Ed25519 is refused with the
 * backend's typed error (SoftHSM 2.6.1 cannot wrap EdDSA keys).
 */
import { createRequire } from 'node:module';
import { randomBytes, verify as nodeVerify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { PKCS11 } from 'pkcs11js';
import { HsmError, exportPublicKey } from '@olocus/hsm-core';
import { DEFAULT_BACKUP_KEK_LABEL, Pkcs11Backend } from '@olocus/hsm-backend-pkcs11';
import { SOFTHSM_LIB, createToken, runTool } from '@olocus/hsm-test-support';
import { DEFAULT_GROUP_KEK_LABEL, HsmPool, Pkcs11Replicator } from '../src/index.js';

const tokens = ['rep-a', 'rep-b', 'rep-c'].map((label) => createToken(label));

const CKA_CLASS = 0x0;
const CKA_TOKEN = 0x1;
const CKA_PRIVATE = 0x2;
const CKA_LABEL = 0x3;
const CKA_TRUSTED = 0x86;
const CKA_KEY_TYPE = 0x100;
const CKA_SENSITIVE = 0x103;
const CKA_WRAP = 0x106;
const CKA_UNWRAP = 0x107;
const CKA_EXTRACTABLE = 0x162;
const CKA_WRAP_WITH_TRUSTED = 0x210;
const CKO_PRIVATE_KEY = 3;
const CKO_SECRET_KEY = 4;
const CKK_EC = 3;
const CKM_AES_KEY_GEN = 0x1080;
const CKM_AES_KEY_WRAP_PAD = 0x210a;
const CKF_RW_SERIAL = 0x6;
const CKU_USER = 1;

function openModule(): PKCS11 {
  const { PKCS11 } = createRequire(import.meta.url)('pkcs11js') as typeof import('pkcs11js');
  const p11 = new PKCS11();
  p11.load(SOFTHSM_LIB!);
  // the replicator's backends are closed, so the module was finalized: initialize it for these checks
  p11.C_Initialize();
  return p11;
}

function openSession(p11: PKCS11, tokenLabel: string): Buffer {
  const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === tokenLabel)!;
  return p11.C_OpenSession(slot, CKF_RW_SERIAL);
}

function find(p11: PKCS11, session: Buffer, template: { type: number; value: number | boolean | string }[]): Buffer[] {
  p11.C_FindObjectsInit(session, template);
  try {
    return p11.C_FindObjects(session, 10);
  } finally {
    p11.C_FindObjectsFinal(session);
  }
}

const flags = (p11: PKCS11, session: Buffer, object: Buffer, types: number[]) => p11.C_GetAttributeValue(session, object, types.map((type) => ({ type }))).map((a) => (a.value as Buffer)[0]);

describe('replication by export/import under the group KEK (backend-pkcs11 backup API)', () => {
  it('uses the label member backends use by default as backupKekLabel', () => {
    expect(DEFAULT_GROUP_KEK_LABEL).toBe(DEFAULT_BACKUP_KEK_LABEL);
  });

  it('a key generated for the group signs on every member with one public key, is extractable only under the trusted KEK, and no PIN-less session can unwrap it', async () => {
    const replicator = new Pkcs11Replicator(SOFTHSM_LIB!);
    await replicator.provisionGroupKek(tokens.map((t) => ({ tokenLabel: t.label, soPin: t.soPin, pin: t.pin })));
    const result = await replicator.generateReplicated(tokens.map((t) => ({ tokenLabel: t.label, pin: t.pin })), 'group-p256', 'ECDSA_P256');
    expect(result.tokens).toEqual(['rep-a', 'rep-b', 'rep-c']);

    const p11 = openModule();
    let stolen: Buffer;
    try {
      // a replica: the private key can be wrapped only under a CKA_TRUSTED key
      const session = openSession(p11, 'rep-b');
      p11.C_Login(session, CKU_USER, tokens[1]!.pin);
      const untrusted = p11.C_GenerateKey(session, { mechanism: CKM_AES_KEY_GEN }, [
        { type: 0x161 /* CKA_VALUE_LEN */, value: 32 },
        { type: CKA_WRAP, value: true },
        { type: CKA_TOKEN, value: false },
      ]);
      const [priv] = find(p11, session, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_LABEL, value: 'group-p256' }]);
      expect(flags(p11, session, priv!, [CKA_EXTRACTABLE, CKA_WRAP_WITH_TRUSTED, CKA_SENSITIVE])).toEqual([1, 1, 1]);
      expect(() => p11.C_WrapKey(session, { mechanism: CKM_AES_KEY_WRAP_PAD }, untrusted, priv!, Buffer.alloc(4096))).toThrow(/CKR_KEY_NOT_WRAPPABLE|CKR_WRAPPING_KEY/);
      // ...and can under the trusted group KEK: this blob is what a thief would hold
      const trusted = find(p11, session, [{ type: CKA_CLASS, value: CKO_SECRET_KEY }, { type: CKA_LABEL, value: DEFAULT_GROUP_KEK_LABEL }, { type: CKA_TRUSTED, value: true }]);
      expect(trusted).toHaveLength(1);
      stolen = p11.C_WrapKey(session, { mechanism: CKM_AES_KEY_WRAP_PAD }, trusted[0]!, priv!, Buffer.alloc(4096));
      expect(stolen.length).toBeGreaterThanOrEqual(64);
      // the member's halves: the trusted one is public and wraps only; the private one unwraps only
      expect(flags(p11, session, trusted[0]!, [CKA_PRIVATE, CKA_WRAP, CKA_UNWRAP])).toEqual([0, 1, 0]);
      const privateHalf = find(p11, session, [{ type: CKA_CLASS, value: CKO_SECRET_KEY }, { type: CKA_LABEL, value: DEFAULT_GROUP_KEK_LABEL }, { type: CKA_PRIVATE, value: true }]);
      expect(privateHalf).toHaveLength(1);
      expect(flags(p11, session, privateHalf[0]!, [CKA_WRAP, CKA_UNWRAP, CKA_EXTRACTABLE])).toEqual([0, 1, 0]);
      p11.C_Logout(session);
      p11.C_CloseSession(session);

      // the colleague's attack, on every member: C_OpenSession without C_Login, find the KEK, C_UnwrapKey
      for (const token of tokens) {
        const anonymous = openSession(p11, token.label);
        try {
          const keks = find(p11, anonymous, [{ type: CKA_CLASS, value: CKO_SECRET_KEY }, { type: CKA_LABEL, value: DEFAULT_GROUP_KEK_LABEL }]);
          // the public trusted half is visible without a login (so the check below is not vacuous); the private half is not
          expect(keks, token.label).toHaveLength(1);
          expect(() =>
            p11.C_UnwrapKey(anonymous, { mechanism: CKM_AES_KEY_WRAP_PAD }, keks[0]!, stolen, [
              { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
              { type: CKA_KEY_TYPE, value: CKK_EC },
              { type: CKA_TOKEN, value: false },
              { type: CKA_PRIVATE, value: false },
              { type: CKA_SENSITIVE, value: false },
              { type: CKA_EXTRACTABLE, value: true },
            ]),
          ).toThrow(/CKR_KEY_FUNCTION_NOT_PERMITTED/);
        } finally {
          p11.C_CloseSession(anonymous);
        }
      }

      // control: the same PIN-less steps succeed against a public AES key that may unwrap (the shape
      // of the earlier group KEK), so the refusal above is the KEK's attributes, not the method
      const anonymous = openSession(p11, 'rep-a');
      try {
        const publicKek = p11.C_CreateObject(anonymous, [
          { type: CKA_CLASS, value: CKO_SECRET_KEY },
          { type: CKA_KEY_TYPE, value: 0x1f /* CKK_AES */ },
          { type: CKA_TOKEN, value: false },
          { type: CKA_PRIVATE, value: false },
          { type: 0x11 /* CKA_VALUE */, value: randomBytes(32) },
          { type: CKA_WRAP, value: true },
          { type: CKA_UNWRAP, value: true },
        ]);
        const pair = p11.C_GenerateKeyPair(
          anonymous,
          { mechanism: 0x1040 /* CKM_EC_KEY_PAIR_GEN */ },
          [{ type: CKA_TOKEN, value: false }, { type: 0x180 /* CKA_EC_PARAMS */, value: Buffer.from('06082a8648ce3d030107', 'hex') }],
          [{ type: CKA_TOKEN, value: false }, { type: CKA_PRIVATE, value: false }, { type: CKA_SENSITIVE, value: true }, { type: CKA_EXTRACTABLE, value: true }],
        );
        const blob = p11.C_WrapKey(anonymous, { mechanism: CKM_AES_KEY_WRAP_PAD }, publicKek, pair.privateKey, Buffer.alloc(4096));
        const readable = p11.C_UnwrapKey(anonymous, { mechanism: CKM_AES_KEY_WRAP_PAD }, publicKek, blob, [
          { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
          { type: CKA_KEY_TYPE, value: CKK_EC },
          { type: CKA_TOKEN, value: false },
          { type: CKA_PRIVATE, value: false },
          { type: CKA_SENSITIVE, value: false },
          { type: CKA_EXTRACTABLE, value: true },
        ]);
        expect(p11.C_GetAttributeValue(anonymous, readable, [{ type: 0x11 }])[0]!.value.length).toBe(32);
      } finally {
        p11.C_CloseSession(anonymous);
      }
    } finally {
      p11.C_Finalize();
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

  it('refuses to replicate Ed25519 with the backend typed error (SoftHSM 2.6.1: CKR_KEY_NOT_WRAPPABLE) and leaves no key behind', async () => {
    const replicator = new Pkcs11Replicator(SOFTHSM_LIB!);
    const error = await replicator.generateReplicated(tokens.map((t) => ({ tokenLabel: t.label, pin: t.pin })), 'group-ed', 'Ed25519').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HsmError);
    expect((error as HsmError).code).toBe('KeyUsageNotAllowed');
    expect((error as HsmError).details.reason).toBe('token-cannot-wrap-key-type');
    expect((error as HsmError).message).toMatch(/CKR_KEY_NOT_WRAPPABLE/);
    for (const pin of tokens.map((t) => t.pin)) expect((error as HsmError).message).not.toContain(pin);

    // the generated source key was destroyed: no member holds a half-replicated key
    const source = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB!, tokenLabel: 'rep-a' }, { pin: tokens[0]!.pin });
    await source.initialize();
    try {
      await expect(source.getKey('group-ed')).rejects.toMatchObject({ code: 'KeyNotFound' });
    } finally {
      await source.close();
    }
  });
});
