import { isKeyAlgorithm, type KeyAlgorithm } from './algorithms.js';
import { HsmError } from './errors.js';
import { assertValidKeyId } from './key-id.js';
import type { Capabilities, HsmKeyHandle, KeyRef, KeyUsage, ListKeysOptions } from './types.js';

/**
 * The rules every backend applies to what callers give it. They live here once, so that two
 * backends cannot disagree about what a valid spec, label or page size is.
 */

export interface NormalizedKeySpec {
  id: string;
  algorithm: KeyAlgorithm;
  usages: KeyUsage[];
  expiresAt?: Date;
  labels?: Record<string, string>;
  /** Present (true) only when the caller asked for a backup-eligible key. */
  backup?: true;
}

const USAGES: readonly KeyUsage[] = ['sign', 'verify'];
const LABEL_KEY = /^[A-Za-z0-9._:/-]{1,64}$/;
export const MAX_LABELS = 32;
export const MAX_LABEL_VALUE_LENGTH = 256;
// C0 and C1 controls and the line/paragraph separators: a label is printed in terminals and reports.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** Shows a caller's value in a message without echoing a whole megabyte of it. */
export function describeValue(value: unknown, max = 64): string {
  const text = typeof value === 'string' ? value : String(value);
  const shown = JSON.stringify(text.length > max ? text.slice(0, max) : text);
  return text.length > max ? `${shown}…(${text.length} characters)` : shown;
}

function invalid(field: string, message: string): HsmError {
  return new HsmError('InvalidArgument', `${field} ${message}`, { details: { field } });
}

/** Validates a key spec and fills its defaults. */
export function normalizeKeySpec(spec: unknown, now: Date = new Date()): NormalizedKeySpec {
  if (typeof spec !== 'object' || spec === null) throw invalid('spec', 'must be an object with id and algorithm');
  const raw = spec as Record<string, unknown>;
  assertValidKeyId(raw.id, 'id');
  if (!isKeyAlgorithm(raw.algorithm)) {
    throw new HsmError('UnsupportedAlgorithm', `algorithm ${describeValue(raw.algorithm)} is not one of the library's algorithms`, {
      details: { field: 'algorithm' },
    });
  }
  const result: NormalizedKeySpec = { id: raw.id, algorithm: raw.algorithm, usages: normalizeUsages(raw.usages) };
  if (raw.expiresAt !== undefined) {
    if (!(raw.expiresAt instanceof Date) || Number.isNaN(raw.expiresAt.getTime())) throw invalid('expiresAt', 'must be a valid Date');
    if (raw.expiresAt.getTime() <= now.getTime()) throw invalid('expiresAt', `(${raw.expiresAt.toISOString()}) is not in the future`);
    result.expiresAt = raw.expiresAt;
  }
  if (raw.labels !== undefined) result.labels = normalizeLabels(raw.labels);
  if (raw.backup !== undefined) {
    if (typeof raw.backup !== 'boolean') throw invalid('backup', `must be true or false, not ${describeValue(raw.backup)}`);
    if (raw.backup) result.backup = true;
  }
  return result;
}

function normalizeUsages(value: unknown): KeyUsage[] {
  if (value === undefined) return [...USAGES];
  if (!Array.isArray(value) || value.length === 0) throw invalid('usages', "must be a non-empty list of 'sign' and 'verify'");
  const usages = new Set<KeyUsage>();
  for (const usage of value) {
    if (!USAGES.includes(usage as KeyUsage)) throw invalid('usages', `contains ${describeValue(usage)}; allowed: sign, verify`);
    usages.add(usage as KeyUsage);
  }
  return USAGES.filter((u) => usages.has(u));
}

/** Labels are non-secret, printable and small: they end up in token objects, cloud tags and reports. */
export function normalizeLabels(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('labels', 'must be an object of string values');
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length > MAX_LABELS) throw invalid('labels', `has ${entries.length} entries; at most ${MAX_LABELS} are allowed`);
  const labels: Record<string, string> = {};
  for (const [key, label] of entries) {
    if (!LABEL_KEY.test(key)) throw invalid('labels', `key ${describeValue(key)} must be 1-64 letters, digits, '.', '_', ':', '/' or '-'`);
    if (typeof label !== 'string') throw invalid(`labels.${key}`, 'must be a string');
    if (label.length > MAX_LABEL_VALUE_LENGTH) throw invalid(`labels.${key}`, `is ${label.length} characters long; at most ${MAX_LABEL_VALUE_LENGTH} are allowed`);
    if (CONTROL.test(label)) throw invalid(`labels.${key}`, 'must not contain control characters');
    labels[key] = label;
  }
  return labels;
}

