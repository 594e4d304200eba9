import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { HsmError } from '@olocus/hsm-core';
import { KeyRegistry, type StorageConfigInput } from '../src/index.js';
import { lookupSqliteRegistry } from '../src/lite.js';
import { migrations } from '../src/storage/migrations.js';
import { MIGRATION_NAMES } from '../src/storage/migration-names.js';
import { cleanupStorage, FakeClock, freshStorage, HOUR, rawSql, STORAGE_KINDS } from './helpers.js';
import { seedVersion } from './seed.js';

afterAll(cleanupStorage);

describe.each(STORAGE_KINDS)('key registry (%s)', (kind) => {
  const open: { close(): Promise<void> }[] = [];
  afterEach(async () => {
    for (const o of open.splice(0).reverse()) await o.close();
  });

  async function setup(label: string, options: { cacheTtlMs?: number; monotonicNow?: () => number; usageFlushIntervalMs?: number } = {}) {
    const storage = await freshStorage(kind, label);
    const clock = new FakeClock();
    const registry = await KeyRegistry.open(storage, { now: clock.now, ...options });
    const raw = await rawSql(storage);
    open.push(registry, raw);
    return { storage, clock, registry, raw };
  }

  async function expectRejected(p: Promise<unknown>): Promise<unknown> {
    return p.then(
      () => {
        throw new Error('expected the statement to fail');
      },
      (e: unknown) => e,
    );
  }

  it('the storage itself refuses a second Active version (raw insert and raw update)', async () => {
    const { raw, clock } = await setup('one-active');
    await seedVersion(raw, 'k', 1, 'Active', clock.ms);
    await seedVersion(raw, 'k', 2, 'Superseded', clock.ms);
    const insert = await expectRejected(seedVersion(raw, 'k', 3, 'Active', clock.ms));
    expect(String((insert as Error).message)).toMatch(/unique|UNIQUE/);
    const update = await expectRejected(raw.exec(`update key_versions set state = 'Active' where key_id = 'k.v2'`));
    expect(String((update as Error).message)).toMatch(/unique|UNIQUE/);
    const rows = (await raw.exec(`select key_id from key_versions where base_key_id = 'k' and state = 'Active'`)) as { key_id: string }[];
    expect(rows.map((r) => r.key_id)).toEqual(['k.v1']);
    // other logical keys are independent
    await seedVersion(raw, 'other', 1, 'Active', clock.ms);
  });

  it('the storage refuses a state outside the list and a history row without actor or reason', async () => {
    const { raw, clock } = await setup('checks');
    await seedVersion(raw, 'c', 1, 'Active', clock.ms);
    await expectRejected(raw.exec(`update key_versions set state = 'Deleted' where key_id = 'c.v1'`));
    await expectRejected(
      raw.exec(`insert into key_state_history (key_id, base_key_id, version, from_state, to_state, at, actor, reason) values ('c.v1','c',1,'Active','Suspended',1,'','why')`),
    );
  });

  it('getActiveKey, getKeyVersions, getKeyForVerification by signature time', async () => {
    const { registry, raw, clock } = await setup('queries');
    const t0 = clock.ms;
    await seedVersion(raw, 'q', 1, 'Superseded', t0);
    await raw.exec('update key_versions set deactivated_at = ? where key_id = ?', [t0 + HOUR, 'q.v1']);
    await seedVersion(raw, 'q', 2, 'Archived', t0 + HOUR);
    await raw.exec('update key_versions set deactivated_at = ? where key_id = ?', [t0 + 2 * HOUR, 'q.v2']);
    await seedVersion(raw, 'q', 3, 'Active', t0 + 2 * HOUR);
    await seedVersion(raw, 'q', 4, 'PreActivation', t0 + 3 * HOUR);

    expect((await registry.getActiveKey('q')).keyId).toBe('q.v3');
    expect((await registry.getKeyVersions('q')).map((v) => [v.version, v.state])).toEqual([
      [1, 'Superseded'],
      [2, 'Archived'],
      [3, 'Active'],
      [4, 'PreActivation'],
    ]);
    const at = async (offset: number) => (await registry.getKeyForVerification('q', new Date(t0 + offset))).version;
    expect(await at(0)).toBe(1);
    expect(await at(HOUR - 1)).toBe(1);
    expect(await at(HOUR)).toBe(2);
    expect(await at(2 * HOUR)).toBe(3);
    expect(await at(10 * HOUR)).toBe(3);
    await expect(registry.getKeyForVerification('q', new Date(t0 - 1))).rejects.toMatchObject({ code: 'KeyNotFound' });

    // a version that is now Revoked verifies nothing, even for its own window
    await raw.exec(`update key_versions set state = 'Revoked', revoked_at = ? where key_id = 'q.v1'`, [t0 + 5 * HOUR]);
    await expect(registry.getKeyForVerification('q', new Date(t0))).rejects.toMatchObject({ code: 'KeyNotFound' });
    // PendingDestruction / Destroyed / Suspended do not verify either
    for (const state of ['PendingDestruction', 'Destroyed', 'Suspended']) {
      await raw.exec(`update key_versions set state = ? where key_id = 'q.v2'`, [state]);
      await expect(registry.getKeyForVerification('q', new Date(t0 + HOUR))).rejects.toMatchObject({ code: 'KeyNotFound' });
    }
  });

  it('unknown keys are KeyNotFound with the id in the message', async () => {
    const { registry, raw, clock } = await setup('unknown');
    await expect(registry.getActiveKey('nope')).rejects.toThrow(/unknown logical key "nope"/);
    await expect(registry.getKeyVersions('nope')).rejects.toMatchObject({ code: 'KeyNotFound' });
    await expect(registry.getKeyVersion('nope.v1')).rejects.toMatchObject({ code: 'KeyNotFound' });
    await seedVersion(raw, 'gone', 1, 'Destroyed', clock.ms);
    await expect(registry.getActiveKey('gone')).rejects.toThrow(/no Active version \(latest is v1, Destroyed\)/);
  });

  it('lists versions with filters and pages', async () => {
    const { registry, raw, clock } = await setup('list');
    for (let k = 0; k < 7; k++) {
      for (let v = 1; v <= 3; v++) await seedVersion(raw, `l${k}`, v, v === 3 ? 'Active' : 'Superseded', clock.ms);
    }
    await raw.exec(`update key_versions set algorithm = 'ECDSA_P256' where base_key_id = 'l3'`);
    await raw.exec(`update key_versions set backend = 'pkcs11' where base_key_id = 'l4'`);
    const all: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await registry.listKeyVersions({ limit: 4, ...(cursor ? { cursor } : {}) });
      all.push(...page.versions.map((v) => v.keyId));
      cursor = page.nextCursor;
    } while (cursor);
    expect(all).toHaveLength(21);
    expect(new Set(all).size).toBe(21);
    expect((await registry.listKeyVersions({ state: 'Active' })).versions).toHaveLength(7);
    expect((await registry.listKeyVersions({ state: ['Active', 'Superseded'], algorithm: 'ECDSA_P256' })).versions.map((v) => v.keyId)).toEqual(['l3.v1', 'l3.v2', 'l3.v3']);
    expect((await registry.listKeyVersions({ backend: 'pkcs11', state: 'Active' })).versions.map((v) => v.keyId)).toEqual(['l4.v3']);
    await expect(registry.listKeyVersions({ state: 'Bogus' as never })).rejects.toBeInstanceOf(HsmError);
    await expect(registry.listKeyVersions({ limit: 0 })).rejects.toMatchObject({ details: { field: 'limit' } });
    await expect(registry.listKeyVersions({ cursor: 'garbage' })).rejects.toMatchObject({ details: { field: 'cursor' } });
    const keys = await registry.listLogicalKeys({ limit: 5 });
    expect(keys.keys).toHaveLength(5);
    expect((await registry.listLogicalKeys({ limit: 5, cursor: keys.nextCursor! })).keys.map((k) => k.baseKeyId)).toEqual(['l5', 'l6']);
  });

  it('usage is counted in memory and written only on flush / close', async () => {
    const storage: StorageConfigInput = await freshStorage(kind, 'usage');
    const clock = new FakeClock();
    const registry = await KeyRegistry.open(storage, { now: clock.now, usageFlushIntervalMs: 3_600_000 });
    const raw = await rawSql(storage);
    open.push(raw);
    await seedVersion(raw, 'u', 1, 'Active', clock.ms);
    for (let i = 0; i < 5; i++) registry.recordKeyUsage('u.v1');
    const read = async () => ((await raw.exec(`select usage_count, last_used_at from key_versions where key_id = 'u.v1'`)) as { usage_count: number | string; last_used_at: number | string | null }[])[0]!;
    expect(Number((await read()).usage_count)).toBe(0);
    await registry.flushUsage();
    expect(Number((await read()).usage_count)).toBe(5);
    expect(Number((await read()).last_used_at)).toBe(clock.ms);
    clock.advance(1000);
    registry.recordUsage({ baseKeyId: 'u', version: 1, key: 'u.v1', algorithm: 'Ed25519' });
    registry.recordKeyUsage('u.v1');
    await registry.close();
    expect(Number((await read()).usage_count)).toBe(7);
    expect(Number((await read()).last_used_at)).toBe(clock.ms);
  });

  it('caches getActiveKey; this process invalidates at once, another node sees changes within the TTL', async () => {
    const { storage, registry: a, raw, clock } = await setup('cache', { cacheTtlMs: 1000 });
    let mono = 0;
    const b = await KeyRegistry.open(storage, { now: clock.now, cacheTtlMs: 1000, monotonicNow: () => mono });
    open.push(b);
    await seedVersion(raw, 'c', 1, 'Active', clock.ms);
    await seedVersion(raw, 'c', 2, 'PreActivation', clock.ms);
    expect((await a.getActiveKey('c')).version).toBe(1);
    expect((await b.getActiveKey('c')).version).toBe(1);
    // rotate through registry A (by hand: two transitions)
    await a.transition('c.v1', 'Suspended', { actor: 't', reason: 'cache test' });
    await a.transition('c.v2', 'Active', { actor: 't', reason: 'cache test' });
    expect((await a.getActiveKey('c')).version).toBe(2); // invalidated in this process
    expect((await b.getActiveKey('c')).version).toBe(1); // node B: stale, within its TTL
    mono += 999;
    expect((await b.getActiveKey('c')).version).toBe(1);
    mono += 1;
    expect((await b.getActiveKey('c')).version).toBe(2); // TTL over
    expect((await b.getActiveKeyUncached('c')).version).toBe(2);
  });
});

