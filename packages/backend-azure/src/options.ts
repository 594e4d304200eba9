import { z } from 'zod';
import { parseWithSchema } from '@olocus/hsm-core';

/** API versions Key Vault and Managed HSM serve for keys (the SDK's default is the newest). */
export const SERVICE_VERSIONS = ['7.2', '7.3', '7.4', '7.5', '7.6', '2025-07-01'] as const;

const secretSourceSchema = z.union(
  [z.object({ env: z.string().min(1) }).strict(), z.object({ file: z.string().min(1) }).strict()],
  { errorMap: () => ({ message: 'must be { env: "VARIABLE" } or { file: "/path/to/file" } (never the secret itself)' }) },
);

const vaultUrlSchema = z
  .string({ required_error: 'is required (https://NAME.vault.azure.net or https://NAME.managedhsm.azure.net)', invalid_type_error: 'must be a string' })
  .refine((value) => {
    try {
      const url = new URL(value);
      // Key Vault is HTTPS only: a bearer token must never travel in clear text.
      return url.protocol === 'https:' && (url.pathname === '/' || url.pathname === '') && !url.search && !url.hash && !url.username;
    } catch {
      return false;
    }
  }, 'must be an https URL with no path, e.g. https://NAME.vault.azure.net');

const credentialSchema = z.union(
  [
    z.object({ type: z.literal('default') }).strict(),
    z
      .object({
        type: z.literal('client-secret').optional(),
        tenantId: z.string().min(1, 'must not be empty'),
        clientId: z.string().min(1, 'must not be empty'),
        clientSecret: secretSourceSchema,
        /** Sovereign clouds (login.microsoftonline.us...). */
        authorityHost: z.string().url().optional(),
      })
      .strict(),
  ],
  {
    errorMap: () => ({
      message: 'must be { type: "default" } or { tenantId, clientId, clientSecret: { env | file } } (never the secret itself)',
    }),
  },
);

export const azureOptionsSchema = z
  .object({
    vaultUrl: vaultUrlSchema,
    /** Create EC-HSM / RSA-HSM keys (Key Vault Premium). A Managed HSM always does. */
    hsm: z.boolean({ invalid_type_error: 'must be true or false' }).default(false),
    serviceVersion: z.enum(SERVICE_VERSIONS, { errorMap: () => ({ message: `must be one of ${SERVICE_VERSIONS.join(', ')}` }) }).optional(),
    /** Requests in flight at once; further calls wait for a slot. */
    maxConcurrency: z.number({ invalid_type_error: 'must be a number' }).int('must be an integer').min(1).max(1024).default(64),
    /** Whole-operation bound, retries and Retry-After waits included. */
    requestTimeoutMs: z.number({ invalid_type_error: 'must be a number' }).int('must be an integer').min(100).max(600_000).default(30_000),
    /** Retries of one request (throttling, 5xx, network) inside requestTimeoutMs. */
    maxRetries: z.number({ invalid_type_error: 'must be a number' }).int('must be an integer').min(0).max(10).default(3),
    /** First retry delay; later ones grow exponentially. */
    retryDelayMs: z.number({ invalid_type_error: 'must be a number' }).int('must be an integer').min(0).max(60_000).default(500),
    /** destroyKey purges after the soft delete (needs the purge permission). */
    purgeOnDestroy: z.boolean({ invalid_type_error: 'must be true or false' }).default(false),
    /**
     * How long a resolved key (its public key, attributes and crypto client) is reused before the
     * vault is asked again; a key disabled elsewhere is refused by the vault meanwhile.
     */
    keyCacheTtlMs: z.number({ invalid_type_error: 'must be a number' }).int('must be an integer').min(0).max(3_600_000).default(30_000),
    /** listKeys also returns keys made outside the library (named by their key name). */
    listForeignKeys: z.boolean({ invalid_type_error: 'must be true or false' }).default(false),
    credential: credentialSchema.default({ type: 'default' }),
    /**
     * Accept a 401 challenge naming a resource that is not the vault's domain. Needed for
     * emulators on loopback; leave false against Azure.
     */
    disableChallengeResourceVerification: z.boolean({ invalid_type_error: 'must be true or false' }).default(false),
  })
  .strict();

export type AzureBackendOptions = z.output<typeof azureOptionsSchema>;
export type AzureBackendOptionsInput = z.input<typeof azureOptionsSchema>;

export function parseAzureOptions(raw: unknown, where = 'backend.options'): AzureBackendOptions {
  return parseWithSchema(azureOptionsSchema, raw ?? {}, where);
}

/** A Managed HSM pool keeps every key in its HSMs, whatever `hsm` says. */
export function isManagedHsmUrl(vaultUrl: string): boolean {
  return new URL(vaultUrl).hostname.toLowerCase().endsWith('.managedhsm.azure.net');
}
