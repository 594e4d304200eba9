/** The part of a better-sqlite3 `Database` the schema check reads with (core does not depend on the driver). */
export interface SqliteReader {
  prepare(sql: string): { get(...params: unknown[]): unknown; pluck(): { all(...params: unknown[]): unknown[] } };
}

const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;

/**
 * Whether a SQLite database has exactly the migrations `known` applied, by the names in its
 * migration table (Kysely's Migrator keeps one, `name` per row). Read with the driver alone, so a
 * store can skip loading Kysely and its Migrator when nothing is due; false for a new database, one
 * that lacks a migration, and one that has a migration this version does not know — the Migrator
 * then applies or refuses.
 */
export function sqliteMigrationsCurrent(database: SqliteReader, table: string, known: readonly string[]): boolean {
  if (!IDENTIFIER.test(table)) throw new TypeError(`not a migration table name: ${JSON.stringify(table)}`);
  if (!database.prepare("select 1 from sqlite_master where type = 'table' and name = ?").get(table)) return false;
  const applied = (database.prepare(`select name from ${table}`).pluck().all() as string[]).sort();
  const wanted = [...known].sort();
  return applied.length === wanted.length && applied.every((name, i) => name === wanted[i]);
}
