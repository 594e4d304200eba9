/**
 * The backup KEK ceremony, run by the security officer (SO):
 * - createBackupKek: an AES-256 KEK generated *on* the backup token (C_GenerateKey), CKA_TRUSTED,
 *   sensitive, usable only to wrap and unwrap, extractable only under another trusted key;
 * - enrollBackupKek: the same KEK moved onto another token (a production token, or a fresh token
 *   after the loss of one) without ever being in clear outside a token: the target makes an RSA-3072
 *   transport key pair, the source's SO imports its public half as CKA_TRUSTED, wraps the KEK with
 *   CKM_RSA_PKCS_OAEP, and the target unwraps it in its SO session. The transport objects are
 *   session objects (never written to the token's storage) and are destroyed at the end.
 *
 * SO PINs are values read by the caller (environment, file); they never appear in errors. The
 * module is called synchronously on this thread: this is an administrator's ceremony, not a
 * request path. A backend of this process logged in on a token as user blocks the SO login there
 * (PKCS#11 login state is per application): close it first.
 */
import { HsmError } from '@olocus/hsm-core';
import type { Attribute, PKCS11 } from 'pkcs11js';
import { returnValueName, returnValueOf } from './classify.js';
import {
  CKA_CLASS,
  CKA_DECRYPT,
  CKA_DERIVE,
  CKA_ENCRYPT,
  CKA_EXTRACTABLE,
  CKA_ID,
  CKA_KEY_TYPE,
  CKA_LABEL,
  CKA_MODIFIABLE,
  CKA_MODULUS,
  CKA_MODULUS_BITS,
  CKA_PRIVATE,
  CKA_PUBLIC_EXPONENT,
  CKA_SENSITIVE,
  CKA_SIGN,
  CKA_SIGN_RECOVER,
  CKA_TOKEN,
  CKA_TRUSTED,
  CKA_UNWRAP,
  CKA_VALUE,
  CKA_VALUE_LEN,
  CKA_VERIFY,
  CKA_VERIFY_RECOVER,
  CKA_WRAP,
  CKA_WRAP_WITH_TRUSTED,
  CKF_RW_SESSION,
  CKF_SERIAL_SESSION,
  CKG_MGF1_SHA1,
  CKG_MGF1_SHA256,
  CKK_AES,
  CKK_RSA,
  CKM_AES_KEY_GEN,
  CKM_AES_KEY_WRAP_PAD,
  CKM_RSA_PKCS_KEY_PAIR_GEN,
  CKM_RSA_PKCS_OAEP,
  CKM_SHA256,
  CKM_SHA_1,
  CKO_PRIVATE_KEY,
  CKO_PUBLIC_KEY,
  CKO_SECRET_KEY,
  CKR,
  CKU_SO,
  CKU_USER,
  CKZ_DATA_SPECIFIED,
  CK_PARAMS_RSA_OAEP,
} from './constants.js';
import { DEFAULT_BACKUP_KEK_LABEL, findKek, kekCheckValue, type KekCalls } from './kek.js';
import { acquireModule, releaseModule } from './module.js';
import { trimLabel } from './token.js';
import { findSync } from './module-thread.js';

/** A token and its security officer's PIN (read by the caller from the environment or a file). */
export interface SoToken {
  tokenLabel: string;
  soPin: string;
  /**
   * The token's user PIN, for `enrollBackupKek`'s target: with it the target also gets the KEK's
   * private, unwrap-only half, and its public trusted half cannot unwrap. Required unless `unwrap`
   * is false: a public half that may unwrap would let any session, without a PIN, use it.
   */
  userPin?: string;
  /**
   * For `enrollBackupKek`'s target: false gives it no key that may unwrap at all (a token that only
   * exports, the safest production setup: nobody, not even with its user PIN, can turn a blob back
   * into a key there); enrol again with `userPin` on the token that restores. Default true.
   */
  unwrap?: boolean;
  /** The token's PKCS#11 module, when it is not the ceremony's `libraryPath`. */
  libraryPath?: string;
}