describe('SQLite registry schema check on open (the Migrator runs only when a migration is due)', () => {
  it('applies a migration an older registry lacks, and refuses one this version does not know', async () => {
    const storage = await freshStorage('sqlite', 'schema');
    await (await KeyRegistry.open(storage)).close();
    const raw = await rawSql(storage);
    try {
      expect(await raw.exec('select name from kysely_migration order by name')).toEqual([{ name: '0001_initial' }, { name: '0002_logical_key_backup' }]);
      // the registry as the version before 0002 left it
      await raw.exec('alter table logical_keys drop column backup');
      await raw.exec("delete from kysely_migration where name = '0002_logical_key_backup'");
      await (await KeyRegistry.open(storage)).close();
      expect((await raw.exec('select name from pragma_table_info(?)', ['logical_keys'])).map((r) => (r as { name: string }).name)).toContain('backup');
      expect(await raw.exec('select name from kysely_migration order by name')).toEqual([{ name: '0001_initial' }, { name: '0002_logical_key_backup' }]);

      // a newer version's migration: refused, not written past
      await raw.exec('insert into kysely_migration (name, timestamp) values (?, ?)', ['0003_from_the_future', new Date().toISOString()]);
      const error = await KeyRegistry.open(storage).then(
        async (r) => {
          await r.close();
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(HsmError);
      expect(String((error as Error).message) + String(((error as Error).cause as Error | undefined)?.message)).toContain('0003_from_the_future');
    } finally {
      await raw.close();
    }
  });
});

describe('lookupSqliteRegistry (what a one-shot command reads before deciding to open the registry)', () => {
  it('names a logical key, a registered version and an unknown id; cannot tell for a missing file or a schema that is not current', async () => {
    expect(Object.keys(migrations('sqlite'))).toEqual([...MIGRATION_NAMES]);
    expect(Object.keys(migrations('postgres'))).toEqual([...MIGRATION_NAMES]);
    const storage = (await freshStorage('sqlite', 'lookup')) as { kind: 'sqlite'; path: string };
    expect(lookupSqliteRegistry(storage.path, 'k')).toBeUndefined(); // no file yet (and none is created)
    expect(existsSync(storage.path)).toBe(false);
    await (await KeyRegistry.open(storage)).close();
    const raw = await rawSql(storage);
    try {
      await seedVersion(raw, 'k', 1, 'Active', Date.now());
      expect(lookupSqliteRegistry(storage.path, 'k')).toBe('logical');
      expect(lookupSqliteRegistry(storage.path, 'k.v1')).toBe('version');
      expect(lookupSqliteRegistry(storage.path, 'k.v2')).toBe('none'); // version-shaped, not registered
      expect(lookupSqliteRegistry(storage.path, 'plain')).toBe('none');
      // a schema with a migration this version does not know: cannot tell (the registry refuses it on open)
      await raw.exec('insert into kysely_migration (name, timestamp) values (?, ?)', ['0003_from_the_future', new Date().toISOString()]);
      expect(lookupSqliteRegistry(storage.path, 'plain')).toBeUndefined();
      // one that lacks a migration: cannot tell (opening the registry migrates it)
      await raw.exec("delete from kysely_migration where name in ('0003_from_the_future', '0002_logical_key_backup')");
      expect(lookupSqliteRegistry(storage.path, 'plain')).toBeUndefined();
    } finally {
      await raw.close();
    }
    // not a database
    const bogus = join(dirname(storage.path), 'not-a-db');
    writeFileSync(bogus, 'this is not SQLite');
    expect(lookupSqliteRegistry(bogus, 'plain')).toBeUndefined();
  });
});
