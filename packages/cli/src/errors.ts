/**
 * Errors and exit codes of the command. Kept free of heavy imports: bin.ts loads it at start-up.
 */

/** Exit codes: 0 success; 1 a negative answer (invalid signature, unhealthy backend, failed demo check); 2 an error. */
export const EXIT_OK = 0;
export const EXIT_NEGATIVE = 1;
export const EXIT_ERROR = 2;

/** Codes the CLI itself reports, besides the HsmError codes of @olocus/hsm-core. */
export type CliErrorCode =
  | 'UsageError'
  | 'InvalidArgument'
  | 'InvalidConfiguration'
  | 'ConfigNotFound'
  | 'ConfigExists'
  | 'StoreNotFound'
  | 'FileNotFound'
  | 'IoError'
  | 'InvalidSignatureEncoding'
  | 'Internal';

export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    /** A CliErrorCode, or an HsmError code carried through with a more specific message. */
    readonly code: CliErrorCode | (string & {}),
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
  }
}

export interface ErrorSummary {
  code: string;
  message: string;
  retryable?: boolean;
  details?: Record<string, unknown>;
}

/** HsmError, detected without importing core (start-up stays light). */
function isHsmErrorLike(error: unknown): error is { code: string; message: string; retryable: boolean; details: Record<string, unknown> } {
  const e = error as { name?: unknown; code?: unknown };
  return typeof e === 'object' && e !== null && e.name === 'HsmError' && typeof e.code === 'string';
}

export function summarize(error: unknown): ErrorSummary {
  if (error instanceof CliError) return { code: error.code, message: redactText(error.message) };
  if (isHsmErrorLike(error)) {
    const summary: ErrorSummary = { code: error.code, message: redactText(error.message), retryable: error.retryable };
    if (error.details && Object.keys(error.details).length > 0) summary.details = redactValue({ ...error.details }) as Record<string, unknown>;
    return summary;
  }
  const e = error as NodeJS.ErrnoException;
  if (e && typeof e === 'object' && typeof e.code === 'string' && typeof e.message === 'string') {
    return { code: 'IoError', message: redactText(e.message) };
  }
  return { code: 'Internal', message: redactText(e instanceof Error ? e.message : String(error)) };
}

/**
 * Secrets the process has seen (environment values, secrets read for a backend). Secrets are
 * kept out of messages where they are made; as a last line of defence, error text (and only
 * error text: never a command's data output) is scrubbed of them by `summarize` / `redact`.
 */
const secrets = new Set<string>();

export function rememberSecret(value: string | undefined): void {
  if (value && value.length >= 4) secrets.add(value);
}

/** A database connection string, and the password inside it (raw and URL-decoded) when it is a URL. */
export function rememberConnectionString(connectionString: string): void {
  rememberSecret(connectionString);
  try {
    const password = new URL(connectionString).password;
    if (password) {
      rememberSecret(password);
      rememberSecret(decodeURIComponent(password));
    }
  } catch {
    // Not a URL (a libpq key=value string): the whole string is remembered above.
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Replaces each remembered secret that stands on its own in error text. A secret inside a longer
 * run of letters and digits (a 4-digit PIN inside a hex digest, a base64 signature, a number) is
 * not a disclosure of the secret and is left alone, so a short PIN cannot mangle a message.
 */
function redactText(text: string): string {
  let out = text;
  for (const s of secrets) {
    if (!out.includes(s)) continue;
    out = out.replace(new RegExp(`(?<![A-Za-z0-9])${escapeRegExp(s)}(?![A-Za-z0-9])`, 'g'), '[REDACTED]');
  }
  return out;
}

function redactValue(value: unknown): unknown {
  if (typeof value === 'string') return redactText(value);
  if (Array.isArray(value)) return value.map(redactValue);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactValue(v)]));
  return value;
}

/**
 * Error text only (the error line on stderr, the `{"error": ...}` document): never apply it to a
 * command's data output. A JSON document keeps its shape — only its string values are scrubbed.
 */
export function redact(text: string): string {
  const start = text.trimStart()[0];
  if (start === '{' || start === '[') {
    try {
      return JSON.stringify(redactValue(JSON.parse(text)), null, /\n\s/.test(text.trim()) ? 2 : undefined);
    } catch {
      // not JSON after all: scrub it as text
    }
  }
  return redactText(text);
}

/** Reads a file for a flag; a missing file is a clear FileNotFound naming the flag and the path. */
export function fileError(flag: string, path: string, cause: unknown): CliError {
  const code = (cause as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return new CliError('FileNotFound', `${flag}: file not found: ${path}`, { cause });
  if (code === 'EISDIR') return new CliError('InvalidArgument', `${flag}: ${path} is a directory`, { cause });
  if (code === 'EACCES' || code === 'EPERM') return new CliError('IoError', `${flag}: permission denied: ${path}`, { cause });
  return new CliError('IoError', `${flag}: cannot access ${path} (${code ?? (cause as Error)?.message})`, { cause });
}
