import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { HsmError } from '@olocus/hsm-core';
import type { AsyncPkcs11 } from './module-thread.js';
import { classifyReturnValue, returnValueName, returnValueOf } from './classify.js';
import { CKR, CKU_USER } from './constants.js';
import { assertPinNotRefused, forgetRefusedPin, rememberRefusedPin } from './failed-pins.js';

/**
 * Why a ledger: PKCS#11 login state belongs to the application (the process) and the token, not
 * to a session or a backend instance. Once one instance has logged in, C_Login from any other
 * instance answers CKR_USER_ALREADY_LOGGED_IN *before* the module looks at the PIN (SoftHSM
 * does), so a second instance with a wrong PIN would be let in. C_Logout to re-check would log
 * the first instance out, and C_SetPIN(pin, pin) writes to the token and is refused by some PIN
 * policies. Instead the process remembers, in memory only, an HMAC of the PIN the token itself
 * accepted, under a random key, and an instance that finds the token already logged in must
 * present the same PIN (compared in constant time).
 *
 * What this proves: the instance holds the same secret that the token accepted for the login
 * currently open in this process (same module file, same token, same module generation).
 * What it cannot prove:
 * - that the PIN is still current on the token: after a PIN change elsewhere, the old login stays
 *   open, and an instance with the new (correct) PIN is refused until the old login ends;
 * - anything about a login made by code outside this library in the same process (another
 *   PKCS#11 user of the same module, or the same module loaded under another file name): the
 *   ledger has no record of it, and such an instance is refused rather than trusted.
 * The record lives only while an instance that proved the PIN is open, never on disk.
 */
interface LoginProof {
  readonly key: Buffer;
  readonly digest: Buffer;
  generation: number;
  holders: number;
}

const proofs = new Map<string, LoginProof>();

function digestOf(key: Buffer, pin: string): Buffer {
  return createHmac('sha256', key).update(pin, 'utf8').digest();
}

/** Which login a backend shares: the real module file (symlinks resolved) and the token. */
export function loginScope(libraryPath: string, slotNumber: number, tokenSerial: string, tokenLabel: string): string {
  let file = libraryPath;
  try {
    file = realpathSync(libraryPath);
  } catch {
    // keep the path as given: the module loaded, so it exists at least under that name
  }
  return JSON.stringify([file, slotNumber, tokenSerial, tokenSerial === '' ? tokenLabel : '']);
}

type Verdict = 'match' | 'mismatch' | 'unknown';

function verify(scope: string, generation: number, pin: string): Verdict {
  const proof = proofs.get(scope);
  if (!proof || proof.generation !== generation) return 'unknown';
  return timingSafeEqual(proof.digest, digestOf(proof.key, pin)) ? 'match' : 'mismatch';
}

/** Records the PIN the token has just accepted (C_Login returned CKR_OK). */
function record(scope: string, generation: number, pin: string): void {
  const key = randomBytes(32);
  const previous = proofs.get(scope);
  proofs.set(scope, { key, digest: digestOf(key, pin), generation, holders: previous?.holders ?? 0 });
}

/** Number of open instances holding a proven login on the scope (tests, diagnostics). */
export function loginHolders(scope: string): number {
  return proofs.get(scope)?.holders ?? 0;
}

export interface LoginTarget {
  p11: AsyncPkcs11;
  session: Buffer;
  scope: string;
  generation: number;
  tokenLabel: string;
}

/**
 * One instance's login state. `login()` is the only place C_Login is called; a wrong PIN (or a
 * PIN that cannot be proven against an existing login) is never tried again by this instance.
 */
export class LoginState {
  /** Set once a PIN is refused: the instance stays unusable (never lock a token by retrying). */
  fatal: HsmError | undefined;
  logins = 0;
  #held: string | undefined;

  async login(target: LoginTarget, pin: string | undefined): Promise<void> {
    if (this.fatal) throw this.fatal;
    if (pin === undefined) throw new HsmError('LoginFailed', 'no PIN available');
    try {
      assertPinNotRefused(target.scope, pin, target.tokenLabel);
    } catch (error) {
      throw this.refuse(error as HsmError);
    }
    this.logins++;
    try {
      await target.p11.C_Login(target.session, CKU_USER, pin);
      record(target.scope, target.generation, pin);
      forgetRefusedPin(target.scope);
    } catch (error) {
      const rv = returnValueOf(error);
      if (rv === CKR.USER_ALREADY_LOGGED_IN) {
        this.proveAgainstOpenLogin(target, pin);
      } else if (rv === CKR.PIN_LOCKED) {
        throw this.refuse(new HsmError('PinLocked', `the user PIN of token '${target.tokenLabel}' is locked; unlock it with the SO PIN`, { retryable: false, details: { rv: 'CKR_PIN_LOCKED' } }));
      } else if (rv === CKR.USER_PIN_NOT_INITIALIZED) {
        // No PIN was tried, so nothing is spent by asking again; and it is not final: SoftHSM
        // answers it for a moment while another process's C_Login rewrites the token file (CI saw
        // one of 25 start-ups beside three login loops fail so). Start-up asks again a few times.
        throw new HsmError('LoginFailed', `login to token '${target.tokenLabel}' failed: the user PIN is not initialised (the token's security officer sets it: pkcs11-tool --init-pin, or softhsm2-util --init-token --pin)`, {
          retryable: false,
          details: { rv: 'CKR_USER_PIN_NOT_INITIALIZED', tokenLabel: target.tokenLabel },
        });
      } else if (rv !== undefined && classifyReturnValue(rv) === 'pin') {
        if (rv === CKR.PIN_INCORRECT) rememberRefusedPin(target.scope, pin);
        const why = rv === CKR.PIN_INCORRECT ? 'the PIN is incorrect' : `the PIN was refused (${returnValueName(rv)})`;
        throw this.refuse(
          new HsmError('LoginFailed', `login to token '${target.tokenLabel}' failed: ${why}; not retried, so the token is not locked by retries`, {
            retryable: false,
            details: { rv: returnValueName(rv), tokenLabel: target.tokenLabel },
          }),
        );
      } else {
        throw error;
      }
    }
    this.hold(target.scope);
  }

  private proveAgainstOpenLogin(target: LoginTarget, pin: string): void {
    const verdict = verify(target.scope, target.generation, pin);
    if (verdict === 'match') return;
    const why =
      verdict === 'mismatch'
        ? 'the token is already logged in by another backend instance in this process with a different PIN, so this instance\'s PIN is wrong (or the PIN was changed since that login)'
        : 'the token is already logged in by code outside this library in this process, so this instance\'s PIN cannot be checked; close that login or use one backend instance';
    throw this.refuse(
      new HsmError('LoginFailed', `login to token '${target.tokenLabel}' failed: ${why}; not retried`, {
        retryable: false,
        details: { rv: 'CKR_USER_ALREADY_LOGGED_IN', tokenLabel: target.tokenLabel, proof: verdict },
      }),
    );
  }

  private refuse(error: HsmError): HsmError {
    this.fatal = error;
    return error;
  }

  private hold(scope: string): void {
    if (this.#held === scope) return;
    this.release();
    const proof = proofs.get(scope);
    if (!proof) return;
    proof.holders++;
    this.#held = scope;
  }

  /** The instance is leaving: the record goes with the last instance that proved the PIN. */
  release(): void {
    const scope = this.#held;
    this.#held = undefined;
    if (scope === undefined) return;
    const proof = proofs.get(scope);
    if (!proof) return;
    proof.holders--;
    if (proof.holders <= 0) proofs.delete(scope);
  }
}
