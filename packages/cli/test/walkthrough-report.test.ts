import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, cli, tempDir, type RunResult } from './helpers.js';

/**
 * The README's "The command line" walkthrough, run as written with the built CLI, then the
 * compliance report read back. A clean walkthrough must not report a failure (issue 11: every
 * `keys create` used to record its existence probe as a key.access failure, "1 failures" and a
 * red bar), and the only violations allowed are the ones the software backend causes by being
 * software: PCI-3.6.1.2 (a private key outside an HSM) for the backend `software`.
 */
const SOFTWARE_BACKEND_RULES = new Set(['PCI-3.6.1.2']);

interface Finding {
  ruleId: string;
  severity: string;
  message: string;
  keyId?: string;
  evidence?: Record<string, unknown>;
}

describe('README walkthrough → PCI DSS report', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  const env = cleanEnv({ OLOCUS_HSM_PASSPHRASE: 'walkthrough passphrase, long enough' });
  const run = async (args: string[]): Promise<RunResult> => {
    const result = await cli(args, { cwd: dir, env });
    expect(result.code, `olocus-hsm ${args.join(' ')}\n${result.stderr}${result.stdout}`).toBe(0);
    return result;
  };
  const report = async (name: string): Promise<{ summary: Record<string, unknown>; metrics: { totals: Record<string, number> }; violations: Finding[]; warnings: Finding[]; passes: Finding[] }> => {
    await run(['compliance', 'report', '--framework', 'pci-dss', '--format', 'json', '--out', name]);
    return JSON.parse(await readFile(join(dir, name), 'utf8'));
  };

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('olocus-cli-walkthrough-'));
  });
  afterAll(async () => {
    await cleanup();
  });

  it('init, keys create, sign, verify, export-public, audit verify: the report has no failure and only the software backend violation', async () => {
    await run(['init']);
    await run(['keys', 'create', '--id', 'release', '--algorithm', 'Ed25519']);
    await writeFile(join(dir, 'msg'), 'hello\n');
    await run(['sign', '--key', 'release', '--in', 'msg', '--out', 'msg.sig']);
    await run(['verify', '--key', 'release', '--in', 'msg', '--signature', 'msg.sig']);
    const pem = await run(['keys', 'export-public', '--id', 'release', '--format', 'pem']);
    expect(pem.stdout).toContain('BEGIN PUBLIC KEY');
    const audit = await run(['audit', 'verify']);
    expect(audit.stdout).toMatch(/chain intact/);

    const r = await report('pci.json');
    expect(r.metrics.totals['failures'], JSON.stringify(r.metrics.totals)).toBe(0);
    expect(r.metrics.totals['signs']).toBe(1);
    expect(r.metrics.totals['verifies']).toBe(1);
    expect(r.metrics.totals['keyGenerations']).toBeGreaterThanOrEqual(1);
    const unexpected = r.violations.filter((v) => !SOFTWARE_BACKEND_RULES.has(v.ruleId));
    expect(unexpected.map((v) => `${v.ruleId}: ${v.message}`)).toEqual([]);
    // the software backend's violation is there, and it is about the software backend
    expect(r.violations.map((v) => v.ruleId)).toContain('PCI-3.6.1.2');
    for (const v of r.violations) expect(v.message).toContain('backend software');
    expect(r.summary['violations']).toBe(r.violations.length);

    // the HTML page the README makes: no failure card above zero, no unformatted float
    await run(['compliance', 'report', '--framework', 'pci-dss', '--format', 'html', '--out', 'pci.html']);
    const html = await readFile(join(dir, 'pci.html'), 'utf8');
    expect(html).toContain('<div class="v" id="metric-failures">0</div>');
    expect(html).toMatch(/<th>Verification time<\/th><td>[\d.,]+ (ms|s)<\/td>/);
    expect(html).not.toMatch(/\d\.\d{5,}/);
    expect(html).toContain('data-evidence="none"');
  });

  it('a plain `keys revoke` is reported as revoked, not as compromised', async () => {
    await run(['keys', 'revoke', '--id', 'release', '--reason', 'release line retired']);
    const r = await report('pci-after-revoke.json');
    const all = [...r.violations, ...r.warnings, ...r.passes];
    expect(all.filter((f) => /compromised at|revoked as compromised/.test(f.message)).map((f) => f.message)).toEqual([]);
    const emerg = r.passes.find((f) => f.ruleId === 'LC-EMERG');
    expect(emerg?.message).toContain('revoked without a recorded compromise (release.v1)');
    expect(r.metrics.totals['failures']).toBe(0);
  });
});
