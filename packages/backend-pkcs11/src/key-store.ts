/**
 * Keys on the token: how a reference (id, pkcs11: URI, handle) becomes a token object, what is
 * read from it (algorithm, public key, usages, dates and the metadata object bound to it), the
 * cache of resolved keys, and generating, listing and destroying keys.
 */
import type { KeyObject } from 'node:crypto';
import { HsmError, algorithmInfo, assertValidKeyId, isHsmError, type HsmKeyHandle, type KeyAlgorithm, type KeyPage, type KeyRef, type KeyUsage, type NormalizedKeySpec } from '@olocus/hsm-core';
import type { Attribute } from 'pkcs11js';
import type { AsyncPkcs11, DeadlineKind } from './module-thread.js';
import { loginLostError, type TokenConnection } from './connection.js';
import {
  CKA_ALLOWED_MECHANISMS,
  CKA_CLASS,
  CKA_EC_PARAMS,
  CKA_EC_POINT,
  CKA_ID,
  CKA_KEY_TYPE,
  CKA_LABEL,
  CKA_MODULUS,
  CKA_PUBLIC_EXPONENT,
  CKA_SIGN,
  CKA_TOKEN,
  CKA_VERIFY,
  CKK_EC,
  CKK_EC_EDWARDS,
  CKK_RSA,
  CKO_PRIVATE_KEY,
  CKO_PUBLIC_KEY,
} from './constants.js';
import { algorithmFromAttributes, ckaIdFor, keyIdFromAttributes, publicKeyFromAttributes, readBool, readUlong, readUlongArray, spkiOf } from './keys.js';
import { indexMetadata, metadataTemplate, readKeyDates, readMetadata, writeMetadata, type MetadataIndex } from './metadata.js';
import { find, findAll, optionalAttribute, type Pkcs11Session } from './objects.js';
import { keyPairTemplates } from './templates.js';
import { formatPkcs11Uri, parsePkcs11Uri } from './uri.js';

/** A resolved key: its object handles (valid in `generation` only) and what was read from it. */
export interface KeyEntry {
  id: string;
  ckaId: Buffer;
  label: string;
  algorithm: KeyAlgorithm;
  priv: Buffer;
  pub: Buffer | undefined;
  publicKey: KeyObject | undefined;
  spki: Uint8Array | undefined;
  usages: KeyUsage[];
  createdAt: Date | undefined;
  expiresAt: Date | undefined;
  labels: Record<string, string> | undefined;
  generation: number;
  handle: HsmKeyHandle;
}

interface KeyQuery {
  id?: Buffer;
  label?: string;
  /** Tried by CKA_LABEL when nothing has the CKA_ID (keys made by other tools). */
  labelFallback?: string;
  display: string;
}

/** What the key store needs from the backend around it. */
export interface KeyStoreHost {
  readonly type: string;
  /** The backend's instanceId, read when a handle is made (it is final after initialize()). */
  instanceId(): string;
  /** The lifecycle check withSession repeats before every attempt. */
  assertUsable(): void;
}

function bitLength(value: Buffer): number {
  let i = 0;
  while (i < value.length && value[i] === 0) i++;
  if (i === value.length) return 0;
  return (value.length - i - 1) * 8 + (32 - Math.clz32(value[i]!));
}

function decodeCursor(cursor: string): string {
  try {
    const parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { after?: unknown };
    if (typeof parsed.after === 'string') return parsed.after;
  } catch {
    // fall through
  }
  throw new HsmError('InvalidArgument', 'cursor is not a cursor returned by listKeys', { details: { field: 'cursor' } });
}

const PARSED_REF_MEMO_SIZE = 4096;

export class KeyStore {
  /** Resolved keys by `cka:<hex>`, `id:<id>` and `uri:...`; cleared when object handles may have died. */
  readonly entries = new Map<string, KeyEntry>();
  private readonly resolving = new Map<string, Promise<KeyEntry>>();
  /** pkcs11: refs already parsed and checked against the token (see queryFor). */
  private readonly parsedRefs = new Map<string, { tokenLabel: string; serial: string; result: { cacheKey: string; query: KeyQuery } }>();

  constructor(
    private readonly conn: TokenConnection,
    private readonly host: KeyStoreHost,
  ) {}

  private withSession<R>(op: Parameters<TokenConnection['withSession']>[0], what: string, kind: DeadlineKind, fn: (session: Pkcs11Session, p11: AsyncPkcs11) => Promise<R>, signal?: AbortSignal): Promise<R> {
    return this.conn.withSession(op, what, fn, () => this.host.assertUsable(), signal, kind);
  }

