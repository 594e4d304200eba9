import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, lines, tempDir, TEST_PASSPHRASE, type RunResult } from './helpers.js';

/**
 * The audit log through the CLI, on the embedded default (SQLite next to the config): every
 * key operation of a command is recorded; `audit verify` checks the chain against the signed
 * checkpoints (the key comes from the backend); tampering with the file is found and named;
 * `audit export` / `audit tail`; a failing audit store refuses signatures (failClosed); and
 * `compliance report` writes a signed report whose signature `compliance verify-report` checks.
 */

let dir: string;
let cleanup: () => Promise<void>;
const MESSAGE = 'audit me: olocus-distinctive-payload-7f3a';

async function ok(args: string[]): Promise<RunResult> {
  const r = await cli(args, { cwd: dir });
  expect(r.code, `${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
}

async function json<T>(args: string[], code = 0): Promise<T> {
  const r = await cli([...args, '--json'], { cwd: dir });
  expect(r.code, `${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(code);
  return JSON.parse(r.stdout) as T;
}

const dbPath = (): string => join(dir, '.olocus', 'audit.db');

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('olocus-cli-audit-'));
  await ok(['init']);
  await writeFile(join(dir, 'msg.txt'), MESSAGE);
  await ok(['keys', 'create', '--id', 'pay', '--algorithm', 'ECDSA_P256']);
  await ok(['sign', '--key', 'pay', '--in', 'msg.txt', '--out', 'msg.sig']);
  await ok(['verify', '--key', 'pay', '--in', 'msg.txt', '--signature', 'msg.sig']);
  await ok(['keys', 'rotate', '--id', 'pay', '--reason', 'test rotation']);
});
afterAll(async () => cleanup?.());

interface Rec {
  seq: number;
  type: string;
  actor: string;
  outcome: string;
  keyId?: string;
  baseKeyId?: string;
  keyVersion?: number;
  dataDigest?: string;
  errorCode?: string;
  details?: Record<string, unknown>;
}

async function records(): Promise<Rec[]> {
  const r = await cli(['audit', 'tail', '--lines', '1000', '--json'], { cwd: dir });
  expect(r.code, r.stderr).toBe(0);
  return lines(r.stdout).map((l) => JSON.parse(l) as Rec);
}