export interface CreateBackupKekOptions {
  libraryPath: string;
  tokenLabel: string;
  soPin: string;
  /** CKA_LABEL (and CKA_ID) of the KEK; default `olocus-backup-kek`. */
  label?: string;
}

export interface BackupKekResult {
  label: string;
  tokenLabel: string;
  tokenSerial: string;
  /** Names the KEK without revealing it (see kekCheckValue): equal on every token holding the same KEK. */
  checkValue: string;
}

export interface EnrollBackupKekOptions {
  libraryPath: string;
  /** The token that holds the KEK (the backup token). */
  from: SoToken;
  /** The token that receives it. */
  to: SoToken;
  label?: string;
}

export interface EnrollBackupKekResult extends BackupKekResult {
  from: string;
  /**
   * `private-half`: the target got the KEK's private unwrap-only half (user PIN given, checked to be
   * the same key); `none`: nothing on the target may unwrap (`to.unwrap: false`).
   */
  unwrapWith: 'private-half' | 'none';
  /** How the KEK travelled. */
  transport: {
    mechanism: 'CKM_RSA_PKCS_OAEP';
    /** OAEP hash and MGF1 hash: SHA-256 where the source token accepts it, else SHA-1. */
    hash: 'SHA-256' | 'SHA-1';
    modulusBits: 3072;
    /** Why SHA-256 was not used, when it was not (the token's answer). */
    sha256Refused?: string;
  };
}

const TRANSPORT_BITS = 3072;

function ceremonyError(step: string, tokenLabel: string, error: unknown): HsmError {
  const rv = returnValueOf(error);
  const name = rv === undefined ? (error as Error)?.message?.split('\n')[0] : returnValueName(rv);
  return new HsmError('KeyGenerationFailed', `backup KEK ceremony: ${step} on token '${tokenLabel}' failed (${name})`, { cause: error, details: { tokenLabel, step, rv: rv === undefined ? undefined : returnValueName(rv) } });
}

function step<R>(what: string, tokenLabel: string, fn: () => R): R {
  try {
    return fn();
  } catch (error) {
    if (error instanceof HsmError) throw error;
    throw ceremonyError(what, tokenLabel, error);
  }
}

/**
 * The KEK's trusted half (what C_WrapKey of a backup uses), which never unwraps: the SO can only
 * make public objects, and a public key that may unwrap lets
 * anyone who opens a session on the token, without any PIN, unwrap a stolen blob into a
 * non-sensitive session object and read the private key (shown on SoftHSM 2.6.1). Unwrapping is the
 * job of the private half (privateUnwrapAttributes), which only a logged-in user can use.
 */
function kekAttributes(label: string): Attribute[] {
  return [
    { type: CKA_CLASS, value: CKO_SECRET_KEY },
    { type: CKA_KEY_TYPE, value: CKK_AES },
    { type: CKA_TOKEN, value: true },
    // the SO can only make public objects; CKA_SENSITIVE keeps the value unreadable all the same
    { type: CKA_PRIVATE, value: false },
    { type: CKA_LABEL, value: label },
    { type: CKA_ID, value: Buffer.from(label, 'utf8') },
    { type: CKA_TRUSTED, value: true },
    { type: CKA_SENSITIVE, value: true },
    // enrolment moves it to another token, and only wrapped under a trusted key
    { type: CKA_EXTRACTABLE, value: true },
    { type: CKA_WRAP_WITH_TRUSTED, value: true },
    { type: CKA_WRAP, value: true },
    { type: CKA_UNWRAP, value: false },
    { type: CKA_ENCRYPT, value: false },
    { type: CKA_DECRYPT, value: false },
    { type: CKA_SIGN, value: false },
    { type: CKA_VERIFY, value: false },
    { type: CKA_DERIVE, value: false },
    { type: CKA_MODIFIABLE, value: false },
  ];
}