  clear(): void {
    this.entries.clear();
  }

  private queryFor(ref: KeyRef): { cacheKey: string; query: KeyQuery } {
    // A handle is resolved by its ref alone: its id, metadata and algorithm are the caller's
    // words, and believing them would let a forged handle borrow another key's name.
    if (ref !== null && typeof ref === 'object') {
      if (typeof ref.ref !== 'string' || !/^pkcs11:/i.test(ref.ref)) throw new HsmError('InvalidArgument', 'key handle has no pkcs11: ref; pass a handle returned by this backend', { details: { field: 'key.ref' } });
      return this.queryFor(ref.ref);
    }
    if (typeof ref !== 'string') throw new HsmError('InvalidArgument', 'key must be a key id, a pkcs11: URI or a key handle', { details: { field: 'key' } });
    const { label: tokenLabel, serial } = this.conn.token;
    if (/^pkcs11:/i.test(ref)) {
      // a handle's ref is parsed once: percent-decoding it on every signature cost a tenth of a
      // P-256 signature's time on SoftHSM (profiled); the memo is per token, so a re-selected
      // token checks the URI again
      const memo = this.parsedRefs.get(ref);
      if (memo && memo.tokenLabel === tokenLabel && memo.serial === serial) return memo.result;
      const result = this.parseRef(ref, tokenLabel, serial);
      if (this.parsedRefs.size >= PARSED_REF_MEMO_SIZE) this.parsedRefs.clear();
      this.parsedRefs.set(ref, { tokenLabel, serial, result });
      return result;
    }
    assertValidKeyId(ref, 'key');
    return { cacheKey: `id:${ref}`, query: { id: ckaIdFor(ref), labelFallback: ref, display: ref } };
  }

  private parseRef(ref: string, tokenLabel: string, serial: string): { cacheKey: string; query: KeyQuery } {
    const uri = parsePkcs11Uri(ref);
    if (uri.token !== undefined && uri.token !== tokenLabel) {
      throw new HsmError('KeyNotFound', `key ${ref} is on token '${uri.token}', this backend uses token '${tokenLabel}'`, { details: { key: ref } });
    }
    if (uri.serial !== undefined && uri.serial !== serial) throw new HsmError('KeyNotFound', `key ${ref} is on another token (serial)`, { details: { key: ref } });
    if (!uri.id && uri.object === undefined) throw new HsmError('InvalidArgument', 'a key URI needs id= or object=', { details: { field: 'key' } });
    const query: KeyQuery = { display: ref };
    if (uri.id) query.id = Buffer.from(uri.id);
    if (uri.object !== undefined) query.label = uri.object;
    return { cacheKey: `uri:${uri.id ? Buffer.from(uri.id).toString('hex') : ''}:${uri.object ?? ''}`, query };
  }

  /** The key a reference names: from the cache, or looked up once for all concurrent callers. */
  async resolve(ref: KeyRef, signal?: AbortSignal): Promise<KeyEntry> {
    const { cacheKey, query } = this.queryFor(ref);
    const cached = this.entries.get(cacheKey);
    if (cached && cached.generation === this.conn.generation) return cached;
    let pending = this.resolving.get(cacheKey);
    if (!pending) {
      pending = this.withSession('Internal', `looking up key ${query.display}`, 'find', (session, p11) => this.findKey(session, p11, query), signal).finally(() => this.resolving.delete(cacheKey));
      this.resolving.set(cacheKey, pending);
    }
    const entry = await pending;
    this.remember(entry, cacheKey);
    return entry;
  }

  private remember(entry: KeyEntry, ...aliases: string[]): void {
    for (const key of [`cka:${entry.ckaId.toString('hex')}`, `id:${entry.id}`, ...aliases]) this.entries.set(key, entry);
  }

  forget(entry: KeyEntry): void {
    for (const [key, value] of this.entries) if (value === entry || value.ckaId.equals(entry.ckaId)) this.entries.delete(key);
  }

