import { HsmError } from '@olocus/hsm-core';

/** RFC 7512 path attributes this parser understands. */
const PATH_ATTRIBUTES = new Set([
  'token',
  'manufacturer',
  'serial',
  'model',
  'library-manufacturer',
  'library-description',
  'library-version',
  'object',
  'type',
  'id',
  'slot-description',
  'slot-manufacturer',
  'slot-id',
]);
const QUERY_ATTRIBUTES = new Set(['pin-source', 'pin-value', 'module-name', 'module-path']);
const OBJECT_TYPES = new Set(['public', 'private', 'cert', 'secret-key', 'data']);

export interface Pkcs11Uri {
  /** Token label. */
  token?: string;
  manufacturer?: string;
  serial?: string;
  model?: string;
  /** CKA_LABEL. */
  object?: string;
  type?: 'public' | 'private' | 'cert' | 'secret-key' | 'data';
  /** CKA_ID bytes. */
  id?: Uint8Array;
  slotId?: number;
  /** Every path attribute, decoded as UTF-8 (id included, which may not be text). */
  path: Record<string, string>;
  /** Query attributes (pin-source, module-path...). pin-value is parsed but never echoed in errors. */
  query: Record<string, string>;
}

function fail(message: string): never {
  throw new HsmError('InvalidArgument', `invalid PKCS#11 URI: ${message}`, { details: { field: 'uri' } });
}

function pctDecode(value: string, attribute: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '%') {
      const hex = value.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) fail(`bad percent-encoding in "${attribute}"`);
      out.push(parseInt(hex, 16));
      i += 2;
    } else {
      for (const b of Buffer.from(c, 'utf8')) out.push(b);
    }
  }
  return Uint8Array.from(out);
}

/**
 * Parses an RFC 7512 `pkcs11:` URI, e.g. `pkcs11:token=olocus;id=%0a%0b;type=private`.
 * Throws HsmError('InvalidArgument') naming the attribute at fault (never its value: a URI may
 * carry `pin-value`).
 */
export function parsePkcs11Uri(uri: string): Pkcs11Uri {
  if (typeof uri !== 'string' || !/^pkcs11:/i.test(uri)) fail('must start with "pkcs11:"');
  const rest = uri.slice('pkcs11:'.length);
  const q = rest.indexOf('?');
  const pathPart = q >= 0 ? rest.slice(0, q) : rest;
  const queryPart = q >= 0 ? rest.slice(q + 1) : '';
  const result: Pkcs11Uri = { path: {}, query: {} };
  const utf8 = new TextDecoder('utf-8', { fatal: false });

  for (const item of pathPart === '' ? [] : pathPart.split(';')) {
    const eq = item.indexOf('=');
    if (eq <= 0) fail(`path attribute without "=": "${item.slice(0, 40)}"`);
    const name = item.slice(0, eq).toLowerCase();
    if (!PATH_ATTRIBUTES.has(name) && !name.startsWith('x-')) fail(`unknown path attribute "${name}"`);
    if (name in result.path) fail(`path attribute "${name}" appears twice`);
    const bytes = pctDecode(item.slice(eq + 1), name);
    const text = utf8.decode(bytes);
    result.path[name] = text;
    switch (name) {
      case 'id':
        result.id = bytes;
        break;
      case 'object':
        result.object = text;
        break;
      case 'token':
        result.token = text;
        break;
      case 'manufacturer':
        result.manufacturer = text;
        break;
      case 'serial':
        result.serial = text;
        break;
      case 'model':
        result.model = text;
        break;
      case 'type':
        if (!OBJECT_TYPES.has(text)) fail(`type must be one of ${[...OBJECT_TYPES].join(', ')}`);
        result.type = text as NonNullable<Pkcs11Uri['type']>;
        break;
      case 'slot-id':
        if (!/^\d+$/.test(text)) fail('slot-id must be a decimal number');
        result.slotId = Number(text);
        break;
    }
  }
  for (const item of queryPart === '' ? [] : queryPart.split('&')) {
    const eq = item.indexOf('=');
    if (eq <= 0) fail('query attribute without "="');
    const name = item.slice(0, eq).toLowerCase();
    if (!QUERY_ATTRIBUTES.has(name) && !name.startsWith('x-')) fail(`unknown query attribute "${name}"`);
    if (name in result.query) fail(`query attribute "${name}" appears twice`);
    result.query[name] = utf8.decode(pctDecode(item.slice(eq + 1), name));
  }
  return result;
}

const UNRESERVED = /[A-Za-z0-9\-._~]/;

function pctEncodeText(value: string): string {
  let out = '';
  for (const ch of value) {
    if (UNRESERVED.test(ch)) out += ch;
    else for (const b of Buffer.from(ch, 'utf8')) out += `%${b.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** Formats a URI; `id` is always fully percent-encoded (`%0a%0b`), as RFC 7512 recommends. */
export function formatPkcs11Uri(parts: { token?: string; serial?: string; id?: Uint8Array; object?: string; type?: Pkcs11Uri['type'] }): string {
  const items: string[] = [];
  if (parts.token !== undefined) items.push(`token=${pctEncodeText(parts.token)}`);
  if (parts.serial !== undefined) items.push(`serial=${pctEncodeText(parts.serial)}`);
  if (parts.id !== undefined && parts.id.length > 0) items.push(`id=${[...parts.id].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')}`);
  if (parts.object !== undefined) items.push(`object=${pctEncodeText(parts.object)}`);
  if (parts.type !== undefined) items.push(`type=${parts.type}`);
  return `pkcs11:${items.join(';')}`;
}
