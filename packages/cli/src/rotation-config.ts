import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { describeZodError } from '@olocus/hsm-core';
import { CliError } from './errors.js';

/**
 * The config file's optional `rotation` section: where the key registry lives and the rotation
 * policy. Absent = the embedded default, SQLite at `<config dir>/rotation.db` with the rotation
 * package's default policy (emergency rotation disabled).
 *
 * A PostgreSQL connection string may hold a password: it is a secret source (`{"env"}` or
 * `{"file"}`), never the string itself in the config, and it is never printed.
 */

/** A secret source for a connection string (shared with the audit section). */
export const secretSource = z.union([z.object({ env: z.string().min(1) }).strict(), z.object({ file: z.string().min(1) }).strict()], {
  errorMap: () => ({
    message: 'must be a secret source {"env": "VARIABLE"} or {"file": "path"} (a connection string may hold a password: never put it in the config)',
  }),
});

const sqliteStorage = z
  .object({
    kind: z.literal('sqlite'),
    path: z.string({ invalid_type_error: 'must be a file path' }).min(1, 'must not be empty').default('rotation.db'),
    busyTimeout: z.number().int().min(0).max(600_000).optional(),
    synchronous: z.enum(['FULL', 'NORMAL']).optional(),
  })
  .strict();

const postgresStorage = z
  .object({
    kind: z.literal('postgres'),
    connectionString: secretSource,
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier')
      .optional(),
    maxConnections: z.number().int().min(1).max(1000).optional(),
  })
  .strict();

const storageSchema = z.discriminatedUnion('kind', [sqliteStorage, postgresStorage], {
  errorMap: (issue, ctx) =>
    issue.code === z.ZodIssueCode.invalid_union_discriminator ? { message: 'kind must be "sqlite" or "postgres"' } : { message: ctx.defaultError },
});

export const rotationSectionSchema = z
  .object({
    storage: storageSchema.default({ kind: 'sqlite', path: 'rotation.db' }),
    /** Validated by the rotation package's own schema (`rotationPolicySchema`) when loaded. */
    policy: z.record(z.unknown(), { invalid_type_error: 'must be an object of rotation policy fields' }).optional(),
  })
  .strict();

export type RotationSection = z.output<typeof rotationSectionSchema>;
export type RotationStorageSection = RotationSection['storage'];

/** What `init` writes. */
export const DEFAULT_ROTATION_SECTION = {
  storage: { kind: 'sqlite', path: 'rotation.db' },
  policy: { allowEmergencyRotation: false },
} as const;

/** Validates the section (absent → the default); a bad field is named with the config file. */
export function parseRotationSection(raw: unknown, path: string): RotationSection {
  return parseConfigSection(rotationSectionSchema, raw, path, 'rotation');
}

/** Validates an optional config section (absent → its defaults); errors name the file, the section and the field. */
export function parseConfigSection<S extends z.ZodTypeAny>(schema: S, raw: unknown, path: string, name: string): z.output<S> {
  const result = schema.safeParse(raw ?? {});
  if (!result.success) throw new CliError('InvalidConfiguration', `${path}: invalid ${name} section: ${describeZodError(result.error, name)}`);
  return result.data as z.output<S>;
}

/** Relative paths (the SQLite file, a connection-string file) resolve against the config file's folder. */
export function resolveRotationPaths(section: RotationSection, base: string): RotationSection {
  return resolveStoragePaths(section, base);
}

type StorageSection = { kind: 'sqlite'; path: string } | { kind: 'postgres'; connectionString: { env: string } | { file: string } };

/** For any section with a `storage` field (rotation, audit): the SQLite path and a connection-string file, made absolute. */
export function resolveStoragePaths<S extends { storage: StorageSection }>(section: S, base: string): S {
  const storage = section.storage;
  if (storage.kind === 'sqlite') {
    if (storage.path === ':memory:' || isAbsolute(storage.path)) return section;
    return { ...section, storage: { ...storage, path: resolve(base, storage.path) } };
  }
  const cs = storage.connectionString;
  if ('file' in cs && !isAbsolute(cs.file)) return { ...section, storage: { ...storage, connectionString: { file: resolve(base, cs.file) } } };
  return section;
}

/** A description of the storage that never contains the connection string. */
export function describeStorage(storage: RotationStorageSection): Record<string, unknown> {
  if (storage.kind === 'sqlite') return { kind: 'sqlite', path: storage.path };
  const cs = storage.connectionString;
  return { kind: 'postgres', connectionString: 'env' in cs ? { env: cs.env } : { file: cs.file }, ...(storage.schema ? { schema: storage.schema } : {}) };
}
