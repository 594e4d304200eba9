import { z } from 'zod';
import { parseWithSchema } from '@olocus/hsm-core';
import { AUDIT_EVENT_TYPES } from '../audit/types.js';

/**
 * Every date and threshold of COMPLIANCE-RULES.md is configuration, with the documented value
 * as the default (two anchors — NIST IR 8547 and SP 800-131A Rev 3 — are still drafts).
 *
 * Dates are `YYYY-MM-DD` (meaning the whole UTC day: "until 2030-12-31" lasts to
 * 2030-12-31T23:59:59.999Z) or a full ISO 8601 date-time with a zone.
 */

const DATE_ONLY = /^(\d{4})-(\d{2})-(\d{2})$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * The last instant a date setting covers: the end of the UTC day for `YYYY-MM-DD`, the instant
 * itself for a date-time. A rule whose condition starts "after D" applies when now > cutoff(D).
 */
export function cutoff(value: string): Date {
  const parsed = parseCutoff(value);
  if (!parsed) throw new TypeError(`not a date: ${JSON.stringify(value)}`);
  return parsed;
}

function parseCutoff(value: string): Date | undefined {
  const m = DATE_ONLY.exec(value);
  if (m) {
    const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
    const t = Date.UTC(y, mo - 1, d, 23, 59, 59, 999);
    const check = new Date(Date.UTC(y, mo - 1, d));
    // Reject 2030-02-31 and friends.
    if (check.getUTCFullYear() !== y || check.getUTCMonth() !== mo - 1 || check.getUTCDate() !== d) return undefined;
    return new Date(t);
  }
  if (DATE_TIME.test(value)) {
    const t = Date.parse(value);
    return Number.isNaN(t) ? undefined : new Date(t);
  }
  return undefined;
}

const dateSetting = z
  .string({ invalid_type_error: 'must be a date string (YYYY-MM-DD or an ISO 8601 date-time)' })
  .refine((v) => parseCutoff(v) !== undefined, { message: 'must be a date (YYYY-MM-DD) or an ISO 8601 date-time with a zone' });

const days = (min: number) => z.number({ invalid_type_error: 'must be a number of days' }).int('must be a whole number of days').min(min, `must be at least ${min}`);

const approvers = z.number({ invalid_type_error: 'must be a number of approvers' }).int('must be a whole number').min(1, 'must be at least 1').max(10);

/** Default key destruction methods of this repository's backends (FCS_CKM.4); other backends must be named in config. */
export const DEFAULT_DESTRUCTION_METHODS: Readonly<Record<string, string>> = Object.freeze({
  software: 'sealed key file unlinked and its directory fsynced; the in-process key object is dropped (node:crypto)',
  pkcs11: 'C_DestroyObject on the private and public key objects (zeroisation inside the module per its security policy)',
});

const policySchema = z
  .object({
    cryptoperiod: z
      .object({
        /** Cryptoperiod of private signature keys (SP 800-57: 1–3 years); null = none defined (PCI-3.7.4). */
        signingDays: days(1).nullable().default(730),
        /** Per algorithm (e.g. RSA_2048) overrides; null = no cryptoperiod defined for that key type. */
        byAlgorithm: z.record(z.string(), days(1).nullable()).default({}),
        /** LC-CP-SIG warns this many days before a cryptoperiod ends. */
        warnDays: days(0).default(30),
      })
      .strict()
      .default({}),
    destruction: z
      .object({
        /** The deployed waiting period between PendingDestruction and Destroyed (e.g. rotation's destructionDelay). */
        waitingDays: z.number({ invalid_type_error: 'must be a number of days' }).min(0, 'must not be negative').default(30),
        /** Whether a scheduled destruction can be cancelled (rotation's cancelDestruction). */
        cancellable: z.boolean({ invalid_type_error: 'must be true or false' }).default(true),
        /** Named destruction method per backend type (FCS_CKM.4), added to DEFAULT_DESTRUCTION_METHODS. */
        methods: z
          .record(z.string(), z.string().min(1, 'must not be empty'))
          .default({})
          .transform((m) => ({ ...DEFAULT_DESTRUCTION_METHODS, ...m })),
      })
      .strict()
      .default({}),
    /** Distinct approvers required for each manual key operation (PCI-3.7.6). */
    dualControl: z
      .object({ destroy: approvers.default(2), emergencyRotation: approvers.default(2), restore: approvers.default(2) })
      .strict()
      .default({}),
    /** LC-EMERG: a compromised version's logical key must have an Active successor within this many hours. */
    emergencySuccessorHours: z.number({ invalid_type_error: 'must be a number of hours' }).positive('must be more than 0').default(24),
    /** Key backup facts (ALG-KEK, NIST SC-12(1)); absent = not stated. */
    backup: z
      .object({
        exists: z.boolean({ invalid_type_error: 'must be true or false' }),
        /** Key-wrapping key algorithm, e.g. "AES-256", "AES-128-KW", "RSA-OAEP-3072". */
        kekAlgorithm: z.string().min(1).optional(),
        /** Logical keys the backup covers; omitted = every key. */
        baseKeyIds: z.array(z.string().min(1)).optional(),
      })
      .strict()
      .optional(),
    /** References to the documented key-management rules (NIST SC-12), e.g. "KMP-001 §3". */
    keyManagementRules: z
      .object({ generation: z.string().min(1).optional(), storage: z.string().min(1).optional(), access: z.string().min(1).optional(), destruction: z.string().min(1).optional() })
      .strict()
      .default({}),
    /** NIST SC-13: cryptography must run in a FIPS-validated module. */
    requireValidatedModule: z.boolean({ invalid_type_error: 'must be true or false' }).default(true),
  })
  .strict();

