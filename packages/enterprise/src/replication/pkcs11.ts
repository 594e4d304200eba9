/**
 * Replication of a key across PKCS#11 tokens that have no clustering of their own, built on
 * @olocus/hsm-backend-pkcs11's public backup API: the group key-encryption key (KEK) is the
 * backend's backup KEK (`createBackupKek` / `enrollBackupKek`), and a key is copied by
 * `backend.backup.exportKey` (C_WrapKey, CKM_AES_KEY_WRAP_PAD) on the source and
 * `backend.backup.importKey` (C_UnwrapKey, then a sign proof) on every other member.
 *
 * The previous version drove pkcs11js itself and made the KEK a public AES key that could both wrap
 * and unwrap: a session opened without any PIN could unwrap a stolen blob with it. The backend's
 * ceremony keeps the trusted (public) half wrap-only and unwraps with a private half that needs
 * the user's login; reusing it means one implementation of the templates and of that rule.
 *
 * backend-pkcs11 is an optional peer, loaded only when a replicator method runs, so the rest of
 * this package works without the native module.
 */
import { HsmError, assertValidKeyId, type KeyAlgorithm, type KeyUsage } from '@olocus/hsm-core';
import type * as BackendPkcs11 from '@olocus/hsm-backend-pkcs11';

/**
 * The group KEK's label. It is backend-pkcs11's default `backupKekLabel` (DEFAULT_BACKUP_KEK_LABEL),
 * so a member's backend with default options exports and imports under the group KEK. Tokens
 * provisioned by the pkcs11js replicator (before this version) hold an unsafe KEK labelled
 * `olocus-group-kek`: it is no longer used, and its SO should destroy it (see the README).
 */
export const DEFAULT_GROUP_KEK_LABEL = 'olocus-backup-kek';

export interface ReplicaToken {
  /** Token label as C_GetTokenInfo reports it. */
  tokenLabel: string;
  /** User PIN (never logged, never in an error). */
  pin: string;
}

export interface KekToken {
  tokenLabel: string;
  /** Security officer PIN: only the SO may make a key CKA_TRUSTED (the half that wraps). */
  soPin: string;
  /**
   * User PIN. The SO can only make public objects, and a public key that may unwrap is usable by a
   * session with no login at all, so a member gets a second, private (CKA_PRIVATE) unwrap-only half
   * of the KEK, which only its user can create and use. Not used for the first token, which holds
   * the KEK's origin (wrap only).
   */
  pin: string;
}

export interface ReplicationResult {
  keyId: string;
  algorithm: KeyAlgorithm;
  /** Token labels the key now lives on, source first. */
  tokens: string[];
}

type BackendModule = typeof BackendPkcs11;

async function loadBackend(): Promise<BackendModule> {
  try {
    return await import('@olocus/hsm-backend-pkcs11');
  } catch (cause) {
    throw new HsmError('InitializationFailed', 'replication needs @olocus/hsm-backend-pkcs11 (and its native module pkcs11js); install it', { cause });
  }
}

/**
 * Replicates keys among the tokens of one PKCS#11 module (one library path), as a test setup or
 * a deployment without vendor clustering would.
 *
 * PKCS#11 login state is per process and application: the SO ceremony (`provisionGroupKek`) cannot
 * log in on a token where a backend of this process is logged in as user. Provision first, then
 * open backends; `generateReplicated` opens and closes its own backends.
 */
export class Pkcs11Replicator {
  /** `kekLabel`: the group KEK's label; member backends must use it as `backupKekLabel` to export or import under it. */
  constructor(
    readonly libraryPath: string,
    readonly kekLabel: string = DEFAULT_GROUP_KEK_LABEL,
  ) {}

  /** Nothing to release: every method opens and closes what it uses. Kept for callers of the earlier API. */
  close(): void {}