/** The KEK's private half: the same key, usable only to unwrap, only by a logged-in user, never extractable. */
function privateUnwrapAttributes(label: string): Attribute[] {
  return [
    { type: CKA_CLASS, value: CKO_SECRET_KEY },
    { type: CKA_KEY_TYPE, value: CKK_AES },
    { type: CKA_TOKEN, value: true },
    { type: CKA_PRIVATE, value: true },
    { type: CKA_LABEL, value: label },
    { type: CKA_ID, value: Buffer.from(label, 'utf8') },
    { type: CKA_SENSITIVE, value: true },
    { type: CKA_EXTRACTABLE, value: false },
    { type: CKA_WRAP, value: false },
    { type: CKA_UNWRAP, value: true },
    { type: CKA_ENCRYPT, value: false },
    { type: CKA_DECRYPT, value: false },
    { type: CKA_SIGN, value: false },
    { type: CKA_VERIFY, value: false },
    { type: CKA_DERIVE, value: false },
    { type: CKA_MODIFIABLE, value: false },
  ];
}

interface SoSession {
  p11: PKCS11;
  session: Buffer;
  slot: Buffer;
  tokenLabel: string;
  serial: string;
  calls: KekCalls;
}

/** Opens a session on `token`, logs the SO in, runs `fn`, logs out and closes (whatever happens). */
async function withSo<R>(p11: PKCS11, token: SoToken, fn: (so: SoSession) => Promise<R>): Promise<R> {
  const slot = step('finding the token', token.tokenLabel, () => p11.C_GetSlotList(true).find((s) => trimLabel(p11.C_GetTokenInfo(s).label) === token.tokenLabel));
  if (!slot) throw new HsmError('TokenNotPresent', `backup KEK ceremony: no token labelled '${token.tokenLabel}'`, { details: { tokenLabel: token.tokenLabel } });
  const serial = trimLabel(p11.C_GetTokenInfo(slot).serialNumber);
  const session = step('C_OpenSession', token.tokenLabel, () => p11.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION));
  try {
    try {
      p11.C_Login(session, CKU_SO, token.soPin);
    } catch (error) {
      const rv = returnValueOf(error);
      const why =
        rv === CKR.USER_ANOTHER_ALREADY_LOGGED_IN
          ? 'a user login of this process is open on it (a backend uses this token): close it before the SO ceremony'
          : rv === CKR.USER_ALREADY_LOGGED_IN
            ? 'this process is already logged in on it, so the SO PIN cannot be checked: end that login first'
            : `the token refused the security officer's PIN (${rv === undefined ? 'error' : returnValueName(rv)})`;
      throw new HsmError('LoginFailed', `backup KEK ceremony: SO login on token '${token.tokenLabel}' failed: ${why}`, {
        details: { tokenLabel: token.tokenLabel, rv: rv === undefined ? undefined : returnValueName(rv) },
      });
    }
    const calls: KekCalls = {
      find: async (template, max) => findSync(p11, session, template, max),
      create: async (template) => p11.C_CreateObject(session, template),
      destroy: async (object) => p11.C_DestroyObject(session, object),
      wrap: async (mechanism, wrapping, key, capacity) => p11.C_WrapKey(session, mechanism, wrapping, key, Buffer.alloc(capacity)),
    };
    return await fn({ p11, session, slot, tokenLabel: token.tokenLabel, serial, calls });
  } finally {
    try {
      p11.C_Logout(session);
    } catch {
      // not logged in (the login failed)
    }
    try {
      p11.C_CloseSession(session);
    } catch {
      // already closed
    }
  }
}

