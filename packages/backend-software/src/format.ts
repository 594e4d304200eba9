/**
 * The on-disk format of a software key store. Everything an auditor needs to re-derive and
 * check a file by hand is here (and described in README.md).
 *
 *   store.json       header: format, version, KDF parameters and salt (scrypt for a passphrase,
 *                    HKDF-SHA256 for a master key), and a verifier
 *   <id>.key.json    one per key: JSON metadata + the PKCS#8 private key sealed with AES-256-GCM,
 *                    the metadata bound to the ciphertext as additional authenticated data
 */
import { createCipheriv, createDecipheriv, randomBytes, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { KEY_ALGORITHMS, type KeyAlgorithm, type KeyUsage } from '@olocus/hsm-core';
import { SCRYPT_LIMITS } from './options.js';

export const STORE_FILE = 'store.json';
export const STORE_FORMAT = 'olocus-hsm-software-store';
export const KEY_FORMAT = 'olocus-hsm-software-key';
export const FORMAT_VERSION = 1;
/**
 * store.json of a store opened by a master key (HKDF) has version 2, so that a library that knows
 * only passphrase stores says "upgrade" instead of calling the header corrupted. Key files and the
 * AAD prefixes stay at version 1: nothing about them changed.
 */
export const MASTER_KEY_STORE_VERSION = 2;
/** HKDF `info` of the store key derived from a master key: binds the derived key to this use. */
export const MASTER_KEY_HKDF_INFO = 'olocus-hsm software store key v1';
export const KEY_FILE_SUFFIX = '.key.json';
export const CIPHER = 'aes-256-gcm';
export const KEY_BYTES = 32;
export const SALT_BYTES = 32;
export const IV_BYTES = 12;
export const TAG_BYTES = 16;
/** The verifier's plaintext: proves the passphrase before any key file is read. */
export const VERIFIER_PLAINTEXT = 'olocus-hsm software store verifier v1';
/** AAD prefixes: domain-separate the verifier from key files, and name the format version. */
export const STORE_AAD_PREFIX = `${STORE_FORMAT}:v${FORMAT_VERSION}:`;
export const KEY_AAD_PREFIX = `${KEY_FORMAT}:v${FORMAT_VERSION}:`;

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const base64 = (bytes?: number) =>
  z
    .string()
    .regex(BASE64, 'not base64')
    .refine((s) => s.length % 4 === 0, 'not padded base64')
    .refine((s) => bytes === undefined || Buffer.from(s, 'base64').length === bytes, `not ${bytes} bytes`);

const isoDate = z.string().refine((s) => !Number.isNaN(Date.parse(s)) && new Date(s).toISOString() === s, 'not an ISO 8601 UTC timestamp');

export const sealedSchema = z
  .object({
    cipher: z.literal(CIPHER),
    iv: base64(IV_BYTES),
    tag: base64(TAG_BYTES),
    ciphertext: base64().refine((s) => s.length > 0, 'empty'),
  })
  .strict();
export type Sealed = z.infer<typeof sealedSchema>;

export const scryptKdfSchema = z
  .object({
    name: z.literal('scrypt'),
    N: z.number().int().min(SCRYPT_LIMITS.storedMinN).max(SCRYPT_LIMITS.maxN).refine((n) => (n & (n - 1)) === 0, 'N not a power of two'),
    r: z.number().int().min(1).max(SCRYPT_LIMITS.maxR),
    p: z.number().int().min(1).max(SCRYPT_LIMITS.maxP),
    salt: base64(SALT_BYTES),
    keyLength: z.literal(KEY_BYTES),
  })
  .strict()
  .refine((k) => 128 * k.N * k.r <= SCRYPT_LIMITS.maxMemory, 'scrypt parameters need more than 1 GiB');

/** A master key is 256 random bits: extracted and expanded (RFC 5869), not stretched. */
export const hkdfKdfSchema = z
  .object({
    name: z.literal('hkdf-sha256'),
    salt: base64(SALT_BYTES),
    keyLength: z.literal(KEY_BYTES),
  })
  .strict();

export const kdfSchema = z.union([scryptKdfSchema, hkdfKdfSchema]);
export type ScryptKdfParams = z.infer<typeof scryptKdfSchema>;
export type KdfParams = z.infer<typeof kdfSchema>;

/** The store.json version that goes with a KDF. */
export function storeVersionFor(kdf: KdfParams): typeof FORMAT_VERSION | typeof MASTER_KEY_STORE_VERSION {
  return kdf.name === 'hkdf-sha256' ? MASTER_KEY_STORE_VERSION : FORMAT_VERSION;
}

export const storeHeaderSchema = z
  .object({
    format: z.literal(STORE_FORMAT),
    version: z.union([z.literal(FORMAT_VERSION), z.literal(MASTER_KEY_STORE_VERSION)]),
    createdAt: isoDate,
    kdf: kdfSchema,
    verifier: sealedSchema,
  })
  .strict()
  .refine((h) => h.version === storeVersionFor(h.kdf), { message: 'the version does not match the kdf', path: ['version'] });
export type StoreHeader = z.infer<typeof storeHeaderSchema>;

const usageSchema = z.enum(['sign', 'verify']);

export const keyMetadataSchema = z
  .object({
    id: z.string(),
    algorithm: z.enum(KEY_ALGORITHMS),
    usages: z.array(usageSchema).min(1),
    createdAt: isoDate,
    expiresAt: isoDate.optional(),
    labels: z.record(z.string(), z.string()),
    /** SubjectPublicKeyInfo DER, base64. */
    publicKey: base64().refine((s) => s.length > 0, 'empty'),
  })
  .strict();
export type KeyMetadata = z.infer<typeof keyMetadataSchema>;

export const keyFileSchema = z
  .object({
    format: z.literal(KEY_FORMAT),
    version: z.literal(FORMAT_VERSION),
    metadata: keyMetadataSchema,
    sealed: sealedSchema,
  })
  .strict();
export type KeyFile = z.infer<typeof keyFileSchema>;

/**
 * Deterministic JSON: object keys sorted by UTF-16 code unit, no whitespace, arrays in order.
 * Used for AAD so that re-serialising a file does not change what was authenticated.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

export function storeAad(kdf: KdfParams): Buffer {
  return Buffer.from(STORE_AAD_PREFIX + canonicalJson({ kdf }), 'utf8');
}

export function keyAad(metadata: KeyMetadata): Buffer {
  return Buffer.from(KEY_AAD_PREFIX + canonicalJson(metadata), 'utf8');
}

export function seal(key: KeyObject, plaintext: Uint8Array, aad: Uint8Array): Sealed {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv(CIPHER, key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { cipher: CIPHER, iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), ciphertext: ciphertext.toString('base64') };
}

/** Decrypts and authenticates; throws (a node error, no secret in it) when the tag does not match. */
export function unseal(key: KeyObject, sealed: Sealed, aad: Uint8Array): Buffer {
  const decipher = createDecipheriv(CIPHER, key, Buffer.from(sealed.iv, 'base64'), { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(sealed.ciphertext, 'base64')), decipher.final()]);
}

