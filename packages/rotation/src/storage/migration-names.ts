/**
 * The registry's migrations by name, in order: what a current schema lists in `kysely_migration`.
 * Kept apart from the migrations themselves (which need Kysely) so that a schema check can run
 * without loading it; a test holds the two lists equal.
 */
export const MIGRATION_NAMES: readonly string[] = Object.freeze(['0001_initial', '0002_logical_key_backup']);

/** Kysely's Migrator's table (its default name). */
export const MIGRATION_TABLE = 'kysely_migration';
