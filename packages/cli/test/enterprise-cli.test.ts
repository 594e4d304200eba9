import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, tempDir, testEnv, type RunResult } from './helpers.js';

/**
 * The enterprise commands as wired in the command tree (the functions themselves are tested in
 * enterprise-commands.test.ts): each parses its flags and positional argument, runs against the
 * config's `enterprise` section (a pool of two software stores) and answers in --json.
 */

const show = (r: RunResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

let dir: string;
let cleanup: () => Promise<void>;
const run = (args: string[]) => cli(args, { cwd: dir, env: testEnv() });

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('olocus-cli-enterprise-'));
  const init = await run(['init']);
  expect(init.code, show(init)).toBe(0);
  for (const m of ['pool-a', 'pool-b']) await mkdir(join(dir, '.olocus', m), { recursive: true, mode: 0o700 });
  await mkdir(join(dir, '.olocus', 'policies', 'global'), { recursive: true });
  await mkdir(join(dir, '.olocus', 'policies', 'apps', 'billing'), { recursive: true });
  await writeFile(
    join(dir, '.olocus', 'policies', 'apps', 'billing', 'sign.cedar'),
    'permit (principal, action == Olocus::Action::"sign", resource in Olocus::Application::"billing")\nwhen { context has purpose && context.purpose == "invoice" };\n',
  );
  const path = join(dir, '.olocus', 'config.json');
  const config = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  const passphrase = { env: 'OLOCUS_HSM_PASSPHRASE' };
  config.enterprise = {
    pool: {
      members: [
        { name: 'a', backend: { type: 'software', options: { directory: join(dir, '.olocus', 'pool-a'), passphrase } }, zone: 'z1' },
        { name: 'b', backend: { type: 'software', options: { directory: join(dir, '.olocus', 'pool-b'), passphrase } }, zone: 'z2' },
      ],
    },
    policies: { global: 'policies/global', applications: 'policies/apps' },
  };
  await writeFile(path, JSON.stringify(config, null, 2));
  await writeFile(join(dir, 'billing.json'), JSON.stringify({ algorithm: 'ECDSA_P256', zones: ['z2'] }));
  await writeFile(join(dir, 'msg.txt'), 'invoice 42');
}, 120_000);

afterAll(async () => {
  await cleanup?.();
});

