import { HsmError, isHsmError, type HsmErrorCode } from '@olocus/hsm-core';

/** Where the SDK's default chain looks, for an AuthenticationFailed message (names only, no values). */
export function credentialSources(profile?: string): string {
  return [
    'environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN)',
    `shared config and credentials files (AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/config and ~/.aws/credentials; profile ${profile ?? process.env.AWS_PROFILE ?? 'default'}), including SSO and credential_process`,
    'web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN)',
    'container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI)',
    `instance metadata${process.env.AWS_EC2_METADATA_DISABLED === 'true' ? ' (disabled by AWS_EC2_METADATA_DISABLED=true)' : ''}`,
  ].join('; ');
}

const AUTH_REJECTED = new Set([
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'IncompleteSignature',
  'IncompleteSignatureException',
  'MissingAuthenticationToken',
  'MissingAuthenticationTokenException',
  'InvalidClientTokenId',
  'ExpiredTokenException',
  'ExpiredToken',
  'SignatureDoesNotMatch',
  'InvalidAccessKeyId',
]);
const THROTTLED = new Set(['ThrottlingException', 'Throttling', 'LimitExceededException', 'TooManyRequestsException', 'RequestLimitExceeded']);
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED', 'UND_ERR_SOCKET']);

export interface AwsErrorContext {
  /** The API operation, e.g. `Sign`. */
  operation: string;
  /** The service, for messages: `AWS KMS`, `AWS CloudHSM`. */
  service: string;
  /** Key or cluster the call was about (an id, alias or ARN: never a secret). */
  subject?: string;
  /** The code for a failure nothing more specific describes. */
  fallback: HsmErrorCode;
  profile?: string;
}

/** How a failure is retried: throttling and transient network / server faults only. */
export type RetryClass = 'throttled' | 'transient' | 'final';

export function retryClassOf(error: unknown): RetryClass {
  const e = error as { name?: string; code?: string; $metadata?: { httpStatusCode?: number }; $retryable?: unknown };
  const name = e?.name ?? '';
  if (THROTTLED.has(name) || e?.$metadata?.httpStatusCode === 429) return 'throttled';
  if (isNetworkFailure(error)) return 'transient';
  const status = e?.$metadata?.httpStatusCode;
  if (name === 'KMSInternalException' || name === 'DependencyTimeoutException' || name === 'InternalFailureException' || name === 'CloudHsmInternalFailureException' || name === 'ServiceUnavailableException') return 'transient';
  if (typeof status === 'number' && status >= 500 && !AUTH_REJECTED.has(name)) return 'transient';
  return 'final';
}

function isNetworkFailure(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current; depth++) {
    const e = current as { name?: string; code?: string; cause?: unknown };
    if (e.code && NETWORK_CODES.has(e.code)) return true;
    if (e.name === 'TimeoutError' || e.name === 'RequestTimeout' || e.name === 'AbortError') return true;
    current = e.cause;
  }
  return false;
}

/** An AWS message, shortened and stripped of anything that looks like a credential. */
function awsMessage(error: unknown): string {
  const raw = String((error as { message?: unknown })?.message ?? '').replace(/\s+/g, ' ');
  const cleaned = raw.replace(/(AKIA|ASIA)[A-Z0-9]{12,}/g, '[access key id]').replace(/[A-Za-z0-9+/=]{40,}/g, '[redacted]');
  return cleaned.length > 300 ? `${cleaned.slice(0, 300)}…` : cleaned;
}