function requireMechanisms(so: SoSession, mechanisms: Record<string, number>): void {
  const listed = new Set(step('C_GetMechanismList', so.tokenLabel, () => so.p11.C_GetMechanismList(so.slot)));
  const missing = Object.entries(mechanisms)
    .filter(([, m]) => !listed.has(m))
    .map(([name]) => name);
  if (missing.length > 0) {
    throw new HsmError('UnsupportedAlgorithm', `backup KEK ceremony: token '${so.tokenLabel}' does not list ${missing.join(', ')} (C_GetMechanismList)`, { details: { tokenLabel: so.tokenLabel, mechanisms: missing.join(',') } });
  }
}

function assertLabelFree(so: SoSession, label: string): void {
  const existing = findSync(so.p11, so.session, [
    { type: CKA_CLASS, value: CKO_SECRET_KEY },
    { type: CKA_LABEL, value: label },
  ], 1);
  if (existing.length > 0) {
    throw new HsmError('KeyAlreadyExists', `token '${so.tokenLabel}' already holds a secret key labelled '${label}'; the ceremony never replaces a KEK (backups wrapped under it would be lost)`, {
      details: { tokenLabel: so.tokenLabel, kekLabel: label },
    });
  }
}

/**
 * Generates the backup KEK on the token (by its SO). Refuses when a secret key already has the
 * label. Returns the KEK's check value, which `enrollBackupKek` and every export repeat.
 */
export async function createBackupKek(options: CreateBackupKekOptions): Promise<BackupKekResult> {
  const label = options.label ?? DEFAULT_BACKUP_KEK_LABEL;
  const mod = acquireModule(options.libraryPath);
  try {
    return await withSo(mod.p11, { tokenLabel: options.tokenLabel, soPin: options.soPin }, async (so) => {
      requireMechanisms(so, { CKM_AES_KEY_GEN, CKM_AES_KEY_WRAP_PAD });
      assertLabelFree(so, label);
      const kek = step('generating the KEK (C_GenerateKey)', so.tokenLabel, () => so.p11.C_GenerateKey(so.session, { mechanism: CKM_AES_KEY_GEN }, [...kekAttributes(label), { type: CKA_VALUE_LEN, value: 32 }]));
      return { label, tokenLabel: so.tokenLabel, tokenSerial: so.serial, checkValue: await kekCheckValue(so.calls, kek) };
    });
  } finally {
    await releaseModule(mod);
  }
}

function oaep(hash: 'SHA-256' | 'SHA-1') {
  return {
    mechanism: CKM_RSA_PKCS_OAEP,
    parameter: { type: CK_PARAMS_RSA_OAEP, hashAlg: hash === 'SHA-256' ? CKM_SHA256 : CKM_SHA_1, mgf: hash === 'SHA-256' ? CKG_MGF1_SHA256 : CKG_MGF1_SHA1, source: CKZ_DATA_SPECIFIED },
  };
}

/** C_UnwrapKey with CKA_MODIFIABLE false, or (a token that refuses it there) unwrap, copy unmodifiable, destroy the first. */
function unwrapUnmodifiable(p11: PKCS11, session: Buffer, mechanism: ReturnType<typeof oaep>, key: Buffer, wrapped: Buffer, template: Attribute[]): Buffer {
  try {
    return p11.C_UnwrapKey(session, mechanism, key, wrapped, template);
  } catch (error) {
    if (returnValueOf(error) !== CKR.ATTRIBUTE_READ_ONLY) throw error;
  }
  const first = p11.C_UnwrapKey(session, mechanism, key, wrapped, template.filter((a) => a.type !== CKA_MODIFIABLE));
  try {
    return p11.C_CopyObject(session, first, [{ type: CKA_MODIFIABLE, value: false }]);
  } finally {
    p11.C_DestroyObject(session, first);
  }
}

/**
 * The KEK's private unwrap-only half on the target, from the same transport blob: the SO logs out
 * (the transport key pair, public session objects of this application, stays usable), the user
 * logs in on a second session and unwraps the blob as a private, non-extractable key. The halves
 * are then shown to be one key: a fixed zero AES key wrapped by the trusted half and unwrapped by the
 * private one comes back as zeros. The target's SO is logged out afterwards (withSo's logout is a no-op).
 */
