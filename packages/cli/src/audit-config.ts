import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import type { WitnessConfig } from '@olocus/hsm-compliance';
import { parseConfigSection, resolveStoragePaths, secretSource } from './rotation-config.js';
import { readCliSecret } from './secrets.js';
import { CliError } from './errors.js';

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

const identifier = z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier');

/**
 * `audit.witnesses`: where every signed checkpoint is also sent, so that a log rolled back or
 * wiped together with its checkpoints is caught by `audit verify` (and an emptied log is refused
 * at open). Each entry:
 * - `{"kind": "file", "path": "/mnt/other-volume/olocus-audit.witness"}` — append-only JSON
 *   Lines, fsync'd; put it on another volume (relative paths resolve against the config folder).
 * - `{"kind": "postgres", "connectionString": {"env": "VAR"} | {"file": "path"}, "table"?, "schema"?}`
 *   — a table (default `olocus_audit_witness`) in a database the log's writers cannot rewrite.
 * - `{"kind": "http", "url": "https://witness.example/olocus", "bearerToken"?: {"env"|"file"}, "timeoutSeconds"?}`
 *   — POST of each checkpoint as JSON; read back with GET `url?logName=NAME` (200 / 404).
 * - `{"kind": "syslog", "transport": "udp" | "tcp", "host"?: "127.0.0.1", "port"?: 514, "facility"?: 13}`
 *   — RFC 5424; write-only (syslog cannot be asked back, so verify lists it as such).
 */
const witnessSchema = z.discriminatedUnion(
  'kind',
  [
    z.object({ kind: z.literal('file'), path: z.string({ invalid_type_error: 'must be a file path' }).min(1, 'must not be empty') }).strict(),
    z.object({ kind: z.literal('postgres'), connectionString: secretSource, table: identifier.optional(), schema: identifier.optional() }).strict(),
    z
      .object({
        kind: z.literal('http'),
        url: z.string().refine((u) => /^https?:\/\/[^\s]+$/i.test(u), 'must be an http(s) URL'),
        /** Sent as `Authorization: Bearer ...`; a secret source, never the token itself. */
        bearerToken: secretSource.optional(),
        timeoutSeconds: z.number().min(0.1).max(120).default(10),
      })
      .strict(),
    z
      .object({
        kind: z.literal('syslog'),
        transport: z.enum(['udp', 'tcp'], { errorMap: () => ({ message: 'must be "udp" or "tcp"' }) }),
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(1).max(65535).default(514),
        facility: z.number().int().min(0).max(23).default(13),
      })
      .strict(),
  ],
  {
    errorMap: (issue, ctx) =>
      issue.code === z.ZodIssueCode.invalid_union_discriminator ? { message: 'kind must be "file", "postgres", "http" or "syslog"' } : { message: ctx.defaultError },
  },
);

export type AuditWitnessSection = z.output<typeof witnessSchema>;

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
    witnesses: z.array(witnessSchema).max(16, 'at most 16 witnesses').default([]),
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

/** Relative paths (the SQLite file, secret files, witness files) resolve against the config file's folder. */
export function resolveAuditPaths(section: AuditSection, base: string): AuditSection {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const source = <T extends { env: string } | { file: string }>(s: T): T => ('file' in s ? ({ file: abs(s.file) } as T) : s);
  const witnesses = (section.witnesses ?? []).map((w): AuditWitnessSection => {
    if (w.kind === 'file') return { ...w, path: abs(w.path) };
    if (w.kind === 'postgres') return { ...w, connectionString: source(w.connectionString) };
    if (w.kind === 'http' && w.bearerToken) return { ...w, bearerToken: source(w.bearerToken) };
    return w;
  });
  return { ...resolveStoragePaths(section, base), witnesses };
}

/** A config problem says which file it is in (config.ts's inFile; that module imports this one). */
function withConfigFile(error: unknown, configPath: string): unknown {
  const e = error as { name?: string; code?: string; message?: string };
  if (e?.name === 'HsmError' && e.code === 'InvalidConfiguration' && !e.message?.includes(configPath)) return new CliError('InvalidConfiguration', `${configPath}: ${e.message}`, { cause: error });
  return error;
}

/**
 * The section's witnesses as the audit log takes them (`openAuditLog({ ..., witnesses })`):
 * secret sources read (a connection string or token never sits in the config), a bad source
 * named with the config file.
 */

export async function witnessesFor(section: AuditSection, configPath: string, env: Record<string, string | undefined>): Promise<WitnessConfig[]> {
  const out: WitnessConfig[] = [];
  for (const [i, w] of (section.witnesses ?? []).entries()) {
    const field = `audit.witnesses[${i}]`;
    try {
      switch (w.kind) {
        case 'file':
          out.push({ kind: 'file', path: w.path });
          break;
        case 'postgres':
          out.push({ kind: 'postgres', connectionString: await readCliSecret(w.connectionString, `${field}.connectionString`, env), ...(w.table ? { table: w.table } : {}), ...(w.schema ? { schema: w.schema } : {}) });
          break;
        case 'http': {
          const token = w.bearerToken ? await readCliSecret(w.bearerToken, `${field}.bearerToken`, env) : undefined;
          out.push({ kind: 'http', url: w.url, timeoutMs: Math.round(w.timeoutSeconds * 1000), ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}) });
          break;
        }
        case 'syslog':
          out.push({ kind: 'syslog', transport: w.transport, host: w.host, port: w.port, facility: w.facility });
          break;
      }
    } catch (error) {
      throw withConfigFile(error, configPath);
    }
  }
  return out;
}
