/**
 * The enterprise command functions, called directly with parsed options: a capturing context,
 * and an opener that builds the enterprise manager from an `enterprise` config section on memory
 * backends (real rotation registry and audit log in a temporary directory).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BackendRegistry } from '@olocus/hsm-core';
import { memoryBackendFactory, MemoryKeyStore } from '@olocus/hsm-core/testing';
import { openAuditLog, type AuditRecord } from '@olocus/hsm-compliance';
import { CedarAuthorizer, openEnterprise, type AuthorizationRequest } from '@olocus/hsm-enterprise';
import { appBackup, appCreate, appShow, appSign, approve, parseCallContext, parsePairs, parsePrincipal, policyTest, policyValidate, poolStatus, requestOperation, type EnterpriseOpener } from '../src/commands/enterprise.js';
import type { CliContext } from '../src/context.js';
import { softwareBackendFactory } from '@olocus/hsm-backend-software';
import { verifyBundle } from '@olocus/hsm-backup';
import { existsSync } from 'node:fs';

const dir = mkdtempSync(join(tmpdir(), 'olocus-cli-enterprise-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function capture(actor = 'alice'): CliContext & { out: string[]; json_: unknown[] } {
  const out: string[] = [];
  const json_: unknown[] = [];
  return {
    globals: { actor },
    json: false,
    cwd: dir,
    env: {},
    stdout: process.stdout,
    stderr: process.stderr,
    exitCode: 0,
    print: (line = '') => out.push(line),
    printJson: (v: unknown) => json_.push(v),
    note: () => undefined,
    out,
    json_,
  } as CliContext & { out: string[]; json_: unknown[] };
}

mkdirSync(join(dir, 'policies', 'global'), { recursive: true });
mkdirSync(join(dir, 'policies', 'apps', 'billing'), { recursive: true });
writeFileSync(join(dir, 'policies', 'global', 'ops.cedar'), 'permit (principal in Olocus::Group::"ops", action == Olocus::Action::"export-public", resource);\n');
writeFileSync(
  join(dir, 'policies', 'apps', 'billing', 'sign.cedar'),
  'permit (principal, action == Olocus::Action::"sign", resource in Olocus::Application::"billing")\nwhen { context has purpose && context.purpose == "invoice" };\n',
);

const stores = [new MemoryKeyStore('a'), new MemoryKeyStore('b')];
const section = {
  pool: {
    members: [
      { name: 'mem-a', backend: { type: 'mem-a' }, zone: 'z1' },
      { name: 'mem-b', backend: { type: 'mem-b' }, zone: 'z2', weight: 2 },
    ],
  },
  policies: { global: 'policies/global', applications: 'policies/apps' },
};
const records: AuditRecord[] = [];

const opener: EnterpriseOpener = async () => {
  const registry = new BackendRegistry();
  registry.register({ ...memoryBackendFactory(stores[0]), type: 'mem-a' });
  registry.register({ ...memoryBackendFactory(stores[1]), type: 'mem-b' });
  const log = await openAuditLog({ storage: { kind: 'sqlite', path: join(dir, 'audit.db') } });
  const enterprise = await openEnterprise({ config: section, baseDir: dir, storage: { kind: 'sqlite', path: join(dir, 'registry.db') }, rotationPolicy: { allowEmergencyRotation: true }, audit: { append: (e) => log.append(e) }, registry });
  return {
    enterprise,
    actor: 'alice',
    async close() {
      await enterprise.close();
      await log.flush();
      for await (const r of log.iterate()) if (!records.some((x) => x.seq === r.seq)) records.push(r);
      await log.close();
    },
  };
};

describe('enterprise command helpers', () => {
  it('parses pairs, principals and call contexts, naming the flag on a mistake', () => {
    expect(parsePairs('--tag', ['env=prod', 'team=a=b'])).toEqual({ env: 'prod', team: 'a=b' });
    expect(() => parsePairs('--tag', ['novalue'])).toThrow(/--tag "novalue" must be KEY=VALUE/);
    expect(parsePrincipal('caller:bob', 'ops,admins', 'key-admin')).toEqual({ type: 'Caller', id: 'bob', groups: ['ops', 'admins'], roles: ['key-admin'] });
    expect(parsePrincipal('app:billing')).toEqual({ type: 'Application', id: 'billing', groups: [] });
    expect(() => parsePrincipal('bob')).toThrow(/app:ID or caller:ID/);
    expect(parseCallContext(['purpose=invoice', 'approvals=2'], 'caller:alice')).toEqual({ principal: { type: 'Caller', id: 'alice', groups: [], roles: [] }, purpose: 'invoice', approvals: 2 });
    expect(() => parseCallContext(['colour=red'], 'caller:alice')).toThrow(/--context colour: unknown key/);
  });

  it('policy validate: a key policy, a Cedar file, and a Cedar error with file and line', async () => {
    const ctx = capture();
    writeFileSync(join(dir, 'p.json'), JSON.stringify({ algorithm: 'Ed25519', maxUsesPerVersion: 10 }));
    await policyValidate(ctx, { file: join(dir, 'p.json') });
    await policyValidate(ctx, { file: join(dir, 'policies', 'global', 'ops.cedar') });
    expect(ctx.out).toEqual([`${join(dir, 'p.json')}: key policy valid (Ed25519, operations sign, verify, export-public)`, `${join(dir, 'policies', 'global', 'ops.cedar')}: 1 Cedar policy, valid against the schema`]);
    writeFileSync(join(dir, 'bad.cedar'), 'permit (principal, action, resource)\nwhen { resource.colour == "red" };\n');
    await expect(policyValidate(ctx, { file: join(dir, 'bad.cedar') })).rejects.toThrow(/bad\.cedar:2:\d+/);
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ algorithm: 'Ed25519', minFipsLevel: 9 }));
    await expect(policyValidate(ctx, { file: join(dir, 'bad.json') })).rejects.toThrow(/minFipsLevel/);
  });

  it('policy test explains allow and default deny', async () => {
    const load = async () => {
      const a = new CedarAuthorizer();
      a.loadGlobal([{ file: 'ops.cedar', text: readFileSync(join(dir, 'policies', 'global', 'ops.cedar'), 'utf8') }]);
      return a;
    };
    const ctx = capture();
    await policyTest(ctx, { principal: 'caller:oscar', action: 'export-public', resource: 'billing', context: ['groups=ops'] }, load);
    expect(ctx.out[0]).toMatch(/^ALLOW: permitted by global\/ops\.cedar#0 \(policy version global:[0-9a-f]{16}\)$/);
    expect(ctx.exitCode).toBe(0);
    await policyTest(ctx, { principal: 'caller:oscar', action: 'sign', resource: 'billing' }, load);
    expect(ctx.out[1]).toMatch(/^DENY: no policy permits it \(default deny\)/);
    expect(ctx.exitCode).toBe(1);
    await expect(policyTest(ctx, { principal: 'caller:x', action: 'encrypt', resource: 'billing' }, load)).rejects.toThrow(/--action must be one of/);
  });

  it('app create, sign, show, pool status, and a dual-control request approved by two', async () => {
    const ctx = capture();
    writeFileSync(join(dir, 'billing.json'), JSON.stringify({ algorithm: 'ECDSA_P256', zones: ['z2'], dualControl: { approvers: ['olga', 'peter'], required: 2 } }));
    await appCreate(ctx, { app: 'billing', policy: join(dir, 'billing.json'), tag: ['env=prod'] }, opener);
    expect(ctx.out.at(-1)).toBe('created billing: billing.v1 (ECDSA_P256) on mem-b; actor alice');
    expect(JSON.parse(readFileSync(join(dir, 'enterprise-state.json'), 'utf8')).applications[0]).toMatchObject({ appId: 'billing', members: ['mem-b'], tags: { env: 'prod' } });

    writeFileSync(join(dir, 'msg.txt'), 'invoice 42');
    await appSign(ctx, { app: 'billing', in: join(dir, 'msg.txt'), out: join(dir, 'msg.sig'), context: ['purpose=invoice'] }, opener);
    expect(ctx.out.at(-1)).toMatch(/^signed with billing\.v1 \(ECDSA_P256\) on mem-b; policy global:[0-9a-f]{16}\/app:[0-9a-f]{16}; allowed by billing\/sign\.cedar#0$/);
    expect(readFileSync(join(dir, 'msg.sig')).length).toBe(64);
    await expect(appSign(ctx, { app: 'billing', in: join(dir, 'msg.txt'), out: join(dir, 'msg2.sig'), context: ['purpose=refund'] }, opener)).rejects.toMatchObject({ code: 'PermissionDenied' });

    await appShow(ctx, { app: 'billing' }, opener);
    expect(ctx.out.slice(-3).join('\n')).toMatch(/billing: ECDSA_P256 on mem-b[\s\S]*billing\.v1 {2}Active {2}1 signatures/);

    await poolStatus(ctx, {}, opener);
    expect(ctx.out.some((l) => /^mem-a .* up; circuit closed/.test(l))).toBe(true);
    expect(ctx.out.at(-1)).toMatch(/^drift: none/);

    const requester = capture('alice');
    await requestOperation(requester, { app: 'billing', operation: 'emergency-rotation', reason: 'suspected leak' }, opener);
    const id = /request ([0-9a-f-]{36})/.exec(requester.out[0]!)![1]!;
    const asOlga: EnterpriseOpener = async (c) => ({ ...(await opener(c)), actor: 'olga' });
    const asPeter: EnterpriseOpener = async (c) => ({ ...(await opener(c)), actor: 'peter' });
    await approve(capture('olga'), { request: id, execute: true }, asOlga);
    const peter = capture('peter');
    await approve(peter, { request: id, execute: true }, asPeter);
    expect(peter.out[0]).toMatch(/peter approved emergency-rotation of billing: 2 of 2 distinct approvals; executed/);
    const rotations = records.filter((r) => r.type === 'key.rotate' && r.details?.operation === 'emergency-rotation');
    expect(rotations.at(-1)).toMatchObject({ outcome: 'success', details: { approvers: 'olga,peter' } });
    expect(records.filter((r) => r.type === 'key.sign').map((r) => r.outcome)).toEqual(['success', 'failure']);
  });
});

describe('app backup under dual control (software pool members, which can export sealed keys)', () => {
  const vault = join(dir, 'vault');
  mkdirSync(join(vault, 'policies', 'global'), { recursive: true });
  const vaultRecords: AuditRecord[] = [];
  const vaultSection = {
    pool: { members: [{ name: 'soft', backend: { type: 'software', options: { directory: join(vault, 'keys'), passphrase: { env: 'VAULT_PASSPHRASE' }, scrypt: { N: 32768, r: 8, p: 1 } } } }] },
    policies: { global: 'policies/global' },
  };
  const as =
    (actor: string): EnterpriseOpener =>
    async () => {
      const registry = new BackendRegistry();
      registry.register(softwareBackendFactory);
      const log = await openAuditLog({ storage: { kind: 'sqlite', path: join(vault, 'audit.db') } });
      process.env['VAULT_PASSPHRASE'] = 'vault-passphrase-for-tests';
      const enterprise = await openEnterprise({ config: vaultSection, baseDir: vault, storage: { kind: 'sqlite', path: join(vault, 'registry.db') }, audit: { append: (e) => log.append(e) }, registry });
      return {
        enterprise,
        actor,
        audit: log,
        configPath: join(vault, 'config.json'),
        async close() {
          await enterprise.close();
          await log.flush();
          for await (const r of log.iterate()) if (!vaultRecords.some((x) => x.seq === r.seq)) vaultRecords.push(r);
          await log.close();
        },
      };
    };

  it('refuses without approvals and writes nothing; app request + two approvers let one backup through, recorded with them; approve --execute points at app backup', async () => {
    writeFileSync(join(vault, 'vault.json'), JSON.stringify({ algorithm: 'ECDSA_P256', backupRequired: true, allowedOperations: ['sign', 'verify', 'backup'], dualControl: { approvers: ['olga', 'peter'], required: 2, operations: ['backup'] } }));
    await appCreate(capture(), { app: 'vault', policy: join(vault, 'vault.json') }, as('alice'));
    const out = join(vault, 'vault.olocus-backup');
    await expect(appBackup(capture(), { app: 'vault', out }, as('alice'))).rejects.toMatchObject({ code: 'PermissionDenied', message: expect.stringContaining('app request --app vault --operation backup') });
    expect(existsSync(out)).toBe(false);
    await expect(requestOperation(capture(), { app: 'vault', operation: 'encrypt' as never, reason: 'x' }, as('alice'))).rejects.toThrow(/--operation must be one of destroy, emergency-rotation, backup/);

    const requester = capture('alice');
    await requestOperation(requester, { app: 'vault', operation: 'backup', reason: 'off-site copy' }, as('alice'));
    const id = /request ([0-9a-f-]{36})/.exec(requester.out[0]!)![1]!;
    await approve(capture('olga'), { request: id, execute: true }, as('olga'));
    await expect(appBackup(capture(), { app: 'vault', out, request: id }, as('alice'))).rejects.toMatchObject({ code: 'PermissionDenied', message: expect.stringMatching(/needs 2 distinct approvers; request .* has 1 \(olga\)/) });
    expect(existsSync(out)).toBe(false);
    const notes: string[] = [];
    const peter = { ...capture('peter'), note: (line: string) => notes.push(line) };
    await approve(peter, { request: id, execute: true }, as('peter'));
    expect(peter.out[0]).toMatch(/peter approved backup of vault: 2 of 2 distinct approvals$/);
    expect(notes).toEqual([`${id} is approved: back up with olocus-hsm app backup --app vault --request ${id} --out FILE`]);

    const ctx = capture('alice');
    await appBackup(ctx, { app: 'vault', out, request: id }, as('alice'));
    expect(ctx.out[0]).toMatch(/^backup written: .*vault\.olocus-backup \(1 key version\(s\) of vault from soft, sha256 [0-9a-f]{64}\)$/);
    expect(ctx.out[1]).toBe(`  under dual control: request ${id} approved by olga, peter (now used)`);
    const pinned = JSON.parse(readFileSync(join(vault, 'backup-signers.json'), 'utf8')) as { signers: { fingerprint: string }[] };
    const verified = await verifyBundle(out, { trustedSigners: pinned.signers.map((x) => x.fingerprint) });
    expect(verified.keys.map((k) => k.id)).toEqual(['vault.v1']);
    expect(JSON.parse(readFileSync(join(vault, 'enterprise-state.json'), 'utf8')).approvals[0]).toMatchObject({ id, state: 'executed' });
    await expect(appBackup(capture(), { app: 'vault', out: join(vault, 'again.olocus-backup'), request: id }, as('alice'))).rejects.toMatchObject({ message: expect.stringContaining('already used') });

    const backups = vaultRecords.filter((r) => r.type === 'admin.action' && r.details?.action === 'backup');
    expect(backups.map((r) => [r.outcome, r.actor, r.details?.approvers ?? null])).toEqual([
      ['failure', 'alice', null],
      ['failure', 'alice', null],
      ['success', 'alice', 'olga,peter'],
      ['failure', 'alice', null],
    ]);
  }, 120_000);
});

// keeps the principal type import used for readers of this file
export type { AuthorizationRequest };
