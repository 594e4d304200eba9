/**
 * What a one-shot `sign` / `verify` loads (issue 12: start only what they use), recorded by a
 * module resolve hook in the real process: a plain key loads neither the rotation package's main
 * entry (Kysely inside) nor the compliance rules and reports; a logical key loads the registry.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, run, tempDir } from './helpers.js';

const PRELOAD = fileURLToPath(new URL('./fixtures/module-log.mjs', import.meta.url));

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir()));
afterAll(async () => cleanup?.());

async function loaded(args: string[]): Promise<string[]> {
  const log = join(dir, 'modules.log');
  rmSync(log, { force: true });
  const { testEnv } = await import('./helpers.js');
  const result = await run(process.execPath, ['--import', PRELOAD, BIN, '--config', join(dir, 'store', 'config.json'), ...args], { cwd: dir, env: testEnv({ OLOCUS_TEST_MODULE_LOG: log }) });
  expect(result.code, result.stderr).toBe(0);
  return readFileSync(log, 'utf8').trim().split('\n');
}

const rotationMain = (urls: string[]) => urls.filter((u) => u.endsWith('/rotation/dist/index.js'));
const complianceMain = (urls: string[]) => urls.filter((u) => u.endsWith('/compliance/dist/index.js'));
const kysely = (urls: string[]) => urls.filter((u) => /kysely|compliance\/dist\/esm-/.test(u));

describe('one-shot sign and verify load only what they use', () => {
  it('a plain key: no registry, no Kysely, no compliance reports; a logical key: the registry', async () => {
    const setup = async (args: string[]) => {
      const r = await run(process.execPath, [BIN, ...args], { cwd: dir });
      expect(r.code, r.stderr).toBe(0);
    };
    await setup(['init', '--dir', join(dir, 'store')]);
    const config = ['--config', join(dir, 'store', 'config.json')];
    await setup([...config, 'keys', 'create', '--id', 'plain', '--algorithm', 'ECDSA_P256', '--no-rotation']);
    await setup([...config, 'keys', 'create', '--id', 'logical', '--algorithm', 'ECDSA_P256']); // the registry exists from here
    await setup([...config, 'sign', '--key', 'plain', '--in', join(dir, 'store', 'config.json'), '--out', join(dir, 'plain.sig')]);
    await setup([...config, 'sign', '--key', 'logical', '--in', join(dir, 'store', 'config.json'), '--out', join(dir, 'logical.sig')]);

    for (const args of [
      ['sign', '--key', 'plain', '--in', join(dir, 'store', 'config.json'), '--out', join(dir, 'plain2.sig')],
      ['verify', '--key', 'plain', '--in', join(dir, 'store', 'config.json'), '--signature', join(dir, 'plain.sig')],
    ]) {
      const urls = await loaded(args);
      expect(urls.some((u) => u.endsWith('/rotation/dist/lite.js')), `${args[0]}: the registry was looked into`).toBe(true);
      expect(urls.some((u) => u.endsWith('/compliance/dist/audit.js')), `${args[0]}: the audit log was loaded`).toBe(true);
      expect(rotationMain(urls), `${args[0]} plain`).toEqual([]);
      expect(complianceMain(urls), `${args[0]} plain`).toEqual([]);
      expect(kysely(urls), `${args[0]} plain`).toEqual([]);
    }
    for (const args of [
      ['sign', '--key', 'logical', '--in', join(dir, 'store', 'config.json'), '--out', join(dir, 'logical2.sig')],
      ['verify', '--key', 'logical', '--in', join(dir, 'store', 'config.json'), '--signature', join(dir, 'logical.sig')],
    ]) {
      const urls = await loaded(args);
      expect(rotationMain(urls).length, `${args[0]} logical: the registry is opened`).toBeGreaterThan(0);
      expect(complianceMain(urls), `${args[0]} logical`).toEqual([]);
    }
  }, 60_000);
});
