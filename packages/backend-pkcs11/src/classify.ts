import { CKR } from './constants.js';

/**
 * What the backend does about a failed PKCS#11 call. See the README's table.
 * - `session`: the session is dead or stuck → evict it, retry once on a fresh one.
 * - `login`: the token forgot the login → one shared re-login, then retry.
 * - `device`: the module, token or connection is gone → open the circuit, recover in the background.
 * - `ambiguous`: CKR_GENERAL_ERROR / CKR_FUNCTION_FAILED → a canary call decides between `device` and `operation`.
 * - `staleObject`: a cached object handle no longer exists → drop the cache entry, look the key up again.
 * - `busy`: the token is out of sessions or memory → retryable, no circuit.
 * - `pin`: a login failure: never retried.
 * - `caller`: bad arguments, mechanism or template → not retried, not retryable.
 */
export type FailureClass = 'session' | 'login' | 'device' | 'ambiguous' | 'staleObject' | 'busy' | 'pin' | 'caller';

const CLASSES: ReadonlyMap<number, FailureClass> = new Map<number, FailureClass>([
  [CKR.SESSION_HANDLE_INVALID, 'session'],
  [CKR.SESSION_CLOSED, 'session'],
  [CKR.OPERATION_ACTIVE, 'session'],
  [CKR.USER_NOT_LOGGED_IN, 'login'],
  [CKR.DEVICE_ERROR, 'device'],
  [CKR.DEVICE_REMOVED, 'device'],
  [CKR.TOKEN_NOT_PRESENT, 'device'],
  [CKR.TOKEN_NOT_RECOGNIZED, 'device'],
  [CKR.CRYPTOKI_NOT_INITIALIZED, 'device'],
  [CKR.GENERAL_ERROR, 'ambiguous'],
  [CKR.FUNCTION_FAILED, 'ambiguous'],
  [CKR.KEY_HANDLE_INVALID, 'staleObject'],
  [CKR.OBJECT_HANDLE_INVALID, 'staleObject'],
  [CKR.SESSION_COUNT, 'busy'],
  [CKR.DEVICE_MEMORY, 'busy'],
  [CKR.PIN_INCORRECT, 'pin'],
  [CKR.PIN_INVALID, 'pin'],
  [CKR.PIN_LEN_RANGE, 'pin'],
  [CKR.PIN_EXPIRED, 'pin'],
  [CKR.PIN_LOCKED, 'pin'],
  [CKR.USER_PIN_NOT_INITIALIZED, 'pin'],
]);

const NAMES: ReadonlyMap<number, string> = new Map(Object.entries(CKR).map(([name, value]) => [value, `CKR_${name}`]));

/** The CK_RV carried by an error thrown by pkcs11js, or undefined for other errors. */
export function returnValueOf(error: unknown): number | undefined {
  const e = error as { name?: unknown; code?: unknown; message?: unknown } | null;
  if (!e || typeof e !== 'object') return undefined;
  if (typeof e.code === 'number' && typeof e.message === 'string' && /^CKR_/.test(e.message)) return e.code;
  return undefined;
}

/** `CKR_PIN_INCORRECT`, or `0x...` for vendor-defined codes. */
export function returnValueName(rv: number): string {
  return NAMES.get(rv) ?? `CKR_0x${rv.toString(16)}`;
}

/** Classifies a CK_RV (or anything thrown by pkcs11js). Non-PKCS#11 errors are `caller`. */
export function classifyReturnValue(rvOrError: number | unknown): FailureClass {
  const rv = typeof rvOrError === 'number' ? rvOrError : returnValueOf(rvOrError);
  if (rv === undefined) return 'caller';
  return CLASSES.get(rv) ?? 'caller';
}

/** The failure-classification table, for documentation and tests. */
export function classificationTable(): Array<{ rv: string; class: FailureClass }> {
  return [...CLASSES].map(([rv, cls]) => ({ rv: returnValueName(rv), class: cls }));
}