describe('enterprise commands through the binary', () => {
  it('policy validate FILE (positional) answers in --json; a file that is neither JSON nor .cedar is InvalidArgument', async () => {
    const ok = await run(['policy', 'validate', 'billing.json', '--json']);
    expect(ok.code, show(ok)).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ kind: 'key-policy', valid: true, policy: { algorithm: 'ECDSA_P256' } });
    const cedar = await run(['policy', 'validate', join('.olocus', 'policies', 'apps', 'billing', 'sign.cedar'), '--json']);
    expect(JSON.parse(cedar.stdout)).toMatchObject({ kind: 'cedar', valid: true, policies: 1 });
    await writeFile(join(dir, 'bad.txt'), '{nope');
    const bad = await run(['policy', 'validate', 'bad.txt', '--json']);
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stdout)).toMatchObject({ error: { code: 'InvalidArgument' } });
    const missing = await run(['policy', 'validate']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/UsageError: missing required argument 'file'/);
  });

  it('app create, app sign (repeatable --context), app show, pool status, policy test, approve', async () => {
    const created = await run(['app', 'create', '--app', 'billing', '--policy', 'billing.json', '--tag', 'env=prod', '--tag', 'team=fin', '--json']);
    expect(created.code, show(created)).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ app: 'billing', keyId: 'billing.v1', members: ['b'], tags: { env: 'prod', team: 'fin' } });
    expect((JSON.parse(created.stdout) as { actor: string }).actor).toMatch(/\S/);
    const withActor = await run(['app', 'create', '--app', 'other', '--policy', 'billing.json', '--actor', 'mallory']);
    expect(withActor.code).toBe(2);
    expect(withActor.stderr).toMatch(/UsageError: unknown option '--actor'/);

    const signed = await run(['app', 'sign', '--app', 'billing', '--in', 'msg.txt', '--out', 'msg.sig', '--context', 'purpose=invoice', '--json']);
    expect(signed.code, show(signed)).toBe(0);
    expect(JSON.parse(signed.stdout)).toMatchObject({ app: 'billing', keyId: 'billing.v1', member: 'b', decision: { decision: 'allow', determining: ['billing/sign.cedar#0'] } });
    expect((await readFile(join(dir, 'msg.sig'))).length).toBe(64);

    const refused = await run(['app', 'sign', '--app', 'billing', '--in', 'msg.txt', '--out', 'msg2.sig', '--context', 'purpose=refund', '--json']);
    expect(refused.code, show(refused)).toBe(2);
    expect(JSON.parse(refused.stdout)).toMatchObject({ error: { code: 'PermissionDenied' } });

    const shown = await run(['app', 'show', '--app', 'billing', '--json']);
    expect(shown.code, show(shown)).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({ app: 'billing', members: ['b'], versions: [{ keyId: 'billing.v1', state: 'Active', usageCount: 1 }] });

    const pool = await run(['pool', 'status', '--json']);
    expect(pool.code, show(pool)).toBe(0);
    const status = JSON.parse(pool.stdout) as { members: { name: string }[]; drift: { missing: unknown[] } };
    expect(status.members.map((m) => m.name).sort()).toEqual(['a', 'b']);
    expect(status.drift.missing).toEqual([]);

    const deny = await run(['policy', 'test', '--principal', 'caller:oscar', '--action', 'sign', '--resource', 'billing', '--context', 'purpose=refund']);
    expect(deny.code, show(deny)).toBe(1);
    expect(deny.stdout).toMatch(/^DENY: no policy permits it \(default deny\)/);
    const denyJson = await run(['policy', 'test', '--principal', 'caller:oscar', '--action', 'sign', '--resource', 'billing', '--context', 'purpose=refund', '--json']);
    expect(JSON.parse(denyJson.stdout)).toMatchObject({ decision: 'deny' });
    expect(denyJson.code, show(denyJson)).toBe(1);
    const allow = await run(['policy', 'test', '--principal', 'caller:oscar', '--action', 'sign', '--resource', 'billing', '--context', 'purpose=invoice', '--json']);
    expect(allow.code, show(allow)).toBe(0);
    expect(JSON.parse(allow.stdout)).toMatchObject({ decision: 'allow' });

    // app backup and app request are wired: a policy without backup refuses; one that allows it backs up, and backup verify accepts the bundle
    const noBackup = await run(['app', 'backup', '--app', 'billing', '--out', 'billing.olocus-backup', '--json']);
    expect(noBackup.code, show(noBackup)).toBe(2);
    expect(JSON.parse(noBackup.stdout)).toMatchObject({ error: { code: 'PolicyViolation', message: expect.stringContaining('does not allow backup') } });
    await writeFile(join(dir, 'archive.json'), JSON.stringify({ algorithm: 'ECDSA_P256', backupRequired: true, allowedOperations: ['sign', 'verify', 'backup'] }));
    expect((await run(['app', 'create', '--app', 'archive', '--policy', 'archive.json'])).code).toBe(0);
    const backedUp = await run(['app', 'backup', '--app', 'archive', '--out', 'archive.olocus-backup', '--json']);
    expect(backedUp.code, show(backedUp)).toBe(0);
    expect(JSON.parse(backedUp.stdout)).toMatchObject({ app: 'archive', keys: [{ id: 'archive.v1', method: 'sealed-file' }], approvals: [], signerPinned: true });
    const verified = await run(['backup', 'verify', 'archive.olocus-backup', '--json']);
    expect(verified.code, show(verified)).toBe(0);
    const request = await run(['app', 'request', '--app', 'archive', '--operation', 'backup', '--reason', 'drill', '--json']);
    expect(request.code, show(request)).toBe(2);
    expect(JSON.parse(request.stdout)).toMatchObject({ error: { code: 'InvalidArgument', message: expect.stringContaining('not under dual control') } });

    // approve takes the request id as its argument; an unknown one is refused with a code, not a stack.
    const approve = await run(['approve', '00000000-0000-4000-8000-000000000000', '--execute', '--json']);
    expect(approve.code, show(approve)).toBe(2);
    expect((JSON.parse(approve.stdout) as { error: { code: string } }).error.code).toMatch(/^[A-Z][A-Za-z]+$/);
    expect(approve.stderr).not.toMatch(/\n\s+at /);
  }, 240_000);

  it('app create writes the backup a backupRequired policy asks for into enterprise.backup.directory; under dual control it says what is missing', async () => {
    const path = join(dir, '.olocus', 'config.json');
    const config = JSON.parse(await readFile(path, 'utf8')) as { enterprise: Record<string, unknown> };
    config.enterprise.backup = { directory: 'backups' };
    await writeFile(path, JSON.stringify(config, null, 2));
    await writeFile(join(dir, 'vaulted.json'), JSON.stringify({ algorithm: 'ECDSA_P256', backupRequired: true, allowedOperations: ['sign', 'verify', 'backup'] }));
    const created = await run(['app', 'create', '--app', 'vaulted', '--policy', 'vaulted.json', '--json']);
    expect(created.code, show(created)).toBe(0);
    const { backup } = JSON.parse(created.stdout) as { backup: { file: string; sha256: string } };
    expect(backup.file).toMatch(new RegExp(`^${join(dir, '.olocus', 'backups', 'vaulted-').replace(/[/.]/g, '\\$&')}.*\\.olocus-backup$`));
    const verified = await run(['backup', 'verify', backup.file, '--json']);
    expect(verified.code, show(verified)).toBe(0);

    await writeFile(join(dir, 'guarded.json'), JSON.stringify({ algorithm: 'ECDSA_P256', backupRequired: true, allowedOperations: ['sign', 'verify', 'backup'], dualControl: { approvers: ['olga', 'peter'], required: 2, operations: ['backup'] } }));
    const guarded = await run(['app', 'create', '--app', 'guarded', '--policy', 'guarded.json']);
    expect(guarded.code, show(guarded)).toBe(0);
    expect(guarded.stderr).toMatch(/guarded's policy requires a backup, not made yet: backups of guarded are under dual control: olocus-hsm app request --app guarded --operation backup/);
  }, 240_000);

  it('policy put, list and remove keep Cedar policies in the registry database, and app sign obeys them with policies.registry on', async () => {
    const path = join(dir, '.olocus', 'config.json');
    const config = JSON.parse(await readFile(path, 'utf8')) as { enterprise: { policies: Record<string, unknown> } };
    config.enterprise.policies.registry = true;
    await writeFile(path, JSON.stringify(config, null, 2));
    await writeFile(join(dir, 'ledger-sign.cedar'), 'permit (principal, action == Olocus::Action::"sign", resource in Olocus::Application::"ledger");\n');
    await writeFile(join(dir, 'broken.cedar'), 'permit (principal, action, resource)\nwhen { resource.colour == "red" };\n');

    const broken = await run(['policy', 'put', 'broken.cedar', '--scope', 'ledger', '--name', 'sign', '--json']);
    expect(broken.code, show(broken)).toBe(2);
    expect(JSON.parse(broken.stdout)).toMatchObject({ error: { code: 'InvalidConfiguration', message: expect.stringMatching(/registry:ledger\/sign:2:\d+/) } });
    const put = await run(['policy', 'put', 'ledger-sign.cedar', '--scope', 'ledger', '--name', 'sign', '--json']);
    expect(put.code, show(put)).toBe(0);
    expect(JSON.parse(put.stdout)).toMatchObject({ scope: 'ledger', name: 'sign', version: 1 });

    await writeFile(join(dir, 'ledger.json'), JSON.stringify({ algorithm: 'ECDSA_P256' }));
    expect((await run(['app', 'create', '--app', 'ledger', '--policy', 'ledger.json'])).code).toBe(0);
    const signed = await run(['app', 'sign', '--app', 'ledger', '--in', 'msg.txt', '--out', 'ledger.sig', '--json']);
    expect(signed.code, show(signed)).toBe(0);
    expect(JSON.parse(signed.stdout)).toMatchObject({ decision: { decision: 'allow', determining: ['ledger/sign@v1#0'] } });

    const explained = await run(['policy', 'test', '--principal', 'caller:zoe', '--action', 'sign', '--resource', 'ledger']);
    expect(explained.code, show(explained)).toBe(0);
    expect(explained.stdout).toMatch(/^ALLOW: permitted by ledger\/sign@v1#0/);

    const removed = await run(['policy', 'remove', '--scope', 'ledger', '--name', 'sign', '--json']);
    expect(removed.code, show(removed)).toBe(0);
    const refused = await run(['app', 'sign', '--app', 'ledger', '--in', 'msg.txt', '--out', 'ledger2.sig', '--json']);
    expect(refused.code, show(refused)).toBe(2);
    expect(JSON.parse(refused.stdout)).toMatchObject({ error: { code: 'PermissionDenied' } });

    const history = await run(['policy', 'list', '--scope', 'ledger', '--name', 'sign', '--json']);
    expect((JSON.parse(history.stdout) as { policies: { version: number; text: string | null }[] }).policies.map((p) => [p.version, p.text === null])).toEqual([
      [1, false],
      [2, true],
    ]);
    const current = await run(['policy', 'list', '--json']);
    expect(JSON.parse(current.stdout)).toEqual({ policies: [] });
    const half = await run(['policy', 'list', '--scope', 'ledger']);
    expect(half.code).toBe(2);
    expect(half.stderr).toMatch(/give --scope and --name together/);
  }, 240_000);
});