export const complianceConfigSchema = z
  .object({
    dates: z
      .object({
        /** ALG-112: 112-bit protection (RSA-2048, P-224) allowed until this day (SP 800-131A Rev 3 draft). */
        alg112AllowedUntil: dateSetting.default('2030-12-31'),
        /** ALG-PQ: quantum-vulnerable 112-bit signatures deprecated after this day (NIST IR 8547 draft). */
        pqDeprecated112After: dateSetting.default('2030-12-31'),
        /** ALG-PQ: every quantum-vulnerable signature algorithm disallowed after this day (NIST IR 8547 draft). */
        pqDisallowedAfter: dateSetting.default('2035-12-31'),
        /** MOD-140-2: FIPS 140-2 certificates move to the historical list after this day. */
        fips1402HistoricalAfter: dateSetting.default('2026-09-21'),
        /** ALG-EDDSA: EdDSA approved from this day (FIPS 186-5). */
        eddsaApprovedFrom: dateSetting.default('2023-02-03'),
      })
      .strict()
      .default({}),
    algorithms: z
      .object({
        /** ALG-RSA-MIN: smallest RSA modulus for signature generation. */
        rsaMinBits: z.number({ invalid_type_error: 'must be a number of bits' }).int('must be a whole number of bits').min(1024, 'must be at least 1024').default(2048),
        /** ALG-CURVE: approved ECDSA curves (SP 800-186). */
        approvedCurves: z.array(z.string().min(1)).min(1, 'must name at least one curve').default(['P-224', 'P-256', 'P-384', 'P-521']),
      })
      .strict()
      .default({}),
    fips: z
      .object({ requiredLevel: z.union([z.literal(1), z.literal(2), z.literal(3), z.literal(4)], { errorMap: () => ({ message: 'must be 1, 2, 3 or 4' }) }).default(1) })
      .strict()
      .default({}),
    retention: z
      .object({
        /** PCI-10.5.1 / NIST AU-11: total audit retention (12 months). */
        totalDays: days(1).default(365),
        /** PCI-10.5.1: immediately available (3 months). */
        hotDays: days(0).default(90),
      })
      .strict()
      .default({})
      .refine((r) => r.hotDays <= r.totalDays, { message: 'must not exceed retention.totalDays', path: ['hotDays'] }),
    destruction: z
      .object({
        /** LC-PENDING: the shortest destruction waiting period a policy may set. */
        minimumWaitDays: days(1).default(7),
      })
      .strict()
      .default({}),
    audit: z
      .object({
        /** PCI-10.2: event types the deployment records; omitted = every type (the library's audit log records them all). */
        loggedEventTypes: z.array(z.enum(AUDIT_EVENT_TYPES)).optional(),
        /** PCI-10.2.2 / AU-10: actor values that bind an action to nobody. */
        unauthenticatedActors: z.array(z.string()).default(['', 'unknown', 'anonymous']),
        /** Actors that are automated (scheduled destruction, retention): not "manual" operations under PCI-3.7.6. */
        automatedActorPrefixes: z.array(z.string().min(1)).default(['system:', 'rotation-scheduler']),
      })
      .strict()
      .default({}),
    policy: policySchema.default({}),
  })
  .strict();

export type ComplianceConfigInput = z.input<typeof complianceConfigSchema>;
/** The validated configuration, defaults filled in. JSON-safe (it is written into every report). */
export type ResolvedComplianceConfig = z.output<typeof complianceConfigSchema>;
/** The organisation's key-management policy as facts the rules check. */
export type PolicyFacts = ResolvedComplianceConfig['policy'];
export type PolicyFactsInput = z.input<typeof policySchema>;

/**
 * Validates a configuration. A bad value throws HsmError('InvalidConfiguration') whose message
 * and `details.field` name the field, e.g. `compliance.dates.alg112AllowedUntil`.
 */
export function resolveComplianceConfig(raw: unknown = {}): ResolvedComplianceConfig {
  return parseWithSchema(complianceConfigSchema, raw ?? {}, 'compliance');
}

/** Cryptoperiod in days of a key type: per-algorithm override, else the signing default; null when none is defined. */
export function cryptoperiodDays(config: ResolvedComplianceConfig, algorithm: string): number | null {
  const by = config.policy.cryptoperiod.byAlgorithm;
  if (Object.hasOwn(by, algorithm)) return by[algorithm] ?? null;
  return config.policy.cryptoperiod.signingDays;
}

/**
 * Policy facts from @olocus/hsm-rotation's resolved policy (milliseconds), so a report states
 * the waiting period and cryptoperiod the registry really applies.
 */
export function policyFactsFromRotation(policy: { destructionDelay: number; cryptoperiod?: number | undefined; allowEmergencyRotation?: boolean | undefined }): PolicyFactsInput {
  const DAY = 86_400_000;
  return {
    destruction: { waitingDays: policy.destructionDelay / DAY, cancellable: true },
    ...(policy.cryptoperiod !== undefined ? { cryptoperiod: { signingDays: Math.max(1, Math.round(policy.cryptoperiod / DAY)) } } : {}),
  };
}
