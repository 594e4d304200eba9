import { createHash } from 'node:crypto';
import { isHsmError } from '@olocus/hsm-core';
import type { Attribute } from 'pkcs11js';
import type { AsyncPkcs11 } from './module-thread.js';
import { CKA_APPLICATION, CKA_CLASS, CKA_END_DATE, CKA_LABEL, CKA_MODIFIABLE, CKA_PRIVATE, CKA_START_DATE, CKA_TOKEN, CKA_VALUE, CKO_DATA } from './constants.js';
import { find, findAll, optionalAttribute, type Pkcs11Session } from './objects.js';

/**
 * Key metadata (exact creation time and expiry, free labels).
 *
 * Why it is bound this way: anything that can be found by the key's *label* can be supplied by
 * whoever can create a data object with that label, and an editable object can be edited. So:
 * - expiry is on the key objects themselves: CKA_END_DATE (and CKA_START_DATE = creation day) on
 *   both halves, which are created CKA_MODIFIABLE = false;
 * - the data object that refines them to the millisecond and carries labels is found by the key's
 *   CKA_ID (inside CKA_APPLICATION: SoftHSM refuses CKA_ID on CKO_DATA objects with
 *   CKR_ATTRIBUTE_TYPE_INVALID, measured), is created CKA_MODIFIABLE = false, and names the SHA-256
 *   of the key's public key: a data object that does not name this very key pair is ignored;
 * - its expiry is believed only when it falls on the key's CKA_END_DATE day.
 * CK_DATE is read from the public key (CKA_PRIVATE = false): SoftHSM 2.6.1 stores dates of private
 * objects unencrypted and then fails to decrypt them on read (CKR_GENERAL_ERROR, measured).
 */
export const METADATA_APPLICATION = 'olocus-hsm/key-metadata/v2';

export interface KeyMetadata {
  createdAt?: Date;
  expiresAt?: Date;
  labels?: Record<string, string>;
}

/** The CKA_APPLICATION that ties a metadata object to one CKA_ID. */
export function metadataApplication(ckaId: Buffer): string {
  return `${METADATA_APPLICATION};id=${ckaId.toString('hex')}`;
}

export function metadataTemplate(ckaId: Buffer): Attribute[] {
  return [
    { type: CKA_CLASS, value: CKO_DATA },
    { type: CKA_APPLICATION, value: metadataApplication(ckaId) },
  ];
}

export function fingerprintOf(spki: Uint8Array): string {
  return createHash('sha256').update(spki).digest('hex');
}

/** CK_DATE (YYYYMMDD, UTC) of a time. */
export function ckDate(date: Date): Buffer {
  return Buffer.from(date.toISOString().slice(0, 10).replace(/-/g, ''), 'ascii');
}

/** Start of the UTC day of a CK_DATE, or undefined when it is not a date. */
export function dayOf(value: Buffer): Date | undefined {
  const text = value.toString('ascii');
  if (!/^\d{8}$/.test(text)) return undefined;
  const day = new Date(`${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6, 8)}T00:00:00.000Z`);
  return Number.isNaN(day.getTime()) || ckDate(day).toString('ascii') !== text ? undefined : day;
}

const DAY_MS = 86_400_000;

export interface KeyDates {
  start?: Date;
  end?: Date;
}

/** CKA_START_DATE / CKA_END_DATE of a key object; unreadable or empty dates are absent. */
export async function readKeyDates(p11: AsyncPkcs11, session: Buffer, object: Buffer): Promise<KeyDates> {
  const read = async (type: number) => {
    try {
      return await optionalAttribute(p11, session, object, type, dayOf);
    } catch (error) {
      if (isHsmError(error, 'Timeout')) throw error;
      return undefined; // see the SoftHSM note above: an unreadable date is an unknown date
    }
  };
  const out: KeyDates = {};
  const start = await read(CKA_START_DATE);
  const end = await read(CKA_END_DATE);
  if (start) out.start = start;
  if (end) out.end = end;
  return out;
}

export async function writeMetadata(p11: AsyncPkcs11, session: Pkcs11Session, ckaId: Buffer, label: string, spki: Uint8Array, meta: { createdAt: Date; expiresAt: Date | undefined; labels: Record<string, string> | undefined }): Promise<Buffer> {
  const value = JSON.stringify({
    ckaId: ckaId.toString('hex'),
    publicKeySha256: fingerprintOf(spki),
    createdAt: meta.createdAt.toISOString(),
    expiresAt: meta.expiresAt?.toISOString(),
    labels: meta.labels,
  });
  return p11.C_CreateObject(session.handle, [
    ...metadataTemplate(ckaId),
    { type: CKA_LABEL, value: label },
    { type: CKA_TOKEN, value: true },
    { type: CKA_PRIVATE, value: true },
    { type: CKA_MODIFIABLE, value: false },
    { type: CKA_VALUE, value: Buffer.from(value, 'utf8') },
  ]);
}