/** UnsupportedAlgorithm unless the instance measured support for it. */
export function assertAlgorithmSupported(algorithm: KeyAlgorithm, supported: readonly KeyAlgorithm[], where = 'this backend'): void {
  if (!supported.includes(algorithm)) {
    throw new HsmError('UnsupportedAlgorithm', `${algorithm} is not supported by ${where}; supported: ${supported.join(', ') || 'none'}`, {
      details: { field: 'algorithm', algorithm },
    });
  }
}

export const DEFAULT_LIST_LIMIT = 100;
export const MAX_LIST_LIMIT = 1000;

export function normalizeListOptions(options: ListKeysOptions = {}): { prefix: string; limit: number; cursor?: string } {
  const prefix = options.prefix ?? '';
  if (typeof prefix !== 'string') throw invalid('prefix', 'must be a string');
  if (prefix.length > 128) throw invalid('prefix', `is ${prefix.length} characters long; at most 128 are allowed`);
  const limit = options.limit ?? DEFAULT_LIST_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) throw invalid('limit', `must be an integer from 1 to ${MAX_LIST_LIMIT} (got ${describeValue(limit)})`);
  if (options.cursor !== undefined && (typeof options.cursor !== 'string' || options.cursor.length === 0 || options.cursor.length > 4096)) {
    throw invalid('cursor', 'must be the nextCursor of a previous page');
  }
  return options.cursor === undefined ? { prefix, limit } : { prefix, limit, cursor: options.cursor };
}

/** The error every backend gives for an AbortSignal that fired while the call waited. */
export function abortError(signal: AbortSignal): HsmError {
  return new HsmError('Timeout', 'the operation was aborted by its caller before it started', { cause: signal.reason, retryable: true });
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw abortError(signal);
}

/** Refuses a key whose usages, expiry or state forbid `usage` now. */
export function assertUsable(handle: HsmKeyHandle, usage: KeyUsage, now: Date = new Date()): void {
  const state = handle.state ?? 'enabled';
  if (state === 'destroyed') throw new HsmError('KeyNotFound', `key ${handle.id} was destroyed`, { details: { keyId: handle.id, state } });
  if (state !== 'enabled') {
    throw new HsmError('KeyDisabled', `key ${handle.id} is ${state} and cannot ${usage}`, { details: { keyId: handle.id, state } });
  }
  if (!handle.usages.includes(usage)) {
    throw new HsmError('KeyUsageNotAllowed', `key ${handle.id} is not allowed to ${usage} (usages: ${handle.usages.join(', ')})`, {
      details: { keyId: handle.id, usage },
    });
  }
  if (usage === 'sign' && handle.expiresAt && handle.expiresAt.getTime() <= now.getTime()) {
    throw new HsmError('KeyExpired', `key ${handle.id} expired at ${handle.expiresAt.toISOString()}`, { details: { keyId: handle.id } });
  }
}

/** A handle made by another backend instance names a key this one cannot vouch for. */
export function assertSameInstance(key: KeyRef, instanceId: string): void {
  if (typeof key === 'string') return;
  if (typeof key !== 'object' || key === null || typeof key.ref !== 'string') throw invalid('key', 'must be a key id or a handle returned by the backend');
  if (key.instance !== instanceId) {
    throw new HsmError('InvalidArgument', `the handle for key ${describeValue(key.id)} belongs to backend instance ${describeValue(key.instance)}, not ${describeValue(instanceId)}`, {
      details: { field: 'key', instance: String(key.instance), expected: instanceId },
    });
  }
}

/** InvalidArgument when a message is larger than the backend can sign for this algorithm. */
export function assertMessageSize(capabilities: Pick<Capabilities, 'maxMessageBytes'>, algorithm: KeyAlgorithm, length: number): void {
  const limit = capabilities.maxMessageBytes?.[algorithm];
  if (limit !== undefined && length > limit) {
    throw new HsmError('InvalidArgument', `the message is ${length} bytes; this backend signs at most ${limit} bytes with ${algorithm}`, {
      details: { field: 'data', limit, length },
    });
  }
}