/**
 * Key ids are `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}` (core's assertValidKeyId). `:` is not allowed in
 * Windows file names, so it is written as `+` (not in the id alphabet, so the mapping is reversible).
 */
export function keyFileName(id: string): string {
  return `${id.replaceAll(':', '+')}${KEY_FILE_SUFFIX}`;
}

/** The key id a directory entry names, or undefined when the entry is not a key file. */
export function keyIdFromFileName(name: string): string | undefined {
  if (!name.endsWith(KEY_FILE_SUFFIX) || name.startsWith('.')) return undefined;
  const id = name.slice(0, -KEY_FILE_SUFFIX.length).replaceAll('+', ':');
  return KEY_ID.test(id) && keyFileName(id) === name ? id : undefined;
}

/** Same rule as core's assertValidKeyId, as a predicate. */
export const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function metadataFor(args: {
  id: string;
  algorithm: KeyAlgorithm;
  usages: KeyUsage[];
  createdAt: Date;
  expiresAt?: Date | undefined;
  labels: Record<string, string>;
  spki: Uint8Array;
}): KeyMetadata {
  return {
    id: args.id,
    algorithm: args.algorithm,
    usages: args.usages,
    createdAt: args.createdAt.toISOString(),
    ...(args.expiresAt ? { expiresAt: args.expiresAt.toISOString() } : {}),
    labels: args.labels,
    publicKey: Buffer.from(args.spki).toString('base64'),
  };
}
