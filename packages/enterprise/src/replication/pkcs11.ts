/**
 * Replication of a key across PKCS#11 tokens that have no clustering of their own, by wrap/unwrap
 * under a group key-encryption key (KEK).
 *
 * The private key is generated CKA_EXTRACTABLE with CKA_WRAP_WITH_TRUSTED: the token lets it leave
 * only wrapped under a key marked CKA_TRUSTED, and only the security officer can mark a key
 * trusted. Each member holds the same KEK, CKA_TRUSTED, non-extractable; the wrapped blob exists
 * only in this process's memory between C_WrapKey on the source and C_UnwrapKey on the others.
 *
 * This talks to the module through pkcs11js directly (not through @olocus/hsm-backend-pkcs11,
 * which keeps keys non-extractable and has no wrap API); the objects it makes follow that
 * backend's naming (CKA_ID = UTF-8 of the key id, CKA_LABEL = the id), so the backend finds them.
 */
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { HsmError, algorithmInfo, assertValidKeyId, type KeyAlgorithm } from '@olocus/hsm-core';
import type { Attribute, PKCS11 } from 'pkcs11js';

const CKA_CLASS = 0x0;
const CKA_TOKEN = 0x1;
const CKA_PRIVATE = 0x2;
const CKA_LABEL = 0x3;
const CKA_VALUE = 0x11;
const CKA_TRUSTED = 0x86;
const CKA_KEY_TYPE = 0x100;
const CKA_ID = 0x102;
const CKA_SENSITIVE = 0x103;
const CKA_ENCRYPT = 0x104;
const CKA_DECRYPT = 0x105;
const CKA_WRAP = 0x106;
const CKA_UNWRAP = 0x107;
const CKA_SIGN = 0x108;
const CKA_SIGN_RECOVER = 0x109;
const CKA_VERIFY = 0x10a;
const CKA_VERIFY_RECOVER = 0x10b;
const CKA_DERIVE = 0x10c;
const CKA_MODULUS = 0x120;
const CKA_MODULUS_BITS = 0x121;
const CKA_PUBLIC_EXPONENT = 0x122;
const CKA_EXTRACTABLE = 0x162;
const CKA_MODIFIABLE = 0x170;
const CKA_EC_PARAMS = 0x180;
const CKA_EC_POINT = 0x181;
const CKA_WRAP_WITH_TRUSTED = 0x210;
const CKA_ALLOWED_MECHANISMS = 0x40000600;
const CKO_PUBLIC_KEY = 2;
const CKO_PRIVATE_KEY = 3;
const CKO_SECRET_KEY = 4;
const CKK_RSA = 0;
const CKK_EC = 3;
const CKK_AES = 0x1f;
const CKK_EC_EDWARDS = 0x40;
const CKM_RSA_PKCS_KEY_PAIR_GEN = 0x0;
const CKM_EC_KEY_PAIR_GEN = 0x1040;
const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
const CKM_RSA_PKCS_PSS = 0x0d;
const CKM_SHA256_RSA_PKCS_PSS = 0x43;
const CKM_AES_KEY_WRAP_PAD = 0x210a;
const CKF_OS_LOCKING_OK = 0x2;
const CKF_RW_SESSION = 0x2;
const CKF_SERIAL_SESSION = 0x4;
const CKU_SO = 0;
const CKU_USER = 1;
const CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191;
const CKR_USER_ALREADY_LOGGED_IN = 0x100;

const EC_PARAMS: Record<string, string> = {
  'P-256': '06082a8648ce3d030107',
  'P-384': '06052b81040022',
  'P-521': '06052b81040023',
};
const ED25519_PARAMS_OID = '06032b6570';

export const DEFAULT_GROUP_KEK_LABEL = 'olocus-group-kek';

export interface ReplicaToken {
  /** Token label as C_GetTokenInfo reports it. */
  tokenLabel: string;
  /** User PIN (never logged, never in an error). */
  pin: string;
}

