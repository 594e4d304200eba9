import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const repo = join(root, '..');

// The examples run as an application would: compiled (`pnpm build` ran tsc on src/), then node.
async function example(name: string, wrapWithToken = false): Promise<string> {
  const script = join(root, 'dist', `${name}.js`);
  const [command, args] = wrapWithToken ? [process.execPath, [join(root, 'scripts', 'with-softhsm-token.mjs'), process.execPath, script]] : [process.execPath, [script]];
  const env = { ...process.env };
  delete env.OLOCUS_HSM_PASSPHRASE;
  const { stdout } = await run(command, args, { cwd: root, env, timeout: 90_000 });
  return stdout;
}

describe('examples (the programs the README starts)', () => {
  it('sign-software: generates, signs, verifies, rejects a tampered message, exports PEM', async () => {
    const out = await example('sign-software');
    expect(out).toMatch(/key invoices-2026 \(ECDSA_P256\) in software:/);
    expect(out).toContain('verified: true');
    expect(out).toContain('tampered verified: false');
    expect(out).toContain('-----BEGIN PUBLIC KEY-----');
  });

  it('sign-softhsm: signs on a throwaway SoftHSM token', async () => {
    const out = await example('sign-softhsm', true);
    expect(out).toMatch(/key release-\d+ on pkcs11:/);
    expect(out).toContain('verified: true');
    expect(out).toMatch(/FIPS: none level 0 \(none\)/);
  });

  it('rotate-and-verify: old signatures verify after a rotation, naming the version', async () => {
    const out = await example('rotate-and-verify');
    expect(out).toContain('signed with payments v1');
    expect(out).toContain('after rotation, signing uses v2');
    expect(out).toContain('old signature verified: true (by v1)');
    expect(out).toContain('new signature verified: true (by v2)');
    expect(out).toMatch(/v1: Superseded/);
    expect(out).toMatch(/v2: Active/);
  });

  it('the README shows each example exactly as it is in examples/src', () => {
    const readme = readFileSync(join(repo, 'README.md'), 'utf8');
    const blocks = [...readme.matchAll(/<!-- example: (examples\/src\/[\w-]+\.ts) -->\n```ts\n([\s\S]*?)```/g)];
    expect(blocks.map((b) => b[1])).toEqual(['examples/src/sign-software.ts']);
    for (const [, file, code] of blocks) expect(code, `${file} in README.md`).toBe(readFileSync(join(repo, file!), 'utf8'));
  });
});
