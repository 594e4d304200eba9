import { readFile, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, tempDir, testEnv, type RunResult } from './helpers.js';
import { parseAuditSection, resolveAuditPaths, witnessesFor } from '../src/audit-config.js';
import { nextCheckpointKeyId, rotateCheckpointKey } from '../src/commands/audit.js';
import type { CliContext } from '../src/context.js';

/**
 * Issue 18 items 6, 11 and 12 through the CLI: `audit.witnesses` in the config receives every
 * checkpoint; `audit verify` names a ROLLBACK against the newest witnessed checkpoint and lists the
 * witnesses it asked (human and --json); an emptied log is refused, naming the file; the
 * checkpoint key can be rotated (`audit rotate-checkpoint-key`).
 */

let dir: string;
let witnessDir: string;
let cleanup: () => Promise<void>;
let cleanupWitness: () => Promise<void>;
const dbPath = (): string => join(dir, '.olocus', 'audit.db');
const witnessPath = (): string => join(witnessDir, 'olocus-audit.witness');

async function ok(args: string[]): Promise<RunResult> {
  const r = await cli(args, { cwd: dir });
  expect(r.code, `${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
}

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('olocus-cli-witness-'));
  ({ dir: witnessDir, cleanup: cleanupWitness } = await tempDir('olocus-cli-witness-volume-'));
  await ok(['init']);
  const configPath = join(dir, '.olocus', 'config.json');
  const config = JSON.parse(await readFile(configPath, 'utf8')) as { audit?: Record<string, unknown> };
  config.audit = { ...(config.audit ?? {}), witnesses: [{ kind: 'file', path: witnessPath() }] };
  await writeFile(configPath, JSON.stringify(config, null, 2));
  await writeFile(join(dir, 'msg.txt'), 'witnessed');
  await ok(['keys', 'create', '--id', 'pay', '--algorithm', 'ECDSA_P256']);
  for (let i = 0; i < 3; i++) await ok(['sign', '--key', 'pay', '--in', 'msg.txt', '--out', `msg${i}.sig`]);
});
afterAll(async () => {
  await cleanup?.();
  await cleanupWitness?.();
});

interface Verify {
  audit: { ok: boolean; problem?: string; message: string; firstBadSeq?: number; witnessed?: { size: number; witness: string }; witnesses?: Array<{ witness: string; kind: string; status: string; size?: number }> };
}

describe('audit.witnesses through the CLI', () => {
  it('each command sends its closing checkpoint to the witness file; verify matches it and lists the witness', async () => {
    const entries = (await readFile(witnessPath(), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { size: number; logName: string; note: string });
    expect(entries.length).toBeGreaterThanOrEqual(4);
    expect(entries.every((e) => e.logName === 'olocus-audit')).toBe(true);
    const r = await ok(['audit', 'verify', '--json']);
    const v = JSON.parse(r.stdout) as Verify;
    expect(v.audit.ok).toBe(true);
    expect(v.audit.witnesses).toEqual([expect.objectContaining({ witness: `file ${witnessPath()}`, kind: 'file', status: 'consulted' })]);
    const human = await ok(['audit', 'verify']);
    expect(human.stdout).toContain('matches the newest witnessed checkpoint');
    expect(human.stdout).toContain(`witness file ${witnessPath()}: checkpoint of`);
  });

  it('a rollback of the log file (tail and newer checkpoints deleted) is a ROLLBACK, exit 1, with the witness named', async () => {
    const db = new Database(dbPath());
    const { n } = db.prepare('select max(seq) as n from audit_records').get() as { n: number };
    const keep = Math.floor(n / 2);
    db.prepare('delete from audit_records where seq > ?').run(keep);
    db.prepare('delete from audit_checkpoints where size > ?').run(keep);
    const { hash } = db.prepare('select hash from audit_records where seq = ?').get(keep) as { hash: string };
    db.prepare('update audit_head set seq = ?, hash = ?').run(keep, hash);
    db.close();
    const started = Date.now();
    const r = await cli(['audit', 'verify', '--json'], { cwd: dir });
    const ms = Date.now() - started;
    expect(r.code, r.stderr).toBe(1);
    const v = JSON.parse(r.stdout) as Verify;
    // the command's own records (audit.start, audit.access) were appended after the rolled-back head
    expect(v.audit).toMatchObject({ ok: false, problem: 'rollback' });
    expect(v.audit.firstBadSeq).toBeGreaterThan(keep);
    expect(v.audit.witnessed!.size).toBeGreaterThanOrEqual(n);
    expect(v.audit.firstBadSeq!).toBeLessThanOrEqual(v.audit.witnessed!.size);
    expect(v.audit.witnesses![0]).toMatchObject({ kind: 'file', status: 'consulted' });
    const human = await cli(['audit', 'verify'], { cwd: dir });
    expect(human.code).toBe(1);
    expect(human.stderr).toMatch(/olocus-hsm: ROLLBACK: the log ends at record \d+, but file .* witnessed a checkpoint of \d+ records/);
    expect(human.stderr).toContain(`witness file ${witnessPath()}: checkpoint of`);
    console.log(`[figures] CLI rollback (${n} -> ${keep} records): 'olocus-hsm audit verify --json' exit ${r.code}, problem ${v.audit.problem}, ${ms} ms wall`);
  });

  it('a log emptied inside its file (rows deleted, head reset) is refused at open, naming the file and the witness', async () => {
    const db = new Database(dbPath());
    db.exec("delete from audit_records; delete from audit_checkpoints; update audit_head set seq = 0, hash = '" + '0'.repeat(64) + "', anchor_seq = 0, anchor_hash = '" + '0'.repeat(64) + "';");
    db.close();
    const r = await cli(['audit', 'verify', '--json'], { cwd: dir });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`audit log ${dbPath()} holds no records of log olocus-audit, but a log was kept there: witness file ${witnessPath()} holds a checkpoint of`);
    console.log(`[figures] CLI wipe in place (rows deleted): 'olocus-hsm audit verify' exit ${r.code}: ${r.stderr.trim().split('\n')[0]}`);
  });

  it('a deleted log file is refused with an error naming it, not started anew', async () => {
    for (const f of [dbPath(), `${dbPath()}-wal`, `${dbPath()}-shm`]) await rm(f, { force: true });
    const r = await cli(['audit', 'verify', '--json'], { cwd: dir });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(dbPath());
    expect(r.stderr).not.toMatch(/chain intact/);
    console.log(`[figures] CLI wipe (audit.db deleted): 'olocus-hsm audit verify' exit ${r.code}: ${r.stderr.trim().split('\n')[0]}`);
  });
});

describe('audit.witnesses config', () => {
  it('validates each witness and names the bad field; relative paths resolve against the config folder; secrets come from sources', async () => {
    expect(() => parseAuditSection({ witnesses: [{ kind: 'ftp', path: 'x' }] }, '/etc/olocus/config.json')).toThrow(/audit\.witnesses\.0.*kind must be "file", "postgres", "http" or "syslog"|kind must be "file", "postgres", "http" or "syslog"/);
    expect(() => parseAuditSection({ witnesses: [{ kind: 'postgres', connectionString: 'postgres://u:pw@h/db' }] }, '/c.json')).toThrow(/secret source/);
    expect(() => parseAuditSection({ witnesses: [{ kind: 'syslog', transport: 'carrier-pigeon' }] }, '/c.json')).toThrow(/must be "udp" or "tcp"/);
    const section = resolveAuditPaths(
      parseAuditSection(
        {
          witnesses: [
            { kind: 'file', path: 'w/witness.jsonl' },
            { kind: 'http', url: 'https://witness.example/olocus', bearerToken: { env: 'WITNESS_TOKEN' } },
            { kind: 'syslog', transport: 'udp' },
          ],
        },
        '/etc/olocus/config.json',
      ),
      '/etc/olocus',
    );
    const configs = await witnessesFor(section, '/etc/olocus/config.json', { WITNESS_TOKEN: 'tok-123' });
    expect(configs).toEqual([
      { kind: 'file', path: '/etc/olocus/w/witness.jsonl' },
      { kind: 'http', url: 'https://witness.example/olocus', timeoutMs: 10000, headers: { authorization: 'Bearer tok-123' } },
      { kind: 'syslog', transport: 'udp', host: '127.0.0.1', port: 514, facility: 13 },
    ]);
    await expect(witnessesFor(section, '/etc/olocus/config.json', {})).rejects.toThrow(/audit\.witnesses\[1\]\.bearerToken/);
  });
});

describe('audit rotate-checkpoint-key', () => {
  it('through the binary: later commands reopen the log with the rotated key, and the chain verifies across both keys', async () => {
    const { dir: d, cleanup: c } = await tempDir('olocus-cli-rotcp-bin-');
    try {
      expect((await cli(['init'], { cwd: d })).code).toBe(0);
      expect((await cli(['keys', 'create', '--id', 'k', '--algorithm', 'Ed25519'], { cwd: d })).code).toBe(0);
      const rotated = await cli(['audit', 'rotate-checkpoint-key', '--new-key-id', 'olocus-audit-checkpoint-2', '--reason', 'yearly', '--json'], { cwd: d });
      expect(rotated.code, rotated.stderr).toBe(0);
      await writeFile(join(d, 'msg'), 'after the rotation');
      const signed = await cli(['sign', '--key', 'k', '--in', 'msg', '--out', 'msg.sig'], { cwd: d });
      expect(signed.code, signed.stderr).toBe(0);
      const verified = await cli(['audit', 'verify', '--json'], { cwd: d });
      expect(verified.code, verified.stdout + verified.stderr).toBe(0);
      const destroy = await cli(['keys', 'destroy', '--id', 'olocus-audit-checkpoint-2'], { cwd: d });
      expect(destroy.code).not.toBe(0);
      expect(destroy.stderr).toMatch(/PolicyViolation|internal/i);
    } finally {
      await c();
    }
  });

  it('makes a new checkpoint key, records the rotation in the chain and hands signing to it', async () => {
    const { dir: d, cleanup: c } = await tempDir('olocus-cli-rotcp-');
    try {
      const init = await cli(['init'], { cwd: d });
      expect(init.code, init.stderr).toBe(0);
      const out = new PassThrough();
      let text = '';
      out.on('data', (b: Buffer) => (text += b.toString('utf8')));
      const errors: string[] = [];
      const ctx: CliContext = {
        globals: { json: true },
        json: true,
        cwd: d,
        env: testEnv(),
        stdout: out as unknown as NodeJS.WriteStream,
        stderr: out as unknown as NodeJS.WriteStream,
        exitCode: 0,
        print: () => undefined,
        printJson: (v) => {
          text += JSON.stringify(v);
        },
        note: (line) => void errors.push(line),
      };
      await rotateCheckpointKey(ctx, { newKeyId: 'olocus-audit-checkpoint-2', reason: 'yearly' });
      const result = JSON.parse(text) as { checkpointKeyRotation: { oldKeyId: string; newKeyId: string; newFingerprint: string; seq: number; checkpoint: { keyId: string; size: number } } };
      expect(result.checkpointKeyRotation).toMatchObject({ oldKeyId: 'olocus-audit-checkpoint', newKeyId: 'olocus-audit-checkpoint-2', checkpoint: { keyId: 'olocus-audit-checkpoint' } });
      const db = new Database(join(d, '.olocus', 'audit.db'), { readonly: true });
      const rec = db.prepare("select details, reason from audit_records where type = 'config.change'").get() as { details: string; reason: string };
      expect(JSON.parse(rec.details)).toMatchObject({ action: 'audit.checkpoint-key-rotated', oldKeyId: 'olocus-audit-checkpoint', newKeyId: 'olocus-audit-checkpoint-2', newFingerprint: result.checkpointKeyRotation.newFingerprint });
      expect(rec.reason).toBe('yearly');
      const last = db.prepare('select key_id from audit_checkpoints order by id desc limit 1').get() as { key_id: string };
      expect(last.key_id).toBe('olocus-audit-checkpoint-2'); // the closing checkpoint is the new key's
      db.close();
      await expect(rotateCheckpointKey(ctx, { newKeyId: 'bad id' })).rejects.toThrow(/--new-key-id/);
    } finally {
      await c();
    }
  });

  it('names new keys after the configured id and the time, never like a rotation version', () => {
    expect(nextCheckpointKeyId('olocus-audit-checkpoint', new Date('2026-12-02T06:30:00.123Z'))).toBe('olocus-audit-checkpoint-20261202T063000Z');
  });
});