export interface KekToken {
  tokenLabel: string;
  /** Security officer PIN: only the SO may mark a key CKA_TRUSTED. */
  soPin: string;
}

export interface ReplicationResult {
  keyId: string;
  algorithm: KeyAlgorithm;
  /** Token labels the key now lives on, source first. */
  tokens: string[];
}

function ulongArray(values: number[]): Buffer {
  const out = Buffer.alloc(values.length * 8);
  for (const [i, v] of values.entries()) out.writeBigUInt64LE(BigInt(v), i * 8);
  return out;
}

function rvOf(error: unknown): number | undefined {
  const code = (error as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
}

function replicationError(what: string, tokenLabel: string, error: unknown): HsmError {
  const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
  return new HsmError('KeyGenerationFailed', `replication: ${what} on token '${tokenLabel}' failed (${message})`, { cause: error, details: { tokenLabel } });
}

/**
 * Replicates keys among the tokens of one PKCS#11 module (one library path), as a test setup or
 * a deployment without vendor clustering would.
 */
export class Pkcs11Replicator {
  private p11: PKCS11 | undefined;
  private initializedHere = false;

  constructor(
    readonly libraryPath: string,
    readonly kekLabel: string = DEFAULT_GROUP_KEK_LABEL,
  ) {}

  private module(): PKCS11 {
    if (this.p11) return this.p11;
    let binding: typeof import('pkcs11js');
    try {
      binding = createRequire(import.meta.url)('pkcs11js') as typeof import('pkcs11js');
    } catch (cause) {
      throw new HsmError('InitializationFailed', 'replication needs the native module pkcs11js; install it (pnpm add pkcs11js@2.1.7, native builds need npm_config_nodedir)', { cause });
    }
    const p11 = new binding.PKCS11();
    p11.load(this.libraryPath);
    try {
      p11.C_Initialize({ flags: CKF_OS_LOCKING_OK });
      this.initializedHere = true;
    } catch (error) {
      if (rvOf(error) !== CKR_CRYPTOKI_ALREADY_INITIALIZED) throw replicationError('C_Initialize', '(module)', error);
    }
    this.p11 = p11;
    return p11;
  }

  /** Finalizes the module when this replicator initialized it. */
  close(): void {
    if (this.p11 && this.initializedHere) this.p11.C_Finalize();
    this.p11 = undefined;
    this.initializedHere = false;
  }

  private withSession<R>(tokenLabel: string, userType: number, pin: string, fn: (p11: PKCS11, session: Buffer) => R): R {
    const p11 = this.module();
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === tokenLabel);
    if (!slot) throw new HsmError('TokenNotPresent', `replication: no token labelled '${tokenLabel}' in ${this.libraryPath}`, { details: { tokenLabel } });
    const session = p11.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    try {
      try {
        p11.C_Login(session, userType, pin);
      } catch (error) {
        if (rvOf(error) !== CKR_USER_ALREADY_LOGGED_IN) {
          throw new HsmError('LoginFailed', `replication: login as ${userType === CKU_SO ? 'security officer' : 'user'} on token '${tokenLabel}' failed`, { details: { tokenLabel } });
        }
      }
      return fn(p11, session);
    } finally {
      try {
        p11.C_Logout(session);
      } catch {
        // already logged out with the last session
      }
      p11.C_CloseSession(session);
    }
  }

  private findOne(p11: PKCS11, session: Buffer, template: Attribute[]): Buffer | undefined {
    p11.C_FindObjectsInit(session, template);
    try {
      return p11.C_FindObjects(session, 1)[0];
    } finally {
      p11.C_FindObjectsFinal(session);
    }
  }

  /**
   * Puts the same AES-256 group KEK, CKA_TRUSTED and never extractable, on every token. The key
   * value is drawn here, imported, and wiped: the one moment it exists outside a token is this
   * ceremony (vendors do the same by cloning, see the README). A token that already holds a KEK
   * under the label is left alone.
   */
  provisionGroupKek(tokens: readonly KekToken[]): void {
    const value = randomBytes(32);
    try {
      for (const token of tokens) {
        this.withSession(token.tokenLabel, CKU_SO, token.soPin, (p11, session) => {
          if (this.findOne(p11, session, [{ type: CKA_CLASS, value: CKO_SECRET_KEY }, { type: CKA_LABEL, value: this.kekLabel }])) return;
          try {
            p11.C_CreateObject(session, [
              { type: CKA_CLASS, value: CKO_SECRET_KEY },
              { type: CKA_KEY_TYPE, value: CKK_AES },
              { type: CKA_TOKEN, value: true },
              // the SO can only create public objects; CKA_SENSITIVE keeps the value unreadable
              { type: CKA_PRIVATE, value: false },
              { type: CKA_LABEL, value: this.kekLabel },
              { type: CKA_ID, value: Buffer.from(this.kekLabel) },
              { type: CKA_VALUE, value },
              { type: CKA_TRUSTED, value: true },
              { type: CKA_SENSITIVE, value: true },
              { type: CKA_EXTRACTABLE, value: false },
              { type: CKA_WRAP, value: true },
              { type: CKA_UNWRAP, value: true },
              { type: CKA_ENCRYPT, value: false },
              { type: CKA_DECRYPT, value: false },
              { type: CKA_MODIFIABLE, value: false },
            ]);
          } catch (error) {
            throw replicationError('creating the group KEK', token.tokenLabel, error);
          }
        });
      }
    } finally {
      value.fill(0);
    }
  }

  /**
   * Generates `keyId` on the first token (extractable only under a trusted key) and copies it to
   * the others by C_WrapKey / C_UnwrapKey under the group KEK. The public key is copied as is.
   */
  generateReplicated(tokens: readonly ReplicaToken[], keyId: string, algorithm: KeyAlgorithm, usages: readonly ('sign' | 'verify')[] = ['sign', 'verify']): ReplicationResult {
    assertValidKeyId(keyId, 'keyId');
    if (tokens.length === 0) throw new HsmError('InvalidArgument', 'replication needs at least one token', { details: { field: 'tokens' } });
    const info = algorithmInfo(algorithm);
    const keyType = info.family === 'RSA' ? CKK_RSA : info.family === 'ECDSA' ? CKK_EC : CKK_EC_EDWARDS;
    const ckaId = Buffer.from(keyId, 'utf8');
    const common: Attribute[] = [
      { type: CKA_TOKEN, value: true },
      { type: CKA_ID, value: ckaId },
      { type: CKA_LABEL, value: keyId },
      { type: CKA_MODIFIABLE, value: false },
    ];
    const publicBase: Attribute[] = [
      { type: CKA_CLASS, value: CKO_PUBLIC_KEY },
      { type: CKA_KEY_TYPE, value: keyType },
      ...common,
      { type: CKA_PRIVATE, value: false },
      { type: CKA_VERIFY, value: usages.includes('verify') },
      { type: CKA_ENCRYPT, value: false },
      { type: CKA_WRAP, value: false },
      { type: CKA_VERIFY_RECOVER, value: false },
    ];
    const privateTemplate: Attribute[] = [
      { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
      { type: CKA_KEY_TYPE, value: keyType },
      ...common,
      { type: CKA_PRIVATE, value: true },
      { type: CKA_SENSITIVE, value: true },
      // may leave the token, but only wrapped under a CKA_TRUSTED key
      { type: CKA_EXTRACTABLE, value: true },
      { type: CKA_WRAP_WITH_TRUSTED, value: true },
      { type: CKA_SIGN, value: usages.includes('sign') },
      { type: CKA_DECRYPT, value: false },
      { type: CKA_UNWRAP, value: false },
      { type: CKA_DERIVE, value: false },
      { type: CKA_SIGN_RECOVER, value: false },
    ];
    if (info.family === 'RSA' && info.padding === 'PSS') privateTemplate.push({ type: CKA_ALLOWED_MECHANISMS, value: ulongArray([CKM_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS_PSS]) });

    const [source, ...replicas] = tokens as [ReplicaToken, ...ReplicaToken[]];
    let wrapped: Buffer | undefined;
    let publicAttributes: Attribute[] = [];
    try {
      this.withSession(source.tokenLabel, CKU_USER, source.pin, (p11, session) => {
        const kek = this.kek(p11, session, source.tokenLabel);
        const publicTemplate = [...publicBase];
        let mechanism: number;
        if (info.family === 'RSA') {
          mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
          publicTemplate.push({ type: CKA_MODULUS_BITS, value: info.modulusBits! }, { type: CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) });
        } else if (info.family === 'ECDSA') {
          mechanism = CKM_EC_KEY_PAIR_GEN;
          publicTemplate.push({ type: CKA_EC_PARAMS, value: Buffer.from(EC_PARAMS[info.curve!]!, 'hex') });
        } else {
          mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
          publicTemplate.push({ type: CKA_EC_PARAMS, value: Buffer.from(ED25519_PARAMS_OID, 'hex') });
        }
        let pair: { publicKey: Buffer; privateKey: Buffer };
        try {
          pair = p11.C_GenerateKeyPair(session, { mechanism }, publicTemplate, privateTemplate);
        } catch (error) {
          throw replicationError(`generating ${keyId}`, source.tokenLabel, error);
        }
        const wanted = info.family === 'RSA' ? [{ type: CKA_MODULUS }, { type: CKA_PUBLIC_EXPONENT }] : [{ type: CKA_EC_PARAMS }, { type: CKA_EC_POINT }];
        publicAttributes = p11.C_GetAttributeValue(session, pair.publicKey, wanted).map((a) => ({ type: a.type, value: a.value as Buffer }));
        try {
          wrapped = p11.C_WrapKey(session, { mechanism: CKM_AES_KEY_WRAP_PAD }, kek, pair.privateKey, Buffer.alloc(8192));
        } catch (error) {
          throw replicationError(`wrapping ${keyId} under the group KEK`, source.tokenLabel, error);
        }
      });
      for (const replica of replicas) {
        this.withSession(replica.tokenLabel, CKU_USER, replica.pin, (p11, session) => {
          const kek = this.kek(p11, session, replica.tokenLabel);
          try {
            // SoftHSM refuses CKA_MODIFIABLE in an unwrap template (CKR_ATTRIBUTE_READ_ONLY); a copy
            // may turn it off, so the replica ends up as unmodifiable as the source
            const unwrapped = p11.C_UnwrapKey(session, { mechanism: CKM_AES_KEY_WRAP_PAD }, kek, wrapped!, privateTemplate.filter((a) => a.type !== CKA_MODIFIABLE));
            p11.C_CopyObject(session, unwrapped, [{ type: CKA_MODIFIABLE, value: false }]);
            p11.C_DestroyObject(session, unwrapped);
            p11.C_CreateObject(session, [...publicBase, ...publicAttributes]);
          } catch (error) {
            throw replicationError(`unwrapping ${keyId}`, replica.tokenLabel, error);
          }
        });
      }
    } finally {
      wrapped?.fill(0);
    }
    return { keyId, algorithm, tokens: tokens.map((t) => t.tokenLabel) };
  }

  private kek(p11: PKCS11, session: Buffer, tokenLabel: string): Buffer {
    const kek = this.findOne(p11, session, [
      { type: CKA_CLASS, value: CKO_SECRET_KEY },
      { type: CKA_LABEL, value: this.kekLabel },
      { type: CKA_TRUSTED, value: true },
    ]);
    if (!kek) {
      throw new HsmError('KeyNotFound', `replication: token '${tokenLabel}' has no trusted group KEK labelled '${this.kekLabel}'; provision it with provisionGroupKek (needs the SO PIN)`, {
        details: { tokenLabel },
      });
    }
    return kek;
  }
}