/** Maps an SDK or network failure to the contract's error codes (the table in the README). */
export function mapAwsError(error: unknown, context: AwsErrorContext, extra: { attempts?: number; elapsedMs?: number } = {}): HsmError {
  if (isHsmError(error)) return error;
  const e = error as { name?: string; code?: string; $metadata?: { httpStatusCode?: number; requestId?: string } };
  const name = e?.name ?? 'Error';
  const about = context.subject ? ` for ${context.subject}` : '';
  const details: Record<string, string | number | boolean | undefined> = {
    operation: context.operation,
    awsError: name,
    ...(context.subject ? { subject: context.subject } : {}),
    ...(e?.$metadata?.requestId ? { requestId: e.$metadata.requestId } : {}),
    ...(extra.attempts !== undefined ? { attempts: extra.attempts } : {}),
  };
  const make = (code: HsmErrorCode, message: string, retryable?: boolean, more: Record<string, string | number | boolean> = {}) =>
    new HsmError(code, message, { cause: error, details: { ...details, ...more }, ...(retryable === undefined ? {} : { retryable }) });

  if (name === 'CredentialsProviderError' || name === 'ProviderError' || name === 'TokenProviderError') {
    return make('AuthenticationFailed', `${context.service} ${context.operation}: no AWS credentials were found. The SDK's default chain looked in: ${credentialSources(context.profile)}. Provide credentials through one of them (never in the Olocus config file)`, false, { reason: 'credentials-not-found' });
  }
  if (AUTH_REJECTED.has(name)) {
    return make('AuthenticationFailed', `${context.service} rejected the credentials for ${context.operation} (${name}). Check the credentials the SDK's default chain found: ${credentialSources(context.profile)}`, false, { reason: 'credentials-rejected' });
  }
  if (name === 'AccessDeniedException' || name === 'AccessDenied') {
    return make('PermissionDenied', `${context.service} denied ${context.operation}${about}: ${awsMessage(error)}. Grant kms:${context.operation} to the caller in the key policy or IAM`, false);
  }
  if (name === 'NotFoundException') return make('KeyNotFound', `${context.service} has no key${about} (${context.operation}: ${awsMessage(error)})`, false);
  if (name === 'DisabledException') return make('KeyDisabled', `key${about} is disabled in ${context.service}; enable it (EnableKey) to ${context.operation}`, false, { state: 'disabled' });
  if (name === 'KMSInvalidStateException') {
    const pending = /pending ?deletion/i.test(awsMessage(error));
    return make(
      'KeyDisabled',
      pending ? `key${about} is pending deletion in ${context.service}; cancel the deletion (CancelKeyDeletion) to use it again` : `key${about} is not in a usable state in ${context.service} (${awsMessage(error)})`,
      false,
      { state: pending ? 'pending-deletion' : 'disabled' },
    );
  }
  if (name === 'AlreadyExistsException') return make('KeyAlreadyExists', `${context.service} ${context.operation}${about}: ${awsMessage(error)}`, false);
  const retry = retryClassOf(error);
  if (retry === 'throttled') {
    return make('DeviceUnavailable', `${context.service} kept throttling ${context.operation}${about} (${name})${extra.elapsedMs !== undefined ? ` for ${extra.elapsedMs} ms` : ''}; lower the request rate or raise the retry.totalTimeMs budget`, true, { reason: 'throttled' });
  }
  if (retry === 'transient') {
    const timedOut = /Timeout|Abort/.test(name) || (e?.code ?? '') === 'ETIMEDOUT';
    return make(
      'DeviceUnavailable',
      timedOut
        ? `${context.service} did not answer ${context.operation}${about} within the configured time; check the endpoint and network`
        : `${context.service} could not be reached for ${context.operation}${about} (${e?.code ?? name}); check the endpoint and network`,
      true,
      { reason: timedOut ? 'timeout' : 'unreachable' },
    );
  }
  if (name === 'ValidationException' || name === 'InvalidKeyUsageException' || name === 'UnsupportedOperationException' || name === 'InvalidArnException' || name === 'InvalidAliasNameException' || name === 'InvalidMarkerException' || name === 'TagException') {
    return make('InvalidArgument', `${context.service} refused ${context.operation}${about}: ${awsMessage(error)}`, false);
  }
  return make(context.fallback, `${context.service} ${context.operation}${about} failed: ${name}: ${awsMessage(error)}`);
}
