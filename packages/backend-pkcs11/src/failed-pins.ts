import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { HsmError } from '@olocus/hsm-core';

/**
 * Why: every C_Login with a wrong PIN counts against the token's retry limit, and a supervisor
 * that re-initialises after LoginFailed (a restart loop, `HsmManager.initialize()` called
 * again) builds a new backend that would present the same wrong PIN again, until the token
 * locks. So the process remembers, per module + token (the login scope), an HMAC of the PIN the
 * token refused, under a random key that never leaves memory, and a PIN with that HMAC is not
 * sent to the token again. A different PIN (the operator fixed the secret) is tried; a
 * successful login forgets the record. Nothing is written to disk.
 */
const key = randomBytes(32);
const refused = new Map<string, Buffer>();

function digestOf(scope: string, pin: string): Buffer {
  return createHmac('sha256', key).update(scope, 'utf8').update('\u0000').update(pin, 'utf8').digest();
}

/** Throws LoginFailed (without calling the token) when this exact PIN was refused for `scope` before. */
export function assertPinNotRefused(scope: string, pin: string, tokenLabel: string): void {
  const known = refused.get(scope);
  if (!known || !timingSafeEqual(known, digestOf(scope, pin))) return;
  throw new HsmError(
    'LoginFailed',
    `login to token '${tokenLabel}' not attempted: the token refused this same PIN earlier in this process, and it is not tried again until the PIN changes (retries would lock the token); fix the PIN source and retry`,
    { retryable: false, details: { tokenLabel, rv: 'CKR_PIN_INCORRECT', notAttempted: true } },
  );
}

/** Records that the token refused `pin` for `scope` (CKR_PIN_INCORRECT). */
export function rememberRefusedPin(scope: string, pin: string): void {
  refused.set(scope, digestOf(scope, pin));
}

/** A login on `scope` succeeded: the refused PIN, if any, is history. */
export function forgetRefusedPin(scope: string): void {
  refused.delete(scope);
}

/** How many login scopes have a refused PIN on record (tests, diagnostics). */
export function refusedPinScopes(): number {
  return refused.size;
}
