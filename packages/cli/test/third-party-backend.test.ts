import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, tempDir, testEnv } from './helpers.js';

// A backend core does not know, installed in the application's folder and named by package in the
// config: the CLI loads it through core's registry.
describe('a third-party backend named by package in the config', () => {
  it('is loaded from the application folder and answers info and keys list', async () => {
    const { dir, cleanup } = await tempDir('olocus-cli-3p-');
    try {
      const pkgDir = join(dir, 'node_modules', '@acme', 'olocus-backend');
      await mkdir(pkgDir, { recursive: true });
      await writeFile(join(pkgDir, 'package.json'), JSON.stringify({ name: '@acme/olocus-backend', version: '1.0.0', type: 'module', exports: './index.js' }));
      // the smallest backend that answers the calls below; what is tested is that the CLI finds
      // and loads a package it has never heard of
      await writeFile(
        join(pkgDir, 'index.js'),
        `class AcmeBackend {
  type = 'acme-hsm';
  instanceId = 'acme:lab-1';
  async initialize() {}
  async close() {}
  async info() { return { backend: 'acme-hsm', description: 'ACME lab HSM', manufacturer: 'ACME' }; }
  async capabilities() { return { algorithms: ['ECDSA_P256'], persistentKeys: true, hardwareBacked: true, remoteVerify: false }; }
  async fipsStatus() { return { standard: 'none', level: 0, approvedMode: false, evidence: 'none', notes: 'lab unit' }; }
  async healthCheck() { return { healthy: true, latencyMs: 0, message: 'ok' }; }
  async listKeys() { return { keys: [] }; }
}
export const backendFactories = [{ type: 'acme-hsm', parseOptions: () => ({}), create: () => new AcmeBackend() }];
`,
      );
      await writeFile(join(dir, 'config.json'), JSON.stringify({ backend: { type: 'acme-hsm', package: '@acme/olocus-backend', options: {} }, audit: { enabled: false } }));
      const run = (args: string[]) => cli(['--config', 'config.json', ...args], { cwd: dir, env: testEnv() });
      const info = await run(['info', '--json']);
      expect(info.code, info.stderr).toBe(0);
      expect(info.stdout).toContain('ACME lab HSM');
      const list = await run(['keys', 'list', '--json']);
      expect(list.code, list.stderr).toBe(0);
    } finally {
      await cleanup();
    }
  });
});
