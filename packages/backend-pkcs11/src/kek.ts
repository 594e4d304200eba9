/**
 * The backup key-encryption key (KEK): how backend and ceremony find it, and how two tokens can
 * tell whether they hold the same one without either revealing it.
 */
import { createHash } from 'node:crypto';
import { HsmError } from '@olocus/hsm-core';
import type { Attribute } from 'pkcs11js';
import {
  CKA_CLASS,
  CKA_EXTRACTABLE,
  CKA_KEY_TYPE,
  CKA_LABEL,
  CKA_PRIVATE,
  CKA_SENSITIVE,
  CKA_TOKEN,
  CKA_TRUSTED,
  CKA_VALUE,
  CKK_AES,
  CKM_AES_KEY_WRAP_PAD,
  CKO_SECRET_KEY,
} from './constants.js';

export const DEFAULT_BACKUP_KEK_LABEL = 'olocus-backup-kek';
/** The one wrapping mechanism the library uses for backups (RFC 5649, deterministic, authenticated). */
export const BACKUP_WRAP_MECHANISM = 'CKM_AES_KEY_WRAP_PAD';

/** The few calls both the (async) backend and the (synchronous) ceremony make; either adapts to it. */
export interface KekCalls {
  find(template: Attribute[], max: number): Promise<Buffer[]>;
  create(template: Attribute[]): Promise<Buffer>;
  destroy(object: Buffer): Promise<void>;
  wrap(mechanism: { mechanism: number }, wrappingKey: Buffer, key: Buffer, capacity: number): Promise<Buffer>;
}

export function kekTemplate(label: string): Attribute[] {
  return [
    { type: CKA_CLASS, value: CKO_SECRET_KEY },
    { type: CKA_LABEL, value: label },
    { type: CKA_TRUSTED, value: true },
  ];
}

/** How to provision a KEK, for the error a token without one gets. */
export function kekMissingError(label: string, tokenLabel: string): HsmError {
  return new HsmError(
    'KeyNotFound',
    `token '${tokenLabel}' holds no CKA_TRUSTED secret key labelled '${label}' (the backup KEK); the security officer makes it on the backup token with createBackupKek and copies it onto this token with enrollBackupKek (see the backend-pkcs11 README, "Backup")`,
    { details: { kekLabel: label, tokenLabel } },
  );
}

/** The trusted KEK labelled `label`; KeyNotFound (naming an untrusted namesake if there is one) when absent. */
export async function findKek(calls: KekCalls, label: string, tokenLabel: string): Promise<Buffer> {
  const found = await calls.find(kekTemplate(label), 2);
  if (found.length > 1) throw new HsmError('Conflict', `token '${tokenLabel}' holds more than one trusted secret key labelled '${label}'; remove the extra ones (SO)`, { details: { kekLabel: label, tokenLabel } });
  if (found[0]) return found[0];
  const untrusted = await calls.find([{ type: CKA_CLASS, value: CKO_SECRET_KEY }, { type: CKA_LABEL, value: label }], 1);
  if (untrusted.length > 0) {
    throw new HsmError('KeyNotFound', `token '${tokenLabel}' holds a secret key labelled '${label}', but it is not CKA_TRUSTED: keys created for backup can only be wrapped under a trusted key, which only the security officer can make (createBackupKek / enrollBackupKek)`, {
      details: { kekLabel: label, tokenLabel },
    });
  }
  throw kekMissingError(label, tokenLabel);
}

/**
 * A check value that names the KEK without revealing it: SHA-256 (first 16 hex digits) of a fixed,
 * public AES key (all zeros) wrapped under the KEK with CKM_AES_KEY_WRAP_PAD. The wrap is
 * deterministic, so two tokens agree exactly when they hold the same KEK; it is the usual key check
 * value (a known plaintext enciphered under the key), and the KEK never encrypts anything else
 * (CKA_ENCRYPT is false). The zero key is a session object, destroyed at once.
 */
export async function kekCheckValue(calls: KekCalls, kek: Buffer): Promise<string> {
  const probe = await calls.create([
    { type: CKA_CLASS, value: CKO_SECRET_KEY },
    { type: CKA_KEY_TYPE, value: CKK_AES },
    { type: CKA_TOKEN, value: false },
    { type: CKA_PRIVATE, value: false },
    { type: CKA_SENSITIVE, value: false },
    { type: CKA_EXTRACTABLE, value: true },
    { type: CKA_LABEL, value: 'olocus-kek-check' },
    { type: CKA_VALUE, value: Buffer.alloc(32) },
  ]);
  try {
    const wrapped = await calls.wrap({ mechanism: CKM_AES_KEY_WRAP_PAD }, kek, probe, 64);
    return createHash('sha256').update(wrapped).digest('hex').slice(0, 16);
  } finally {
    await calls.destroy(probe).catch(() => undefined);
  }
}