  private async findKey(session: Pkcs11Session, p11: AsyncPkcs11, query: KeyQuery): Promise<KeyEntry> {
    const template: Attribute[] = [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }];
    if (query.id) template.push({ type: CKA_ID, value: query.id });
    if (query.label !== undefined) template.push({ type: CKA_LABEL, value: query.label });
    let found = await find(p11, session, template, 2);
    if (found.length === 0 && query.labelFallback !== undefined) {
      found = await find(p11, session, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_LABEL, value: query.labelFallback }], 2);
      if (found.length > 1) throw new HsmError('InvalidArgument', `more than one private key is labelled '${query.labelFallback}'; address it by pkcs11: URI with id=`, { details: { key: query.display } });
    }
    if (found.length === 0 && !(await this.conn.loggedIn(session))) throw loginLostError();
    if (found.length === 0) throw new HsmError('KeyNotFound', `key ${query.display} not found on token '${this.conn.token.label}'`, { details: { key: query.display, tokenLabel: this.conn.token.label } });
    return this.loadKey(session, p11, found[0]!);
  }

  /** Reads a key this process has just put on the token (a restored backup) and caches it; `metadata` (its metadata object, when known) spares a find. */
  async adopt(session: Pkcs11Session, p11: AsyncPkcs11, priv: Buffer, pub: Buffer, metadata?: MetadataIndex): Promise<KeyEntry> {
    const entry = await this.loadKey(session, p11, priv, pub, metadata ? { publicKeys: new Map(), metadata } : undefined);
    this.remember(entry);
    return entry;
  }

  /** Reads a private key's attributes (and finds its public half) into a cache entry. */
  private async loadKey(session: Pkcs11Session, p11: AsyncPkcs11, priv: Buffer, pubHint?: Buffer, index?: ListingIndex): Promise<KeyEntry> {
    const h = session.handle;
    const [typeAttr, idAttr, labelAttr, signAttr] = await p11.C_GetAttributeValue(h, priv, [{ type: CKA_KEY_TYPE }, { type: CKA_ID }, { type: CKA_LABEL }, { type: CKA_SIGN }]);
    const keyType = readUlong(typeAttr!.value);
    const ckaId = Buffer.from(idAttr!.value);
    const label = labelAttr!.value.toString('utf8');
    let ecParams: Buffer | undefined;
    let modulusBits: number | undefined;
    let allowed: number[] = [];
    if (keyType === CKK_EC || keyType === CKK_EC_EDWARDS) {
      ecParams = (await p11.C_GetAttributeValue(h, priv, [{ type: CKA_EC_PARAMS }]))[0]!.value;
    } else if (keyType === CKK_RSA) {
      const modulus = (await p11.C_GetAttributeValue(h, priv, [{ type: CKA_MODULUS }]))[0]!.value;
      modulusBits = bitLength(modulus);
      allowed = (await optionalAttribute(p11, h, priv, CKA_ALLOWED_MECHANISMS, readUlongArray)) ?? [];
    }
    const uri = formatPkcs11Uri({ token: this.conn.token.label, id: ckaId, object: label, type: 'private' });
    const algorithm = algorithmFromAttributes(keyType, ecParams, modulusBits, allowed);
    if (!algorithm) {
      throw new HsmError('UnsupportedAlgorithm', `key ${uri} uses an algorithm outside the contract (key type 0x${keyType.toString(16)}${modulusBits ? `, ${modulusBits} bits` : ''})`, {
        details: { key: uri },
      });
    }
    let pub = pubHint ?? index?.publicKeys.get(publicKeyIndexKey(ckaId, label));
    if (!pub && !index) {
      const template: Attribute[] = [{ type: CKA_CLASS, value: CKO_PUBLIC_KEY }];
      template.push(ckaId.length > 0 ? { type: CKA_ID, value: ckaId } : { type: CKA_LABEL, value: label });
      pub = (await find(p11, session, template, 1))[0];
    }
    let publicKey: KeyObject | undefined;
    let verify = false;
    const info = algorithmInfo(algorithm);
    if (pub) {
      verify = readBool((await p11.C_GetAttributeValue(h, pub, [{ type: CKA_VERIFY }]))[0]!.value);
      if (info.family === 'RSA') {
        const [m, e] = await p11.C_GetAttributeValue(h, pub, [{ type: CKA_MODULUS }, { type: CKA_PUBLIC_EXPONENT }]);
        publicKey = publicKeyFromAttributes(algorithm, { modulus: m!.value, exponent: e!.value });
      } else {
        publicKey = publicKeyFromAttributes(algorithm, { ecPoint: (await p11.C_GetAttributeValue(h, pub, [{ type: CKA_EC_POINT }]))[0]!.value });
      }
    } else if (info.family === 'RSA') {
      const [m, e] = await p11.C_GetAttributeValue(h, priv, [{ type: CKA_MODULUS }, { type: CKA_PUBLIC_EXPONENT }]);
      publicKey = publicKeyFromAttributes(algorithm, { modulus: m!.value, exponent: e!.value });
      verify = true;
    }
    const spki = publicKey ? spkiOf(publicKey) : undefined;
    // the public half's dates are readable everywhere (see metadata.ts); the private half's are a fallback
    const dates = pub ? await readKeyDates(p11, h, pub) : {};
    if (!dates.end) Object.assign(dates, { ...(await readKeyDates(p11, h, priv)), ...dates });
    const meta = await readMetadata(p11, session, ckaId, spki, dates, this.conn.vendor.keyDates, index?.metadata);
    const usages: KeyUsage[] = [];
    if (readBool(signAttr!.value)) usages.push('sign');
    if (verify) usages.push('verify');
    const entry: KeyEntry = {
      id: keyIdFromAttributes(ckaId, label, uri),
      ckaId,
      label,
      algorithm,
      priv,
      pub,
      publicKey,
      spki,
      usages,
      createdAt: meta.createdAt,
      expiresAt: meta.expiresAt,
      labels: meta.labels,
      generation: session.generation,
      handle: undefined as unknown as HsmKeyHandle,
    };
    entry.handle = this.handleOf(entry, uri);
    return entry;
  }

  private handleOf(entry: KeyEntry, ref: string): HsmKeyHandle {
    const { label: tokenLabel, serial, slotNumber } = this.conn.token;
    const handle: HsmKeyHandle = {
      id: entry.id,
      ref,
      algorithm: entry.algorithm,
      usages: [...entry.usages],
      backend: this.host.type,
      instance: this.host.instanceId(),
      state: 'enabled',
      metadata: { ckaId: entry.ckaId.toString('hex'), label: entry.label, tokenLabel, tokenSerial: serial, slotId: String(slotNumber) },
    };
    for (const [k, v] of Object.entries(entry.labels ?? {})) handle.metadata[`label.${k}`] = v;
    if (entry.createdAt) handle.createdAt = entry.createdAt;
    if (entry.labels) handle.labels = { ...entry.labels };
    if (entry.expiresAt) handle.expiresAt = entry.expiresAt;
    return handle;
  }

  async generate(spec: NormalizedKeySpec): Promise<KeyEntry> {
    const { algorithm, usages } = spec;
    const ckaId = ckaIdFor(spec.id);
    const createdAt = new Date();
    const { label: tokenLabel, serial, slotNumber } = this.conn.token;
    const { mechanism, publicTemplate, privateTemplate } = keyPairTemplates(this.conn.vendor, { algorithm, id: spec.id, ckaId, usages, createdAt, expiresAt: spec.expiresAt, backup: spec.backup === true });
    const mod = this.conn.mod!;
    const entry = await mod.tokenLock(`${slotNumber}:${serial}`).run(() =>
      this.withSession('KeyGenerationFailed', `generating key ${spec.id}`, 'generate', async (session, p11) => {
        const clash = (await find(p11, session, [{ type: CKA_ID, value: ckaId }], 1)).length > 0 || (await find(p11, session, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_LABEL, value: spec.id }], 1)).length > 0;
        if (clash) throw new HsmError('KeyAlreadyExists', `a key with id ${spec.id} already exists on token '${tokenLabel}'`, { details: { key: spec.id } });
        const pair = await p11.C_GenerateKeyPair(session.handle, mechanism, publicTemplate, privateTemplate);
        try {
          const loaded = await this.loadKey(session, p11, pair.privateKey, pair.publicKey);
          if (!loaded.spki) throw new HsmError('KeyGenerationFailed', `key ${spec.id}: the token returned no readable public key`, { details: { key: spec.id } });
          // a data object left over from an earlier key with this CKA_ID names another public key and is ignored; remove it
          for (const stale of await find(p11, session, metadataTemplate(ckaId), 8)) await p11.C_DestroyObject(session.handle, stale);
          await writeMetadata(p11, session, ckaId, spec.id, loaded.spki, { createdAt, expiresAt: spec.expiresAt, labels: spec.labels });
          loaded.createdAt = createdAt;
          loaded.expiresAt = spec.expiresAt;
          loaded.labels = spec.labels ? { ...spec.labels } : undefined;
          loaded.handle = this.handleOf(loaded, loaded.handle.ref);
          return loaded;
        } catch (error) {
          // Without its metadata the key's labels and exact expiry would be lost after a restart: undo.
          for (const object of [pair.privateKey, pair.publicKey]) {
            try {
              await p11.C_DestroyObject(session.handle, object);
            } catch {
              // best effort
            }
          }
          throw error;
        }
      }),
    );
    this.remember(entry);
    return entry;
  }

  /** Private keys on the token, filtered by prefix (id or label), sorted by id, paged by an opaque cursor. */
  list(prefix: string, limit: number, cursor: string | undefined): Promise<KeyPage> {
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    return this.withSession('Internal', 'listing keys', 'find', async (session, p11) => {
      const handles = await findAll(p11, session, [
        { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
        { type: CKA_TOKEN, value: true },
      ]);
      // public halves and metadata objects read once for the whole page, not one find per key
      let index: ListingIndex | undefined;
      const indexed = async (): Promise<ListingIndex> => {
        index ??= { publicKeys: await indexPublicKeys(p11, session), metadata: await indexMetadata(p11, session) };
        return index;
      };
      const rows: Array<{ handle: Buffer; id: string }> = [];
      for (const handle of handles) {
        const [idAttr, labelAttr] = await p11.C_GetAttributeValue(session.handle, handle, [{ type: CKA_ID }, { type: CKA_LABEL }]);
        const ckaId = idAttr!.value;
        const label = labelAttr!.value.toString('utf8');
        const id = keyIdFromAttributes(ckaId, label, formatPkcs11Uri({ token: this.conn.token.label, id: ckaId, object: label, type: 'private' }));
        if (!id.startsWith(prefix) && !label.startsWith(prefix)) continue;
        if (after !== undefined && id <= after) continue;
        rows.push({ handle, id });
      }
      rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const keys: HsmKeyHandle[] = [];
      let more = false;
      for (const row of rows) {
        if (keys.length === limit) {
          more = true;
          break;
        }
        let entry: KeyEntry;
        try {
          entry = await this.loadKey(session, p11, row.handle, undefined, await indexed());
        } catch (error) {
          if (isHsmError(error, 'UnsupportedAlgorithm')) continue; // not a contract key: not listed
          throw error;
        }
        this.remember(entry);
        keys.push({ ...entry.handle });
      }
      const page: KeyPage = { keys };
      if (more && keys.length > 0) page.nextCursor = Buffer.from(JSON.stringify({ after: keys[keys.length - 1]!.id })).toString('base64url');
      return page;
    });
  }

  /** Destroys both halves and the key's metadata object. */
  async destroy(entry: KeyEntry): Promise<void> {
    const { label: tokenLabel, serial, slotNumber } = this.conn.token;
    await this.conn.mod!.tokenLock(`${slotNumber}:${serial}`).run(() =>
      this.withSession('Internal', `destroying key ${entry.id}`, 'generate', async (session, p11) => {
        let objects: Buffer[];
        if (entry.ckaId.length > 0) {
          objects = [
            ...(await find(p11, session, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_ID, value: entry.ckaId }], 16)),
            ...(await find(p11, session, [{ type: CKA_CLASS, value: CKO_PUBLIC_KEY }, { type: CKA_ID, value: entry.ckaId }], 16)),
          ];
        } else {
          objects = entry.generation === session.generation ? [entry.priv, ...(entry.pub ? [entry.pub] : [])] : [];
        }
        if (objects.length === 0) throw new HsmError('KeyNotFound', `key ${entry.id} not found on token '${tokenLabel}'`, { details: { key: entry.id } });
        if (entry.ckaId.length > 0) objects.push(...(await find(p11, session, metadataTemplate(entry.ckaId), 8)));
        for (const object of objects) await p11.C_DestroyObject(session.handle, object);
      }),
    );
    this.forget(entry);
  }
}

/** What a listing reads once instead of once per key (see `indexMetadata`). */
interface ListingIndex {
  publicKeys: Map<string, Buffer>;
  metadata: MetadataIndex;
}

/** How a private key finds its public half: by CKA_ID, or by label when it has no CKA_ID (as a find would). */
function publicKeyIndexKey(ckaId: Buffer, label: string): string {
  return ckaId.length > 0 ? `id:${ckaId.toString('hex')}` : `label:${label}`;
}

async function indexPublicKeys(p11: AsyncPkcs11, session: Pkcs11Session): Promise<Map<string, Buffer>> {
  const index = new Map<string, Buffer>();
  for (const pub of await findAll(p11, session, [{ type: CKA_CLASS, value: CKO_PUBLIC_KEY }])) {
    const [idAttr, labelAttr] = await p11.C_GetAttributeValue(session.handle, pub, [{ type: CKA_ID }, { type: CKA_LABEL }]);
    // the first one found wins, as C_FindObjects(max 1) did; an id-less public key is found by label
    const key = publicKeyIndexKey(Buffer.from(idAttr!.value), labelAttr!.value.toString('utf8'));
    if (!index.has(key)) index.set(key, pub);
  }
  return index;
}