function addPrivateHalf(target: SoSession, userPin: string, label: string, mechanism: ReturnType<typeof oaep>, transportKey: Buffer, wrapped: Buffer, trusted: Buffer): void {
  const p11 = target.p11;
  const existing = findSync(p11, target.session, [
    { type: CKA_CLASS, value: CKO_SECRET_KEY },
    { type: CKA_LABEL, value: label },
    { type: CKA_PRIVATE, value: true },
  ], 1);
  p11.C_Logout(target.session);
  const user = step('C_OpenSession (user)', target.tokenLabel, () => p11.C_OpenSession(target.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION));
  try {
    try {
      p11.C_Login(user, CKU_USER, userPin);
    } catch (error) {
      const rv = returnValueOf(error);
      throw new HsmError('LoginFailed', `backup KEK ceremony: user login on token '${target.tokenLabel}' failed (${rv === undefined ? 'error' : returnValueName(rv)})`, {
        details: { tokenLabel: target.tokenLabel, rv: rv === undefined ? undefined : returnValueName(rv) },
      });
    }
    try {
      const found = findSync(p11, user, [
        { type: CKA_CLASS, value: CKO_SECRET_KEY },
        { type: CKA_LABEL, value: label },
        { type: CKA_PRIVATE, value: true },
      ], 1);
      if (existing.length > 0 || found.length > 0) {
        throw new HsmError('KeyAlreadyExists', `token '${target.tokenLabel}' already holds a private secret key labelled '${label}'`, { details: { tokenLabel: target.tokenLabel, kekLabel: label } });
      }
      const half = step('unwrapping the private half of the KEK (C_UnwrapKey, user)', target.tokenLabel, () => unwrapUnmodifiable(p11, user, mechanism, transportKey, wrapped, privateUnwrapAttributes(label)));
      const probe = p11.C_CreateObject(user, [
        { type: CKA_CLASS, value: CKO_SECRET_KEY },
        { type: CKA_KEY_TYPE, value: CKK_AES },
        { type: CKA_TOKEN, value: false },
        { type: CKA_SENSITIVE, value: false },
        { type: CKA_EXTRACTABLE, value: true },
        { type: CKA_VALUE, value: Buffer.alloc(32) },
      ]);
      let same = false;
      try {
        const wrappedProbe = p11.C_WrapKey(user, { mechanism: CKM_AES_KEY_WRAP_PAD }, trusted, probe, Buffer.alloc(64));
        const back = p11.C_UnwrapKey(user, { mechanism: CKM_AES_KEY_WRAP_PAD }, half, wrappedProbe, [
          { type: CKA_CLASS, value: CKO_SECRET_KEY },
          { type: CKA_KEY_TYPE, value: CKK_AES },
          { type: CKA_TOKEN, value: false },
          { type: CKA_SENSITIVE, value: false },
          { type: CKA_EXTRACTABLE, value: true },
        ]);
        same = p11.C_GetAttributeValue(user, back, [{ type: CKA_VALUE }])[0]!.value.equals(Buffer.alloc(32));
        p11.C_DestroyObject(user, back);
      } catch {
        same = false;
      } finally {
        p11.C_DestroyObject(user, probe);
      }
      if (!same) {
        p11.C_DestroyObject(user, half);
        throw new HsmError('IntegrityError', `backup KEK ceremony: the private half on '${target.tokenLabel}' is not the same key as the trusted half; it was destroyed`, { details: { tokenLabel: target.tokenLabel } });
      }
    } finally {
      try {
        p11.C_Logout(user);
      } catch {
        // the login failed
      }
    }
  } finally {
    p11.C_CloseSession(user);
  }
}

