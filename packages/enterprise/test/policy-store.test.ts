/**
 * Cedar policies kept in the registry's database (issue 16: "policies live in files or the
 * registry database"): versioned, checked before they land, loaded beside the files, on SQLite
 * and on a real PostgreSQL server.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendRegistry } from '@olocus/hsm-core';
import { memoryBackendFactory } from '@olocus/hsm-core/testing';
import { CedarAuthorizer, PolicyStore, openEnterprise, type PolicyStoreStorage } from '../src/index.js';

const work = mkdtempSync(join(tmpdir(), 'olocus-policy-store-'));
const PG_URL = process.env.OLOCUS_TEST_PG_URL ?? 'postgres://olocus_test@127.0.0.1:5432/olocus_test';
const schema = `olocus_ps_${process.pid}_${randomBytes(3).toString('hex')}`;
const admin = new pg.Pool({ connectionString: PG_URL, max: 2 });

beforeAll(async () => {
  try {
    await admin.query(`CREATE SCHEMA ${schema}`);
  } catch (error) {
    throw new Error(`PostgreSQL is not reachable at ${PG_URL} (${(error as Error).message}). Start it with: bash scripts/start-postgres.sh (from the repository root), or set OLOCUS_TEST_PG_URL.`);
  }
});
afterAll(async () => {
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
  await admin.end();
  rmSync(work, { recursive: true, force: true });
});

const signInvoices = 'permit (principal, action == Olocus::Action::"sign", resource in Olocus::Application::"billing")\nwhen { context has purpose && context.purpose == "invoice" };\n';
const noSecrets = 'forbid (principal, action == Olocus::Action::"sign", resource)\nwhen { context has classification && context.classification == "secret" };\n';
const request = (purpose: string, classification?: string) => ({
  principal: { type: 'Caller' as const, id: 'bob' },
  action: 'sign' as const,
  resource: { application: 'billing', keyId: 'billing.v1', algorithm: 'ECDSA_P256', version: 1, tags: {} },
  context: { purpose, ...(classification ? { classification } : {}) },
});

const storages: Array<[string, () => PolicyStoreStorage]> = [
  ['SQLite', () => ({ kind: 'sqlite', path: join(work, 'registry.db') })],
  ['PostgreSQL', () => ({ kind: 'postgres', connectionString: PG_URL, schema })],
];

describe.each(storages)('PolicyStore on %s', (_name, storage) => {
  it('versions every change, keeps the history, refuses a policy that does not check (naming it and the line), and loads the current set', async () => {
    const store = await PolicyStore.open(storage());
    try {
      const v1 = await store.put('billing', 'sign', 'permit (principal, action == Olocus::Action::"sign", resource);\n', 'alice');
      expect(v1).toMatchObject({ scope: 'billing', name: 'sign', version: 1, createdBy: 'alice' });
      const v2 = await store.put('billing', 'sign', signInvoices, 'bob');
      expect(v2.version).toBe(2);
      expect((await store.put('billing', 'sign', signInvoices, 'carol')).version).toBe(2); // unchanged: no new version
      await store.put('global', 'no-secrets', noSecrets, 'alice');
      await expect(store.put('billing', 'bad', 'permit (principal, action, resource)\nwhen { resource.colour == "red" };\n', 'alice')).rejects.toMatchObject({
        code: 'InvalidConfiguration',
        message: expect.stringMatching(/registry:billing\/bad:2:\d+/),
      });
      await expect(store.put('billing', '../etc', signInvoices, 'alice')).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'name' } });

      const authorizer = new CedarAuthorizer({ decisionCacheMs: 0 });
      expect(await store.loadInto(authorizer)).toEqual({ global: 1, applications: { billing: 1 } });
      expect(authorizer.authorize(request('invoice')).allowed).toBe(true);
      expect(authorizer.authorize(request('refund')).allowed).toBe(false);
      expect(authorizer.authorize(request('invoice', 'secret')).allowed).toBe(false);
      const version = authorizer.policyVersion('billing');

      // removing is a tombstone version: out of the current set, still in the history
      await store.remove('global', 'no-secrets', 'alice');
      await expect(store.remove('global', 'no-secrets', 'alice')).rejects.toMatchObject({ code: 'KeyNotFound' });
      expect((await store.history('global', 'no-secrets')).map((p) => [p.version, p.text === null])).toEqual([
        [1, false],
        [2, true],
      ]);
      expect((await store.history('billing', 'sign')).map((p) => p.createdBy)).toEqual(['alice', 'bob']);
      const after = new CedarAuthorizer({ decisionCacheMs: 0 });
      await store.loadInto(after);
      expect(after.authorize(request('invoice', 'secret')).allowed).toBe(true);
      expect(after.policyVersion('billing')).not.toBe(version); // a decision names the set that made it
    } finally {
      await store.close();
    }
  });

  it('two writers at once number their versions without a gap or a clash', async () => {
    const [a, b] = await Promise.all([PolicyStore.open(storage()), PolicyStore.open(storage())]);
    try {
      const texts = Array.from({ length: 10 }, (_, i) => `permit (principal, action == Olocus::Action::"verify", resource) when { context has ticketId && context.ticketId == "T-${i}" };\n`);
      await Promise.all(texts.map((t, i) => (i % 2 ? a : b).put('global', 'race', t, `w${i}`)));
      expect((await a.history('global', 'race')).map((p) => p.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('openEnterprise with policies.registry', () => {
  it('loads the registry database\'s policies beside the policy files', async () => {
    const dir = join(work, 'open');
    mkdirSync(join(dir, 'global'), { recursive: true });
    writeFileSync(join(dir, 'global', 'ops.cedar'), 'permit (principal in Olocus::Group::"ops", action == Olocus::Action::"export-public", resource);\n');
    const storage = { kind: 'sqlite' as const, path: join(dir, 'registry.db') };
    const store = await PolicyStore.open(storage);
    await store.put('billing', 'sign', signInvoices, 'alice');
    await store.close();
    const registry = new BackendRegistry();
    registry.register(memoryBackendFactory());
    const enterprise = await openEnterprise({
      config: { pool: { members: [{ name: 'm', backend: { type: 'memory' } }] }, policies: { global: 'global', registry: true } },
      baseDir: dir,
      storage,
      audit: { append: async () => undefined },
      registry,
    });
    try {
      expect(enterprise.authorizer.authorize(request('invoice')).determining).toEqual(['billing/sign@v1#0']);
      expect(enterprise.authorizer.globalSources().map((s) => s.file)).toEqual([join(dir, 'global', 'ops.cedar')]);
    } finally {
      await enterprise.close();
    }
  });
});
