import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

export type DialectName = 'sqlite' | 'postgres';

/**
 * In-code migrations (no files to ship or find at run time). Each one runs once, recorded by
 * Kysely's Migrator in `kysely_migration`; the Migrator's lock makes concurrent starts safe.
 */
export function migrations(dialect: DialectName): Record<string, Migration> {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  return {
    '0001_initial': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('logical_keys')
          .addColumn('base_key_id', 'text', (c) => c.primaryKey())
          .addColumn('algorithm', 'text', (c) => c.notNull())
          .addColumn('usages', 'text', (c) => c.notNull())
          .addColumn('backend', 'text', (c) => c.notNull())
          .addColumn('rotation_interval_ms', bigint)
          .addColumn('last_version', 'integer', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('key_versions')
          .addColumn('key_id', 'text', (c) => c.primaryKey())
          .addColumn('base_key_id', 'text', (c) => c.notNull().references('logical_keys.base_key_id'))
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('backend', 'text', (c) => c.notNull())
          .addColumn('key_ref', 'text', (c) => c.notNull())
          .addColumn('algorithm', 'text', (c) => c.notNull())
          .addColumn('usages', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) =>
            c.notNull().check(sql`state in ('PreActivation','Active','Suspended','Superseded','Revoked','Compromised','Archived','PendingDestruction','Destroyed')`),
          )
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('activated_at', bigint)
          .addColumn('deactivated_at', bigint)
          .addColumn('expires_at', bigint)
          .addColumn('state_changed_at', bigint, (c) => c.notNull())
          .addColumn('overlap_until', bigint)
          .addColumn('destroy_after', bigint)
          .addColumn('pre_destruction_state', 'text')
          .addColumn('revoked_at', bigint)
          .addColumn('predecessor_version', 'integer')
          .addColumn('successor_version', 'integer')
          .addColumn('usage_count', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('last_used_at', bigint)
          .addUniqueConstraint('key_versions_base_version', ['base_key_id', 'version'])
          .execute();
        // LC-PRIMARY, enforced by the storage itself: at most one Active version per logical key.
        await sql`create unique index key_versions_one_active on key_versions (base_key_id) where state = 'Active'`.execute(db);
        await db.schema.createIndex('key_versions_state').on('key_versions').columns(['state', 'base_key_id', 'version']).execute();
        await db.schema.createIndex('key_versions_algorithm').on('key_versions').columns(['algorithm', 'base_key_id', 'version']).execute();
        await db.schema.createIndex('key_versions_backend').on('key_versions').columns(['backend', 'base_key_id', 'version']).execute();

        await db.schema
          .createTable('key_state_history')
          .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('base_key_id', 'text', (c) => c.notNull())
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('from_state', 'text')
          .addColumn('to_state', 'text', (c) => c.notNull())
          .addColumn('at', bigint, (c) => c.notNull())
          .addColumn('actor', 'text', (c) => c.notNull().check(sql`length(actor) > 0`))
          .addColumn('reason', 'text', (c) => c.notNull().check(sql`length(reason) > 0`))
          .execute();
        await db.schema.createIndex('key_state_history_key').on('key_state_history').columns(['base_key_id', 'version', 'id']).execute();

        await db.schema
          .createTable('rotations')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('base_key_id', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('from_version', 'integer')
          .addColumn('to_version', 'integer', (c) => c.notNull())
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('step', 'text', (c) => c.notNull())
          .addColumn('actor', 'text', (c) => c.notNull())
          .addColumn('reason', 'text', (c) => c.notNull())
          .addColumn('owner', 'text', (c) => c.notNull())
          .addColumn('lease_until', bigint, (c) => c.notNull())
          .addColumn('started_at', bigint, (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .addColumn('key_ref', 'text')
          .addColumn('error', 'text')
          .execute();
        // One rotation in flight per logical key, whichever node started it.
        await sql`create unique index rotations_one_open on rotations (base_key_id) where step in ('intent','generated','registered')`.execute(db);

        await db.schema
          .createTable('tasks')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('base_key_id', 'text', (c) => c.notNull())
          .addColumn('key_id', 'text')
          .addColumn('dedupe_key', 'text', (c) => c.notNull().unique())
          .addColumn('due_at', bigint, (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('last_error', 'text')
          .addColumn('claimed_by', 'text')
          .addColumn('lease_until', bigint)
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .addColumn('completed_at', bigint)
          .execute();
        await db.schema.createIndex('tasks_due').on('tasks').columns(['status', 'due_at']).execute();
        await db.schema.createIndex('tasks_key').on('tasks').columns(['base_key_id', 'status']).execute();
      },
      async down(db: Kysely<unknown>) {
        for (const t of ['tasks', 'rotations', 'key_state_history', 'key_versions', 'logical_keys']) await db.schema.dropTable(t).ifExists().execute();
      },
    },
    // A logical key whose versions must be exportable for backup: every version is generated with
    // KeySpec.backup (a PKCS#11 key made non-extractable can never become extractable later).
    '0002_logical_key_backup': {
      async up(db: Kysely<unknown>) {
        await db.schema.alterTable('logical_keys').addColumn('backup', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      },
      async down(db: Kysely<unknown>) {
        await db.schema.alterTable('logical_keys').dropColumn('backup').execute();
      },
    },
  };
}

export function migrationProvider(dialect: DialectName): MigrationProvider {
  return { getMigrations: async () => migrations(dialect) };
}