/**
 * Copies the backup KEK from `from` onto `to` through an RSA-3072 transport key made on `to`, so
 * it is never in clear outside a token. Both SOs log in (in this process, one after the other
 * inside the target's session). Refuses when `to` already holds a secret key under the label.
 * Afterwards both tokens give the same KEK check value, or the copy is destroyed and IntegrityError.
 */
export async function enrollBackupKek(options: EnrollBackupKekOptions): Promise<EnrollBackupKekResult> {
  const label = options.label ?? DEFAULT_BACKUP_KEK_LABEL;
  const fromPath = options.from.libraryPath ?? options.libraryPath;
  const toPath = options.to.libraryPath ?? options.libraryPath;
  if (fromPath === toPath && options.from.tokenLabel === options.to.tokenLabel) {
    throw new HsmError('InvalidArgument', `enrollBackupKek: from and to are the same token ('${options.to.tokenLabel}')`, { details: { field: 'to.tokenLabel' } });
  }
  // a token that may unwrap gets the private half only: a public KEK that may unwrap lets any
  // session, without a PIN, turn a stolen blob into a readable key (shown on SoftHSM 2.6.1)
  if (options.to.unwrap !== false && options.to.userPin === undefined) {
    throw new HsmError('InvalidArgument', `enrollBackupKek: to.userPin is required for '${options.to.tokenLabel}' to restore keys (its user makes the KEK's private unwrap-only half); a token that only exports: to.unwrap false`, {
      details: { field: 'to.userPin' },
    });
  }
  const fromMod = acquireModule(fromPath);
  const toMod = acquireModule(toPath); // the same module object when the paths are: one reference each
  const transportLabel = 'olocus-kek-transport';
  try {
    return await withSo(toMod.p11, options.to, async (target) => {
      const p11t = target.p11;
      requireMechanisms(target, { CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_RSA_PKCS_OAEP, CKM_AES_KEY_WRAP_PAD });
      assertLabelFree(target, label);
      // session objects: they never reach the token's storage and vanish with the session
      const pair = step('generating the RSA-3072 transport key pair', target.tokenLabel, () =>
        p11t.C_GenerateKeyPair(
          target.session,
          { mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN },
          [
            { type: CKA_CLASS, value: CKO_PUBLIC_KEY },
            { type: CKA_KEY_TYPE, value: CKK_RSA },
            { type: CKA_TOKEN, value: false },
            { type: CKA_PRIVATE, value: false },
            { type: CKA_LABEL, value: transportLabel },
            { type: CKA_MODULUS_BITS, value: TRANSPORT_BITS },
            { type: CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
            { type: CKA_WRAP, value: true },
            { type: CKA_ENCRYPT, value: false },
            { type: CKA_VERIFY, value: false },
            { type: CKA_VERIFY_RECOVER, value: false },
          ],
          [
            { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
            { type: CKA_KEY_TYPE, value: CKK_RSA },
            { type: CKA_TOKEN, value: false },
            { type: CKA_PRIVATE, value: false },
            { type: CKA_LABEL, value: transportLabel },
            { type: CKA_SENSITIVE, value: true },
            { type: CKA_EXTRACTABLE, value: false },
            { type: CKA_UNWRAP, value: true },
            { type: CKA_DECRYPT, value: false },
            { type: CKA_SIGN, value: false },
            { type: CKA_SIGN_RECOVER, value: false },
            { type: CKA_DERIVE, value: false },
          ],
        ),
      );
      let wrapped: Buffer | undefined;
      try {
        const [modulus, exponent] = p11t.C_GetAttributeValue(target.session, pair.publicKey, [{ type: CKA_MODULUS }, { type: CKA_PUBLIC_EXPONENT }]);
        let hash: 'SHA-256' | 'SHA-1' = 'SHA-256';
        let sha256Refused: string | undefined;
        const sourceCheck = await withSo(fromMod.p11, options.from, async (source) => {
          const p11s = source.p11;
          requireMechanisms(source, { CKM_RSA_PKCS_OAEP });
          const kek = await findKek(source.calls, label, source.tokenLabel);
          const transport = step('importing the transport public key', source.tokenLabel, () =>
            p11s.C_CreateObject(source.session, [
              { type: CKA_CLASS, value: CKO_PUBLIC_KEY },
              { type: CKA_KEY_TYPE, value: CKK_RSA },
              { type: CKA_TOKEN, value: false },
              { type: CKA_PRIVATE, value: false },
              { type: CKA_LABEL, value: transportLabel },
              { type: CKA_MODULUS, value: modulus!.value },
              { type: CKA_PUBLIC_EXPONENT, value: exponent!.value },
              // the KEK is CKA_WRAP_WITH_TRUSTED: only a trusted key (marked by this SO) may wrap it
              { type: CKA_TRUSTED, value: true },
              { type: CKA_WRAP, value: true },
              { type: CKA_ENCRYPT, value: false },
              { type: CKA_VERIFY, value: false },
            ]),
          );
          try {
            try {
              wrapped = p11s.C_WrapKey(source.session, oaep('SHA-256'), transport, kek, Buffer.alloc(TRANSPORT_BITS / 8));
            } catch (error) {
              const rv = returnValueOf(error);
              // SoftHSM 2.6.1 accepts only SHA-1 / MGF1-SHA1 OAEP parameters (CKR_ARGUMENTS_BAD, measured)
              if (rv !== CKR.ARGUMENTS_BAD && rv !== CKR.MECHANISM_PARAM_INVALID) throw ceremonyError('wrapping the KEK (C_WrapKey, OAEP SHA-256)', source.tokenLabel, error);
              sha256Refused = returnValueName(rv);
              hash = 'SHA-1';
              wrapped = step('wrapping the KEK (C_WrapKey, OAEP SHA-1)', source.tokenLabel, () => p11s.C_WrapKey(source.session, oaep('SHA-1'), transport, kek, Buffer.alloc(TRANSPORT_BITS / 8)));
            }
            return await kekCheckValue(source.calls, kek);
          } finally {
            try {
              p11s.C_DestroyObject(source.session, transport);
            } catch {
              // a session object: it goes with the session anyway
            }
          }
        });
        const wantsUnwrap = options.to.unwrap !== false;
        const userPin = wantsUnwrap ? options.to.userPin : undefined;
        const unwrapWith = wantsUnwrap ? 'private-half' : 'none';
        const kek = step('unwrapping the KEK (C_UnwrapKey)', target.tokenLabel, () => unwrapUnmodifiable(p11t, target.session, oaep(hash), pair.privateKey, wrapped!, kekAttributes(label)));
        const checkValue = await kekCheckValue(target.calls, kek);
        if (checkValue !== sourceCheck) {
          p11t.C_DestroyObject(target.session, kek);
          throw new HsmError('IntegrityError', `backup KEK ceremony: the KEK unwrapped on '${target.tokenLabel}' does not match the one on '${options.from.tokenLabel}' (check values differ); it was destroyed`, {
            details: { tokenLabel: target.tokenLabel },
          });
        }
        if (userPin !== undefined) addPrivateHalf(target, userPin, label, oaep(hash), pair.privateKey, wrapped!, kek);
        const transport: EnrollBackupKekResult['transport'] = { mechanism: 'CKM_RSA_PKCS_OAEP', hash, modulusBits: TRANSPORT_BITS };
        if (sha256Refused !== undefined) transport.sha256Refused = sha256Refused;
        return { label, tokenLabel: target.tokenLabel, tokenSerial: target.serial, checkValue, from: options.from.tokenLabel, unwrapWith, transport };
      } finally {
        wrapped?.fill(0);
        for (const object of [pair.privateKey, pair.publicKey]) {
          try {
            p11t.C_DestroyObject(target.session, object);
          } catch {
            // session objects: they go with the session anyway
          }
        }
      }
    });
  } finally {
    await releaseModule(toMod);
    await releaseModule(fromMod);
  }
}
