import { parseWithSchema } from '@olocus/hsm-core';
import { z } from 'zod';
import { VENDOR_NAMES } from './vendors.js';

const secretSourceSchema = z.union([z.object({ env: z.string().min(1) }).strict(), z.object({ file: z.string().min(1) }).strict()], {
  errorMap: () => ({ message: 'must be { env: "VARIABLE" } or { file: "/path" } (the PIN itself never goes in config)' }),
});

const ms = (name: string, min: number) => z.number({ invalid_type_error: `${name} must be a number of milliseconds` }).int().min(min);

export const sessionPoolSchema = z
  .object({
    /** Sessions opened at start and kept open. */
    minSessions: z.number().int().min(0).default(1),
    /** Ceiling of pooled sessions (the anchor session is extra); capped by the token's ulMaxSessionCount. */
    maxSessions: z.number().int().min(1).max(1024).default(4),
    /** Idle sessions above minSessions close after this long; 0 keeps them. */
    idleTimeout: ms('idleTimeout', 0).default(60_000),
    /** A caller waiting longer than this for a session gets SessionPoolExhausted. */
    acquireTimeout: ms('acquireTimeout', 1).default(5_000),
    /** Idle sessions are checked with C_GetSessionInfo this often; 0 disables. */
    healthCheckInterval: ms('healthCheckInterval', 0).default(30_000),
    /** Retries after a dead session or a lost login (never after a wrong PIN or a caller error). */
    retryAttempts: z.number().int().min(0).max(5).default(1),
    /** Sessions older than this are closed when returned and replaced; 0 keeps them. */
    maxSessionAge: ms('maxSessionAge', 0).default(3_600_000),
    /** Sessions used this many times are closed when returned and replaced; 0 = no limit. */
    maxSessionUses: z.number().int().min(0).default(0),
  })
  .strict()
  .refine((p) => p.minSessions <= p.maxSessions, { message: 'minSessions must not exceed maxSessions', path: ['minSessions'] });

/**
 * The operator's statement about the module's FIPS 140 validation (CMVP certificate, level,
 * whether the module is run in its approved mode). PKCS#11 has no standard way to read these from
 * a device, so they are reported with evidence 'attested', never 'measured', and only when the
 * device that answers matches the vendor profile.
 */
export const attestationSchema = z
  .object({
    standard: z.enum(['FIPS 140-2', 'FIPS 140-3']),
    level: z.union([z.literal(1), z.literal(2), z.literal(3), z.literal(4)]),
    /** CMVP certificate number, e.g. "4962". */
    certificate: z.string().regex(/^[0-9A-Za-z#-]{1,16}$/, 'must be a CMVP certificate number such as "4962"').optional(),
    certificateStatus: z.enum(['active', 'historical', 'revoked', 'unknown']).optional(),
    /** Whether the module is operated in its FIPS-approved mode (partition/cluster policy). */
    approvedMode: z.boolean(),
    eddsaValidated: z.boolean().optional(),
    /** Who made the statement and when, for the report (e.g. "security team, 2026-11 audit"). */
    statedBy: z.string().min(1).max(200).optional(),
  })
  .strict();

export type FipsAttestation = z.output<typeof attestationSchema>;

export const pkcs11OptionsSchema = z
  .object({
    /** PKCS#11 module path; default: the first existing path of the vendor profile. */
    libraryPath: z.string().min(1).optional(),
    slotId: z.number().int().min(0).optional(),
    tokenLabel: z.string().min(1).max(32).optional(),
    /** Where the user PIN comes from. Default { env: 'OLOCUS_HSM_PIN' }. */
    pin: secretSourceSchema.default({ env: 'OLOCUS_HSM_PIN' }),
    /** Open read-only sessions: sign/verify/list only, no generate/destroy. */
    readOnly: z.boolean().default(false),
    vendor: z.enum(VENDOR_NAMES).default('softhsm'),
    sessionPool: sessionPoolSchema.default({}),
    /**
     * Worker threads that run C_SignInit + C_Sign (see README, "Signing path and threading").
     * 0 = sign on the main thread (C_SignInit) + the libuv pool (C_Sign). Default: one per CPU,
     * at most maxSessions.
     */
    signThreads: z.number().int().min(0).max(64).optional(),
    /**
     * Whether the module reaches its device over a network (or is otherwise slow to answer): then
     * it is loaded and called only on a module thread, every call has a deadline, and nothing is
     * signed inline. Default: true for p11-kit-client.so and every hardware vendor profile.
     */
    remote: z.boolean().optional(),
    /** Deadlines (ms) per operation kind on a remote module; past one the caller gets Timeout (retryable). */
    deadlines: z
      .object({
        sign: ms('deadlines.sign', 1).optional(),
        generate: ms('deadlines.generate', 1).optional(),
        find: ms('deadlines.find', 1).optional(),
        login: ms('deadlines.login', 1).optional(),
        session: ms('deadlines.session', 1).optional(),
        admin: ms('deadlines.admin', 1).optional(),
      })
      .strict()
      .optional(),
    /**
     * Where signatures are made on a local module (see README, "Adaptive dispatch"): 'auto' measures
     * each key's operation time and signs short ones inline (bounded batches per event-loop turn),
     * long ones on sign threads; 'inline' and 'threads' force one path (tests, benchmarks).
     * Remote modules always sign on their module thread.
     */
    dispatch: z.enum(['auto', 'inline', 'threads']).default('auto'),
    /** Inline signing allowed per event-loop turn (ms) before the rest waits for the next turn or goes to a thread. */
    inlineBudgetMs: z.number().min(0.05).max(100).default(1),
    /**
     * CKA_LABEL of the backup key-encryption key on this token (a CKA_TRUSTED AES key put there by
     * the security officer with createBackupKek / enrollBackupKek): exportKey wraps under it,
     * importKey unwraps under it.
     */
    backupKekLabel: z.string().min(1).max(64).default('olocus-backup-kek'),
    /** The operator's FIPS 140 statement, reported as 'attested' (see attestationSchema). */
    attestation: attestationSchema.optional(),
  })
  .strict()
  .superRefine((o, ctx) => {
    if (o.slotId === undefined && o.tokenLabel === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['tokenLabel'], message: 'one of slotId or tokenLabel is required' });
    }
  });

export type Pkcs11Options = z.output<typeof pkcs11OptionsSchema>;
export type Pkcs11OptionsInput = z.input<typeof pkcs11OptionsSchema>;
export type SessionPoolOptions = z.output<typeof sessionPoolSchema>;

/** Validates raw options; failures are HsmError('InvalidConfiguration') naming the field. */
export function parsePkcs11Options(raw: unknown): Pkcs11Options {
  return parseWithSchema(pkcs11OptionsSchema, raw, 'pkcs11');
}
