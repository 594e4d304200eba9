import { z } from 'zod';
import { parseWithSchema } from '@olocus/hsm-core';

/** Default environment variable holding the key store passphrase. */
export const DEFAULT_PASSPHRASE_ENV = 'OLOCUS_HSM_PASSPHRASE';

/** scrypt bounds, applied to options and to the parameters read back from a store header. */
export const SCRYPT_LIMITS = {
  /**
   * Lowest N a new store may be configured with (OWASP's scrypt floor). Stores written earlier
   * with a smaller N still open: their parameters are read from store.json (see storedMinN).
   */
  minN: 2 ** 15,
  /** Lowest N accepted in an existing store's header: what earlier versions allowed. */
  storedMinN: 2 ** 10,
  /** Default N for a new store: ≈0.4 s and 128 MiB once per initialize(). */
  defaultN: 2 ** 17,
  maxN: 2 ** 20,
  maxR: 32,
  maxP: 16,
  /** 128·N·r bytes of memory at most (1 GiB). */
  maxMemory: 2 ** 30,
} as const;

const isPowerOfTwo = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

const secretSourceSchema = z.union(
  [z.object({ env: z.string().min(1) }).strict(), z.object({ file: z.string().min(1) }).strict()],
  {
    errorMap: () => ({
      message: 'must be { env: "VARIABLE" } or { file: "/path/to/file" } (never the passphrase itself)',
    }),
  },
);

export const scryptOptionsSchema = z
  .object({
    N: z
      .number({ invalid_type_error: 'must be a number' })
      .int('must be an integer')
      .min(SCRYPT_LIMITS.minN, `must be at least ${SCRYPT_LIMITS.minN} (2^15); the default is ${SCRYPT_LIMITS.defaultN} (2^17)`)
      .max(SCRYPT_LIMITS.maxN, `must be at most ${SCRYPT_LIMITS.maxN}`)
      .refine(isPowerOfTwo, 'must be a power of two')
      .default(SCRYPT_LIMITS.defaultN),
    r: z.number({ invalid_type_error: 'must be a number' }).int('must be an integer').min(1).max(SCRYPT_LIMITS.maxR).default(8),
    p: z.number({ invalid_type_error: 'must be a number' }).int('must be an integer').min(1).max(SCRYPT_LIMITS.maxP).default(1),
  })
  .strict()
  .refine((s) => 128 * s.N * s.r <= SCRYPT_LIMITS.maxMemory, { message: 'N·r needs more than 1 GiB of memory', path: ['N'] });

/** Bytes of a master key (`masterKey`): 256 bits, as AES-256 itself. */
export const MASTER_KEY_BYTES = 32;

export const softwareOptionsSchema = z
  .object({
    /** The key store folder. */
    directory: z
      .string({ required_error: 'is required', invalid_type_error: 'must be a string (the key store folder)' })
      .min(1, 'must not be empty'),
    /**
     * Where the passphrase comes from; never the passphrase itself. The default
     * ({ env: OLOCUS_HSM_PASSPHRASE }) applies only when `masterKey` is not given.
     */
    passphrase: secretSourceSchema.optional(),
    /**
     * Instead of a passphrase: where a master key of 32 random bytes (base64) comes from, e.g. a
     * secrets manager. It has nothing to guess, so it is not stretched (HKDF-SHA256, not scrypt)
     * and a store opens in microseconds; never the key itself.
     */
    masterKey: secretSourceSchema.optional(),
    /** Create the directory on initialize when it is missing. */
    create: z.boolean({ invalid_type_error: 'must be true or false' }).default(true),
    /** scrypt cost for a new store (an existing store keeps the parameters in its header). */
    scrypt: scryptOptionsSchema.default({}),
    /**
     * How long a cached key is trusted before the key file is stat-ed again to notice a key
     * destroyed or replaced by another process. 0 checks on every use.
     */
    cacheRevalidateMs: z
      .number({ invalid_type_error: 'must be a number' })
      .int('must be an integer')
      .min(0)
      .max(3_600_000)
      .default(1000),
  })
  .strict()
  .superRefine((o, ctx) => {
    if (o.passphrase !== undefined && o.masterKey !== undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['masterKey'], message: 'give passphrase or masterKey, not both (a store is protected by one of them)' });
    }
  })
  .transform((o) => (o.masterKey === undefined && o.passphrase === undefined ? { ...o, passphrase: { env: DEFAULT_PASSPHRASE_ENV } } : o));

/** Options after validation and defaults. */
export type SoftwareBackendOptions = z.output<typeof softwareOptionsSchema>;
/** Options as written in config or passed to the constructor. */
export type SoftwareBackendOptionsInput = z.input<typeof softwareOptionsSchema>;

/** Validates raw options; failures are HsmError('InvalidConfiguration') naming the field. */
export function parseSoftwareOptions(raw: unknown, where = 'backend.options'): SoftwareBackendOptions {
  return parseWithSchema(softwareOptionsSchema, raw, where);
}
