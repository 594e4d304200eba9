import { HsmError, isHsmError } from '@olocus/hsm-core';

/** What the error mapper needs to know about the call that failed. */
export interface FailureContext {
  /** What was being done, for the message: "sign with key release-1". */
  action: string;
  keyId?: string;
  /** The credential's class name, named when it cannot get a token. */
  credentialType: string;
  timeoutMs: number;
  /** Our own deadline fired (as opposed to the caller's signal). */
  timedOut: boolean;
  /** Strings that must never appear in a message (a client secret read from config). */
  secrets: readonly string[];
}

interface RestLike {
  name?: string;
  message?: string;
  statusCode?: number;
  code?: string;
  response?: { headers?: { get?(name: string): string | undefined }; bodyAsText?: string | null };
  details?: { error?: { code?: string; message?: string; innererror?: { code?: string } } };
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'REQUEST_SEND_ERROR', 'UND_ERR_SOCKET']);
const CREDENTIAL_ERRORS = new Set(['CredentialUnavailableError', 'AuthenticationError', 'AggregateAuthenticationError', 'AuthenticationRequiredError']);

/** Removes known secrets and bounds the length: dependency messages end up in logs. */
export function scrub(text: string, secrets: readonly string[], max = 300): string {
  let out = text;
  for (const secret of secrets) if (secret.length >= 4) out = out.split(secret).join('[redacted]');
  // bearer tokens never belong in a message, whatever printed them
  out = out.replace(/Bearer\s+[A-Za-z0-9._~+/=-]+/g, 'Bearer [redacted]');
  return out.length > max ? `${out.slice(0, max)}…` : out;
}

function serviceMessage(error: RestLike): string {
  return error.details?.error?.message ?? error.message ?? '';
}

/** Translates whatever the Azure SDK threw into the library's typed error. */
export function mapAzureError(error: unknown, ctx: FailureContext): HsmError {
  if (isHsmError(error)) return error;
  const e = (error ?? {}) as RestLike;
  const details: Record<string, string | number | boolean | undefined> = { keyId: ctx.keyId };
  const what = ctx.action;

  if (e.name === 'AbortError' || (e.name === 'RestError' && /aborted/i.test(e.message ?? '') && e.statusCode === undefined)) {
    if (ctx.timedOut) {
      return new HsmError('DeviceUnavailable', `${what}: the vault did not answer within requestTimeoutMs (${ctx.timeoutMs} ms); check the network path to the vault or raise requestTimeoutMs`, {
        retryable: true,
        details: { ...details, timeoutMs: ctx.timeoutMs },
      });
    }
    return new HsmError('Timeout', `${what}: aborted by the caller`, { retryable: true, cause: error, details });
  }

  if (e.name && CREDENTIAL_ERRORS.has(e.name)) {
    // a chain's message repeats every link; say what each link answered, briefly
    const links = (error as { errors?: Array<{ name?: string; message?: string }> }).errors;
    const reason = Array.isArray(links) && links.length > 0
      ? links.map((l) => `${l.name ?? 'Error'}: ${(l.message ?? '').split('\n')[0]!.replace(/ To troubleshoot.*$/, '').slice(0, 160)}`).join(' | ')
      : `${e.name}: ${e.message ?? ''}`;
    return new HsmError(
      'AuthenticationFailed',
      `${what}: the credential ${ctx.credentialType} could not get a token for Key Vault (${scrub(reason, ctx.secrets, 900)}); check backend.options.credential and the identity's environment`,
      { retryable: false, details: { ...details, credential: ctx.credentialType } },
    );
  }

  const status = e.statusCode;
  if (typeof status === 'number') {
    const msg = scrub(serviceMessage(e), ctx.secrets);
    const code = e.details?.error?.code ?? e.code ?? '';
    const inner = e.details?.error?.innererror?.code ?? '';
    details.status = status;
    details.serviceCode = code || undefined;
    // some emulators answer 404 "not allowed on a disabled entity": the wording decides
    if ((status === 403 || status === 404 || status === 400) && (/disabled/i.test(msg) || /disabled/i.test(inner))) {
      return new HsmError('KeyDisabled', `${what}: the key is disabled (${msg || inner})`, { details });
    }
    if ((status === 403 || status === 400) && (/expired|not valid after/i.test(msg) || /expired/i.test(inner))) {
      return new HsmError('KeyExpired', `${what}: the key has expired (${msg || inner})`, { details });
    }
    if (status === 404) return new HsmError('KeyNotFound', `${what}: not found in the vault (${msg || code || 'HTTP 404'})`, { details });
    if (status === 401) {
      return new HsmError('AuthenticationFailed', `${what}: the vault refused the token of ${ctx.credentialType} (HTTP 401: ${msg || code}); check the identity's tenant and the vault's access`, {
        retryable: false,
        details: { ...details, credential: ctx.credentialType },
      });
    }
    if (status === 403) {
      return new HsmError('PermissionDenied', `${what}: forbidden by the vault's access policy or RBAC (${msg || code}); grant the identity the needed key permission`, {
        retryable: false,
        details,
      });
    }
    if (status === 409) return new HsmError('KeyAlreadyExists', `${what}: a key of that name exists or is deleted and not yet purged (${msg || code})`, { details });
    if (status === 429) {
      const retryAfter = e.response?.headers?.get?.('retry-after');
      return new HsmError('DeviceUnavailable', `${what}: the vault is throttling requests (HTTP 429) and still was after the retries allowed within ${ctx.timeoutMs} ms; slow down or raise maxConcurrency limits at the vault`, {
        retryable: true,
        details: { ...details, retryAfter },
      });
    }
    if (status === 400) {
      return new HsmError('InvalidArgument', `${what}: the vault refused the request (HTTP 400 ${code}: ${msg})`, { details });
    }
    if (status >= 500) {
      return new HsmError('DeviceUnavailable', `${what}: the vault failed (HTTP ${status} ${code}: ${msg})`, { retryable: true, details });
    }
    return new HsmError('Internal', `${what}: unexpected answer from the vault (HTTP ${status} ${code}: ${msg})`, { retryable: false, details });
  }

  if ((e.code && NETWORK_CODES.has(e.code)) || e.name === 'RestError') {
    return new HsmError('DeviceUnavailable', `${what}: cannot reach the vault (${e.code ?? 'network error'}: ${scrub(e.message ?? '', ctx.secrets)})`, {
      retryable: true,
      details: { ...details, network: e.code },
    });
  }
  return new HsmError('Internal', `${what}: ${e.name ?? 'error'}: ${scrub(e.message ?? String(error), ctx.secrets)}`, { retryable: false, details });
}
