import { z } from 'zod';
import { parseConfigSection, resolveStoragePaths, secretSource } from './rotation-config.js';

/**
 * The config file's optional `audit` section. Absent = the embedded default: auditing on, fail
 * closed, SQLite at `<config dir>/audit.db`, checkpoints signed by the backend key
 * `olocus-audit-checkpoint` (created on first use). `"enabled": false` turns auditing off — the
 * compliance report then says so (PCI-10.2, NIST-AU-9).
 *
 * As in `rotation`, a PostgreSQL connection string is a secret source, never the string itself.
 */

const storageSchema = z.discriminatedUnion(
  'kind',
  [
    z.object({ kind: z.literal('sqlite'), path: z.string({ invalid_type_error: 'must be a file path' }).min(1, 'must not be empty').default('audit.db') }).strict(),
    z
      .object({
        kind: z.literal('postgres'),
        connectionString: secretSource,
        schema: z
          .string()
          .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier')
          .optional(),
      })
      .strict(),
  ],
  {
    errorMap: (issue, ctx) =>
      issue.code === z.ZodIssueCode.invalid_union_discriminator ? { message: 'kind must be "sqlite" or "postgres"' } : { message: ctx.defaultError },
  },
);

export const auditSectionSchema = z
  .object({
    enabled: z.boolean().default(true),
    storage: storageSchema.default({ kind: 'sqlite', path: 'audit.db' }),
    /** Refuse an operation whose audit record cannot be made durable (NIST-AU-5). */
    failClosed: z.boolean().default(true),
    logName: z.string().min(1).max(200).default('olocus-audit'),
    retention: z
      .object({
        days: z.number().int().min(1).max(36_500).default(365),
        hotDays: z.number().int().min(1).max(36_500).default(90),
      })
      .strict()
      .refine((r) => r.hotDays <= r.days, { message: 'hotDays must not exceed days', path: ['hotDays'] })
      .default({}),
    checkpoint: z
      .object({
        everyRecords: z.number().int().min(1).max(10_000_000).default(1000),
        intervalSeconds: z.number().min(0.1).max(86_400).default(60),
        /** Backend key that signs checkpoints and reports; created (ECDSA P-256) when missing. */
        keyId: z.string().min(1).max(200).default('olocus-audit-checkpoint'),
      })
      .strict()
      .default({}),
  })
  .strict();

export type AuditSection = z.output<typeof auditSectionSchema>;

/** What `init` writes. */
export const DEFAULT_AUDIT_SECTION = {
  storage: { kind: 'sqlite', path: 'audit.db' },
  failClosed: true,
  retention: { days: 365, hotDays: 90 },
  checkpoint: { everyRecords: 1000, intervalSeconds: 60, keyId: 'olocus-audit-checkpoint' },
} as const;

/** Validates the section (absent → the default); a bad field is named with the config file. */
export function parseAuditSection(raw: unknown, path: string): AuditSection {
  return parseConfigSection(auditSectionSchema, raw, path, 'audit');
}

/** Relative paths resolve against the config file's folder. */
export function resolveAuditPaths(section: AuditSection, base: string): AuditSection {
  return resolveStoragePaths(section, base);
}
