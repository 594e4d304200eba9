/**
 * `@olocus/hsm-rotation/lite`: the parts that need neither Kysely nor a database connection — the
 * version id convention, the states, the policy's schema, and a read-only look into a SQLite
 * registry. What a one-shot command needs before it knows whether it needs the registry at all: a
 * plain backend key then signs and verifies without loading the rotation package's 550 KB.
 */
import BetterSqlite3 from 'better-sqlite3';
import { parseVersionKeyId } from './key-ids.js';
import { sqliteMigrationsCurrent } from '@olocus/hsm-core';
import { MIGRATION_NAMES, MIGRATION_TABLE } from './storage/migration-names.js';

export { parseVersionKeyId, versionKeyId } from './key-ids.js';
export { VERIFYING_STATES, KEY_STATES, type KeyState } from './states.js';
export { parsePolicy, type RotationPolicy, type RotationPolicyInput } from './config.js';

/** What a registry holds under an id: a logical key, a version of one, or nothing. */
export type RegistryEntryKind = 'logical' | 'version' | 'none';

/**
 * What the SQLite registry at `path` holds under `id`, read-only. Undefined when this cannot be
 * told for certain — no such file, a schema that is not exactly this version's (older: it needs
 * a migration; newer: it must be refused), a locked or unreadable file — and the caller then opens
 * the registry as usual, which migrates, refuses or reports as it always does.
 */
export function lookupSqliteRegistry(path: string, id: string): RegistryEntryKind | undefined {
  if (path === ':memory:' || path.startsWith('file:')) return undefined;
  let database: BetterSqlite3.Database | undefined;
  try {
    database = new BetterSqlite3(path, { readonly: true, fileMustExist: true, timeout: 0 });
    if (!sqliteMigrationsCurrent(database, MIGRATION_TABLE, MIGRATION_NAMES)) return undefined;
    if (database.prepare('select 1 from logical_keys where base_key_id = ?').get(id)) return 'logical';
    if (parseVersionKeyId(id) && database.prepare('select 1 from key_versions where key_id = ?').get(id)) return 'version';
    return 'none';
  } catch {
    return undefined;
  } finally {
    database?.close();
  }
}