  /**
   * Puts one AES-256 group KEK on every token: generated on the first token by its SO
   * (`createBackupKek`: never in clear outside a token), then moved to each other token by
   * `enrollBackupKek` through an RSA-3072 OAEP transport. Each other token gets the trusted half
   * (wrap only, so it can be a source) and, with its user PIN, the private unwrap-only half (so it
   * can receive replicas). The first token gets the trusted half only: it can be a source, not a
   * replica. A token that already holds a secret key under the label is refused (KeyAlreadyExists):
   * a KEK is never replaced; add a member later with `enrollBackupKek` from any member.
   */
  async provisionGroupKek(tokens: readonly KekToken[]): Promise<void> {
    if (tokens.length === 0) throw new HsmError('InvalidArgument', 'provisionGroupKek needs at least one token', { details: { field: 'tokens' } });
    const { createBackupKek, enrollBackupKek } = await loadBackend();
    const [origin, ...members] = tokens as [KekToken, ...KekToken[]];
    await createBackupKek({ libraryPath: this.libraryPath, tokenLabel: origin.tokenLabel, soPin: origin.soPin, label: this.kekLabel });
    for (const member of members) {
      await enrollBackupKek({
        libraryPath: this.libraryPath,
        from: { tokenLabel: origin.tokenLabel, soPin: origin.soPin },
        to: { tokenLabel: member.tokenLabel, soPin: member.soPin, userPin: member.pin },
        label: this.kekLabel,
      });
    }
  }

  /**
   * Generates `keyId` on the first token with `backup: true` (extractable only wrapped under a
   * trusted key), exports it under the group KEK and imports it on the others (each import proves
   * the pair by a signature). Objects are the backend's own (CKA_ID = UTF-8 of the id, CKA_LABEL =
   * the id), so each member's backend finds the key. On any failure the copies made so far and the
   * generated key are destroyed (the key was never used), and the error is the backend's: e.g.
   * KeyUsageNotAllowed with `details.reason: 'token-cannot-wrap-key-type'` for Ed25519 on SoftHSM
   * 2.6.1 (C_WrapKey answers CKR_KEY_NOT_WRAPPABLE).
   */
  async generateReplicated(tokens: readonly ReplicaToken[], keyId: string, algorithm: KeyAlgorithm, usages: readonly ('sign' | 'verify')[] = ['sign', 'verify']): Promise<ReplicationResult> {
    assertValidKeyId(keyId, 'keyId');
    if (tokens.length === 0) throw new HsmError('InvalidArgument', 'replication needs at least one token', { details: { field: 'tokens' } });
    const { Pkcs11Backend } = await loadBackend();
    const backends = tokens.map((t) => new Pkcs11Backend({ libraryPath: this.libraryPath, tokenLabel: t.tokenLabel, backupKekLabel: this.kekLabel }, { pin: t.pin }));
    const holders: BackendPkcs11.Pkcs11Backend[] = [];
    try {
      for (const backend of backends) await backend.initialize();
      const [source, ...replicas] = backends as [BackendPkcs11.Pkcs11Backend, ...BackendPkcs11.Pkcs11Backend[]];
      try {
        await source.generateKeyPair({ id: keyId, algorithm, usages: [...usages] as KeyUsage[], backup: true });
        holders.push(source);
        if (replicas.length > 0) {
          const exported = await source.backup.exportKey(keyId);
          try {
            for (const replica of replicas) {
              await replica.backup.importKey(exported);
              holders.push(replica);
            }
          } finally {
            exported.blob?.fill(0);
          }
        }
      } catch (error) {
        // a half-replicated key would sign on some members only; it was never used, so it goes
        for (const holder of holders.reverse()) await holder.destroyKey(keyId).catch(() => undefined);
        throw error;
      }
    } finally {
      for (const backend of backends) await backend.close().catch(() => undefined);
    }
    return { keyId, algorithm, tokens: tokens.map((t) => t.tokenLabel) };
  }
}
