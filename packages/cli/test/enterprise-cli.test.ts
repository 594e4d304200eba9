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

    // approve takes the request id as its argument; an unknown one is refused with a code, not a stack.
    const approve = await run(['approve', '00000000-0000-4000-8000-000000000000', '--execute', '--json']);
    expect(approve.code, show(approve)).toBe(2);
    expect((JSON.parse(approve.stdout) as { error: { code: string } }).error.code).toMatch(/^[A-Z][A-Za-z]+$/);
    expect(approve.stderr).not.toMatch(/\n\s+at /);
  }, 240_000);
});