/**
 * The metadata that belongs to this key pair, with the key's own dates applied:
 * - no CKA_END_DATE on the key → no expiry (unless the vendor cannot store key dates: `keyDates` false);
 * - a CKA_END_DATE → the metadata's exact expiry when it falls on that day, else the end of that day;
 * - createdAt only from metadata bound to this key (absent = unknown, e.g. keys made by other tools).
 */
/**
 * Metadata objects by CKA_APPLICATION, read once for a whole listing: a C_FindObjects per key walks
 * every object of the token (SoftHSM), so listing N keys one find at a time costs N² (measured: 72 ms
 * per find on a token of 3,000 objects).
 */
export type MetadataIndex = Map<string, Buffer[]>;

export async function indexMetadata(p11: AsyncPkcs11, session: Pkcs11Session): Promise<MetadataIndex> {
  const index: MetadataIndex = new Map();
  for (const object of await findAll(p11, session, [{ type: CKA_CLASS, value: CKO_DATA }])) {
    const application = await optionalAttribute(p11, session.handle, object, CKA_APPLICATION, (v) => v.toString('utf8'));
    if (!application?.startsWith(METADATA_APPLICATION)) continue;
    const list = index.get(application);
    if (list) list.push(object);
    else index.set(application, [object]);
  }
  return index;
}

export async function readMetadata(p11: AsyncPkcs11, session: Pkcs11Session, ckaId: Buffer, spki: Uint8Array | undefined, dates: KeyDates, keyDates: boolean, index?: MetadataIndex): Promise<KeyMetadata> {
  const bound = ckaId.length > 0 && spki ? await boundMetadata(p11, session, ckaId, spki, index) : undefined;
  const out: KeyMetadata = {};
  if (bound?.createdAt && (!dates.start || sameDay(bound.createdAt, dates.start))) out.createdAt = bound.createdAt;
  if (bound?.labels) out.labels = bound.labels;
  if (dates.end) {
    out.expiresAt = bound?.expiresAt && sameDay(bound.expiresAt, dates.end) ? bound.expiresAt : new Date(dates.end.getTime() + DAY_MS);
  } else if (!keyDates && bound?.expiresAt) {
    out.expiresAt = bound.expiresAt;
  }
  return out;
}

function sameDay(a: Date, day: Date): boolean {
  return ckDate(a).equals(ckDate(day));
}

async function boundMetadata(p11: AsyncPkcs11, session: Pkcs11Session, ckaId: Buffer, spki: Uint8Array, index?: MetadataIndex): Promise<KeyMetadata | undefined> {
  const fingerprint = fingerprintOf(spki);
  const candidates: KeyMetadata[] = [];
  const objects = index ? (index.get(metadataApplication(ckaId)) ?? []).slice(0, 8) : await find(p11, session, metadataTemplate(ckaId), 8);
  for (const object of objects) {
    const raw = await optionalAttribute(p11, session.handle, object, CKA_VALUE, (v) => v.toString('utf8'));
    const parsed = raw === undefined ? undefined : parse(raw);
    if (!parsed || parsed.ckaId !== ckaId.toString('hex') || parsed.publicKeySha256 !== fingerprint) continue;
    const modifiable = await optionalAttribute(p11, session.handle, object, CKA_MODIFIABLE, (v) => v[0] !== 0);
    if (modifiable !== false) continue; // an editable object may have been edited
    candidates.push(parsed.meta);
  }
  // two objects claiming the same key: neither is believed
  return candidates.length === 1 ? candidates[0] : undefined;
}

function parse(raw: string): { ckaId: unknown; publicKeySha256: unknown; meta: KeyMetadata } | undefined {
  try {
    const parsed = JSON.parse(raw) as { ckaId?: unknown; publicKeySha256?: unknown; createdAt?: unknown; expiresAt?: unknown; labels?: unknown };
    const date = (s: unknown) => (typeof s === 'string' && !Number.isNaN(Date.parse(s)) ? new Date(s) : undefined);
    const meta: KeyMetadata = {};
    const createdAt = date(parsed.createdAt);
    const expiresAt = date(parsed.expiresAt);
    if (createdAt) meta.createdAt = createdAt;
    if (expiresAt) meta.expiresAt = expiresAt;
    if (parsed.labels && typeof parsed.labels === 'object' && !Array.isArray(parsed.labels)) {
      const labels = Object.fromEntries(Object.entries(parsed.labels as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string'));
      if (Object.keys(labels).length > 0) meta.labels = labels;
    }
    return { ckaId: parsed.ckaId, publicKeySha256: parsed.publicKeySha256, meta };
  } catch {
    return undefined;
  }
}
