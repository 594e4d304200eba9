/**
 * Every failure the library reports is an HsmError with a stable `code`.
 * Messages name fields and values but never a secret: callers may log them.
 */
export const HSM_ERROR_CODES = [
  'InvalidConfiguration',
  'InvalidArgument',
  'BackendNotInstalled',
  'UnknownBackend',
  'InitializationFailed',
  'NotInitialized',
  'Closed',
  'SlotNotFound',
  'TokenLabelMismatch',
  'TokenNotPresent',
  'SessionPoolExhausted',
  'SessionFailed',
  'LoginFailed',
  'PinLocked',
  'KeyNotFound',
  'KeyAlreadyExists',
  'KeyUsageNotAllowed',
  'KeyExpired',
  'KeyDisabled',
  'KeyUnavailable',
  'PermissionDenied',
  'AuthenticationFailed',
  'IntegrityError',
  'UnsupportedAlgorithm',
  'KeyGenerationFailed',
  'SigningFailed',
  'VerificationFailed',
  'InvalidSignatureEncoding',
  'DeviceUnavailable',
  'CircuitOpen',
  'StorageCorrupted',
  'IllegalStateTransition',
  'Conflict',
  'PolicyViolation',
  'WrongPassphrase',
  'Timeout',
  'Internal',
] as const;

export type HsmErrorCode = (typeof HSM_ERROR_CODES)[number];

export interface HsmErrorOptions {
  /** True when the same call may succeed if tried again (device restarting, pool busy). */
  retryable?: boolean;
  cause?: unknown;
  /** Non-secret context: field names, key ids, return-code names. */
  details?: Record<string, string | number | boolean | undefined>;
}

const RETRYABLE_BY_DEFAULT: ReadonlySet<HsmErrorCode> = new Set([
  'SessionPoolExhausted',
  'SessionFailed',
  'DeviceUnavailable',
  'CircuitOpen',
  'Timeout',
  'Conflict',
  'KeyUnavailable',
]);

export class HsmError extends Error {
  override readonly name = 'HsmError';
  readonly code: HsmErrorCode;
  readonly retryable: boolean;
  readonly details: Readonly<Record<string, string | number | boolean | undefined>>;

  constructor(code: HsmErrorCode, message: string, options: HsmErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? RETRYABLE_BY_DEFAULT.has(code);
    this.details = Object.freeze({ ...(options.details ?? {}) });
  }

  /** A plain object for `--json` output and logs. */
  toJSON(): { code: HsmErrorCode; message: string; retryable: boolean; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, retryable: this.retryable, details: { ...this.details } };
  }
}

/**
 * Recognises an HsmError by its shape, not by `instanceof`: a third-party backend may bring its
 * own copy of core (a second install, a bundler), and its errors must still be understood.
 */
export function isHsmError(value: unknown, code?: HsmErrorCode): value is HsmError {
  if (value instanceof HsmError) return code === undefined || value.code === code;
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as { name?: unknown; code?: unknown; retryable?: unknown };
  return (
    candidate.name === 'HsmError' &&
    typeof candidate.code === 'string' &&
    (HSM_ERROR_CODES as readonly string[]).includes(candidate.code) &&
    typeof candidate.retryable === 'boolean' &&
    (code === undefined || candidate.code === code)
  );
}

/**
 * Wrap anything thrown by a dependency. An HsmError passes through untouched so
 * the most specific classification wins.
 */
export function toHsmError(error: unknown, code: HsmErrorCode, message: string, options: Omit<HsmErrorOptions, 'cause'> = {}): HsmError {
  if (isHsmError(error)) return error;
  return new HsmError(code, message, { ...options, cause: error });
}