describe('audit log through the CLI', () => {
  it('records each operation with its actor, key and version, and the data only by digest', async () => {
    const all = await records();
    const sign = all.find((r) => r.type === 'key.sign' && r.baseKeyId === 'pay');
    expect(sign).toMatchObject({ outcome: 'success', keyId: 'pay.v1', keyVersion: 1 });
    expect(sign!.dataDigest).toBe(`sha256:${createHash('sha256').update(MESSAGE).digest('hex')}`);
    expect(all.some((r) => r.type === 'key.verify' && r.keyId === 'pay.v1' && r.details?.['valid'] === true)).toBe(true);
    expect(all.some((r) => r.type === 'key.rotate' && r.baseKeyId === 'pay' && r.keyVersion === 2)).toBe(true);
    expect(all.some((r) => r.type === 'key.state' && r.keyId === 'pay.v1' && r.details?.['to'] === 'Superseded')).toBe(true);
    expect(all.some((r) => r.type === 'key.generate' && r.keyId === 'pay.v2')).toBe(true);
    expect(all.some((r) => r.type === 'audit.access')).toBe(true);
    for (const r of all) expect(r.actor).not.toBe('');
    const bytes = await readFile(dbPath());
    expect(bytes.includes(Buffer.from('olocus-distinctive-payload'))).toBe(false);
    expect(bytes.includes(Buffer.from(TEST_PASSPHRASE))).toBe(false);
  });

  it('records a wrong passphrase as auth.failure, without the passphrase', async () => {
    const wrong = 'not-the-passphrase-93c1d7';
    await writeFile(join(dir, 'wrong.txt'), wrong);
    const r = await cli(['--passphrase-file', 'wrong.txt', 'keys', 'list'], { cwd: dir });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/WrongPassphrase/);
    const failure = (await records()).filter((x) => x.type === 'auth.failure').at(-1);
    expect(failure).toMatchObject({ outcome: 'failure', errorCode: 'WrongPassphrase' });
    expect((await readFile(dbPath())).includes(Buffer.from(wrong))).toBe(false);
  });

  it('audit verify: intact, then names the first edited record; exit 1', async () => {
    const clean = await json<{ audit: { ok: boolean; records: number; checkpoints: number } }>(['audit', 'verify']);
    expect(clean.audit.ok).toBe(true);
    expect(clean.audit.checkpoints).toBeGreaterThan(0);

    const copy = join(dir, 'audit.db.bak');
    await writeFile(copy, await readFile(dbPath()));
    const db = new Database(dbPath());
    const target = db.prepare("SELECT seq FROM audit_records WHERE type = 'key.sign' ORDER BY seq LIMIT 1").get() as { seq: number };
    db.prepare('UPDATE audit_records SET actor = ? WHERE seq = ?').run('mallory', target.seq);
    db.close();
    const r = await cli(['audit', 'verify', '--json'], { cwd: dir });
    expect(r.code, r.stderr).toBe(1);
    const bad = JSON.parse(r.stdout) as { audit: { ok: boolean; firstBadSeq: number; problem: string; message: string } };
    expect(bad.audit).toMatchObject({ ok: false, firstBadSeq: target.seq, problem: 'edited' });
    expect(bad.audit.message).toContain(String(target.seq));
    const human = await cli(['audit', 'verify'], { cwd: dir });
    expect(human.code).toBe(1);
    expect(human.stderr).toMatch(/TAMPERED/);
    await writeFile(dbPath(), await readFile(copy));
    for (const suffix of ['-wal', '-shm']) await writeFile(dbPath() + suffix, '').catch(() => undefined);
  });

  it('audit export writes JSON Lines with records and checkpoints', async () => {
    const out = await json<{ export: { path: string; records: number; checkpoints: number } }>(['audit', 'export', '--out', 'audit.jsonl']);
    expect(out.export.records).toBeGreaterThan(5);
    const exported = lines(await readFile(join(dir, 'audit.jsonl'), 'utf8')).map((l) => JSON.parse(l) as { kind: string });
    expect(exported[0]!.kind).toBe('header');
    expect(exported.filter((l) => l.kind === 'record')).toHaveLength(out.export.records);
    expect(exported.some((l) => l.kind === 'checkpoint')).toBe(true);
    const bad = await cli(['audit', 'export', '--out', 'x.jsonl', '--from', 'yesterday'], { cwd: dir });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--from: "yesterday" is not a date/);
  });

  it('compliance report: signed HTML; verify-report accepts it and finds a one-byte change', async () => {
    const made = await json<{ report: { path: string; signature: string; violations: number; status: string } }>(['compliance', 'report', '--framework', 'pci-dss', '--format', 'html', '--out', 'pci.html']);
    const html = await readFile(made.report.path, 'utf8');
    expect(html).toMatch(/<html/i);
    // The software backend holds keys outside an HSM: PCI-3.6.1.2 must be among the violations.
    expect(html).toContain('PCI-3.6.1.2');
    expect(made.report.violations).toBeGreaterThan(0);
    const valid = await json<{ valid: boolean }>(['compliance', 'verify-report', '--report', 'pci.html']);
    expect(valid.valid).toBe(true);
    const bytes = await readFile(made.report.path);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 1;
    await writeFile(made.report.path, bytes);
    const altered = await cli(['compliance', 'verify-report', '--report', 'pci.html'], { cwd: dir });
    expect(altered.code).toBe(1);
    expect(altered.stderr).toMatch(/ALTERED/);
    const unknown = await cli(['compliance', 'report', '--framework', 'iso-27001'], { cwd: dir });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/--framework: "iso-27001" is not one of/);
  });

  it('fails closed: a signature is refused when its audit record cannot be written', async () => {
    const db = new Database(dbPath());
    db.exec("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_records BEGIN SELECT RAISE(ABORT, 'audit store refuses writes'); END;");
    db.close();
    try {
      const r = await cli(['sign', '--key', 'pay', '--in', 'msg.txt', '--out', 'refused.sig'], { cwd: dir });
      expect(r.code, r.stdout + r.stderr).toBe(2);
      expect(r.stderr).toMatch(/audit/i);
      await expect(readFile(join(dir, 'refused.sig'))).rejects.toThrow();
    } finally {
      const again = new Database(dbPath());
      again.exec('DROP TRIGGER refuse_audit');
      again.close();
    }
    await ok(['sign', '--key', 'pay', '--in', 'msg.txt', '--out', 'after.sig']);
  });
});
