import { z } from 'zod';
import { KEY_ALGORITHMS, parseWithSchema, type KeyAlgorithm } from '@olocus/hsm-core';

/** Every algorithm of the contract that Cloud KMS offers for ASYMMETRIC_SIGN keys (no P-521). */
export const GCP_ALGORITHMS: readonly KeyAlgorithm[] = KEY_ALGORITHMS.filter((a) => a !== 'ECDSA_P521');

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|\[?::1\]?)$/;

/** Cloud KMS accepts 24 hours to 120 days for a version's scheduled destruction. */
export const DESTROY_SCHEDULED_LIMITS = { minSeconds: 24 * 3600, maxSeconds: 120 * 24 * 3600 } as const;

const durationSchema = z
  .union([z.number(), z.string()], { invalid_type_error: 'must be seconds (a number) or a string such as "30d", "48h" or "86400s"' })
  .transform((value, ctx) => {
    let seconds: number | undefined;
    if (typeof value === 'number') seconds = value;
    else {
      const match = /^(\d+)(s|h|d)$/.exec(value.trim());
      if (match) seconds = Number(match[1]) * (match[2] === 'd' ? 86400 : match[2] === 'h' ? 3600 : 1);
    }
    if (seconds === undefined || !Number.isInteger(seconds)) {
      ctx.addIssue({ code: 'custom', message: 'must be whole seconds or a string such as "30d", "48h" or "86400s"' });
      return z.NEVER;
    }
    if (seconds < DESTROY_SCHEDULED_LIMITS.minSeconds || seconds > DESTROY_SCHEDULED_LIMITS.maxSeconds) {
      ctx.addIssue({ code: 'custom', message: 'must be from 24 hours to 120 days (Cloud KMS limits)' });
      return z.NEVER;
    }
    return seconds;
  });

const int = (what: string) => z.number({ invalid_type_error: `must be a number (${what})` }).int('must be an integer');

export const gcpOptionsSchema = z
  .object({
    /** Google Cloud project that holds the key ring. */
    projectId: z
      .string({ required_error: 'is required (the Google Cloud project id)', invalid_type_error: 'must be a string' })
      .regex(/^(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$/, 'must be a Google Cloud project id (6-30 lower-case letters, digits and hyphens)'),
    /** Cloud KMS location (`us-east1`, `europe-west1`, `global`...). */
    location: z
      .string({ required_error: 'is required (a Cloud KMS location such as us-east1)', invalid_type_error: 'must be a string' })
      .regex(/^[a-z0-9-]{1,63}$/, 'must be a Cloud KMS location such as us-east1 or global'),
    /** Key ring id (not its full resource name). */
    keyRing: z
      .string({ required_error: 'is required (the key ring id)', invalid_type_error: 'must be a string' })
      .regex(/^[a-zA-Z0-9_-]{1,63}$/, 'must be a key ring id: 1-63 letters, digits, "_" or "-"'),
    /** Create the key ring on initialize when it is missing (key rings cannot be deleted). */
    createKeyRing: z.boolean({ invalid_type_error: 'must be true or false' }).default(false),
    /** HSM (Cloud HSM) or SOFTWARE; SOFTWARE keys are reported as not hardware-backed, FIPS level none. */
    protectionLevel: z.enum(['HSM', 'SOFTWARE'], { errorMap: () => ({ message: 'must be "HSM" or "SOFTWARE"' }) }).default('HSM'),
    /** How long a destroyed version stays recoverable (Cloud KMS default: 30 days). */
    destroyScheduledDuration: durationSchema.optional(),
    /** Algorithms this instance offers (a subset of what Cloud KMS supports). */
    algorithms: z
      .array(z.enum(KEY_ALGORITHMS as unknown as [KeyAlgorithm, ...KeyAlgorithm[]]), { invalid_type_error: 'must be a list of algorithm names' })
      .min(1, 'must name at least one algorithm')
      .refine((list) => !list.includes('ECDSA_P521'), 'cannot include ECDSA_P521: Cloud KMS has no P-521 keys')
      .optional(),
    /** Endpoint host (default cloudkms.googleapis.com); tests point it at an emulator. */
    apiEndpoint: z.string({ invalid_type_error: 'must be a host name' }).regex(/^[A-Za-z0-9.:[\]-]{1,253}$/, 'must be a host name without scheme or path').optional(),
    port: int('a TCP port').min(1).max(65535).optional(),
    /**
     * Plaintext gRPC without credentials: for emulators on this machine only, so it is refused
     * unless apiEndpoint is a loopback address.
     */
    insecure: z.boolean({ invalid_type_error: 'must be true or false' }).default(false),
    /** Calls in flight at once; more wait in line. */
    maxConcurrency: int('calls in flight').min(1).max(1024).default(64),
    /** Deadline of one attempt of one call. */
    requestTimeoutMs: int('milliseconds').min(100).max(600_000).default(10_000),
    /** Total time a call may spend retrying throttling and unavailability (with backoff and jitter). */
    retryBudgetMs: int('milliseconds').min(0).max(600_000).default(30_000),
    /** Longest wait for an HSM key version to leave PENDING_GENERATION. */
    keyGenerationTimeoutMs: int('milliseconds').min(1000).max(1_800_000).default(180_000),
    /** How long a resolved key (its version, state and labels) is reused before Cloud KMS is asked again. */
    keyCacheTtlMs: int('milliseconds').min(0).max(3_600_000).default(30_000),
  })
  .strict()
  .superRefine((options, ctx) => {
    if (options.insecure && (options.apiEndpoint === undefined || !LOOPBACK.test(options.apiEndpoint))) {
      ctx.addIssue({ code: 'custom', path: ['insecure'], message: 'is allowed only with a loopback apiEndpoint (127.0.0.1, localhost, ::1): it sends calls in plaintext without credentials' });
    }
    if (options.insecure && options.port === undefined) ctx.addIssue({ code: 'custom', path: ['port'], message: 'is required with insecure (the emulator port)' });
  });

export type GcpKmsBackendOptions = z.output<typeof gcpOptionsSchema>;
export type GcpKmsBackendOptionsInput = z.input<typeof gcpOptionsSchema>;

export function parseGcpOptions(raw: unknown): GcpKmsBackendOptions {
  return parseWithSchema(gcpOptionsSchema, raw ?? {}, 'backend.options');
}
