import { status } from '@grpc/grpc-js';
import { HsmError, isHsmError, type HsmErrorCode } from '@olocus/hsm-core';

/** gRPC codes that mean "try again later": throttling, a server or network going away, a deadline. */
export const RETRYABLE_CODES: ReadonlySet<number> = new Set([status.RESOURCE_EXHAUSTED, status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);

export function grpcCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' && code >= 0 && code <= 16 ? code : undefined;
}

export function grpcCodeName(code: number): string {
  return (status as unknown as Record<number, string>)[code] ?? `code ${code}`;
}

/** The server's own words, bounded: they name resources, never secrets, but may be long. */
function serverText(error: unknown): string {
  const details = (error as { details?: unknown }).details;
  const text = typeof details === 'string' && details.length > 0 ? details : error instanceof Error ? error.message : String(error);
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

/** Where Application Default Credentials look, for the message of an AuthenticationFailed. */
export function adcSearchDescription(env: Record<string, string | undefined> = process.env): string {
  const file = env.GOOGLE_APPLICATION_CREDENTIALS ? `GOOGLE_APPLICATION_CREDENTIALS (${env.GOOGLE_APPLICATION_CREDENTIALS})` : 'GOOGLE_APPLICATION_CREDENTIALS (unset)';
  const gcloud = env.CLOUDSDK_CONFIG ? `${env.CLOUDSDK_CONFIG}/application_default_credentials.json` : '~/.config/gcloud/application_default_credentials.json';
  const metadata = env.METADATA_SERVER_DETECTION === 'none' ? 'the metadata server (skipped: METADATA_SERVER_DETECTION=none)' : 'the GCE/GKE metadata server';
  return `Application Default Credentials looked at ${file}, ${gcloud} and ${metadata}`;
}

function looksLikeCredentialFailure(error: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  return /default credentials|could not refresh access token|invalid_grant|credentials/i.test(message);
}

export interface MapContext {
  /** What was being done, e.g. "sign with projects/.../cryptoKeyVersions/1". */
  operation: string;
  /** Code for a failure without a more specific meaning. */
  fallback: HsmErrorCode;
  keyId?: string;
  env?: Record<string, string | undefined>;
}

/** Maps a Cloud KMS failure to the contract's codes; an HsmError passes through. */
export function mapGcpError(error: unknown, context: MapContext): HsmError {
  if (isHsmError(error)) return error;
  const code = grpcCode(error);
  const details = { operation: context.operation, ...(context.keyId ? { keyId: context.keyId } : {}), ...(code !== undefined ? { grpcCode: grpcCodeName(code) } : {}) };
  if (code === undefined) {
    if (looksLikeCredentialFailure(error)) {
      return new HsmError('AuthenticationFailed', `Cloud KMS credentials are missing or unusable for ${context.operation}: ${adcSearchDescription(context.env)}. Set GOOGLE_APPLICATION_CREDENTIALS, run \`gcloud auth application-default login\`, or use workload identity`, { cause: error, details });
    }
    return new HsmError(context.fallback, `${context.operation} failed: ${serverText(error)}`, { cause: error, details });
  }
  const text = `${context.operation} failed (${grpcCodeName(code)}): ${serverText(error)}`;
  switch (code) {
    case status.NOT_FOUND:
      return new HsmError('KeyNotFound', text, { cause: error, details });
    case status.ALREADY_EXISTS:
      return new HsmError('KeyAlreadyExists', text, { cause: error, details });
    case status.FAILED_PRECONDITION:
      return new HsmError('KeyDisabled', `${text} (the key version is disabled, scheduled for destruction or destroyed)`, { cause: error, details });
    case status.PERMISSION_DENIED:
      return new HsmError('PermissionDenied', `${text}; grant the caller roles/cloudkms.signerVerifier (and roles/cloudkms.admin to create keys) on the key ring`, { cause: error, details });
    case status.UNAUTHENTICATED:
      return new HsmError('AuthenticationFailed', `${text}; ${adcSearchDescription(context.env)}`, { cause: error, details });
    case status.INVALID_ARGUMENT:
    case status.OUT_OF_RANGE:
      return new HsmError('InvalidArgument', text, { cause: error, details });
    case status.DEADLINE_EXCEEDED:
    case status.CANCELLED:
      return new HsmError('Timeout', text, { cause: error, details, retryable: true });
    case status.RESOURCE_EXHAUSTED:
      return new HsmError('DeviceUnavailable', `${text}; Cloud KMS throttled the calls (quota): lower the request rate or raise the quota`, { cause: error, details, retryable: true });
    case status.UNAVAILABLE:
      return new HsmError('DeviceUnavailable', text, { cause: error, details, retryable: true });
    case status.UNIMPLEMENTED:
      return new HsmError('UnsupportedAlgorithm', text, { cause: error, details });
    default:
      return new HsmError(context.fallback, text, { cause: error, details });
  }
}
