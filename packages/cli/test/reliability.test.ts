import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SOFTHSM_LIB, createToken, softHsmEnv } from '@olocus/hsm-test-support';
import { BIN, cleanEnv, cli, lines, tempDir, testEnv, type RunResult } from './helpers.js';

/**
 * Issue 18 through the CLI: a rotation killed (SIGKILL) at every step leaves no committed state
 * change without its audit record, and the next `keys rotate` completes it instead of rotating
 * twice, at once (the dead process's lease is not waited out); `rotation recover`; the scheduler
 * daemon finishes a killed CLI's rotation; a full disk is one storage fault; the exact
 * sign/rotate race; missing or emptied stores with evidence in the backend; small output fixes.
 * On the software backend and on SoftHSM.
 */

const STEPS = ['intent', 'generated', 'registered', 'activated'] as const;
const CRASH = { OLOCUS_ROTATION_TEST_HOOKS: '1' } as const;

interface Store {
  dir: string;
  env: Record<string, string>;
  run(args: string[], extraEnv?: Record<string, string>): Promise<RunResult>;
  ok(args: string[]): Promise<RunResult>;
  json<T = Record<string, unknown>>(args: string[]): Promise<T>;
}

interface Change {
  at: string;
  keyId: string;
  version: number;
  from: string | null;
  to: string;
  actor: string;
  reason: string;
}
interface AuditRecord {
  kind: string;
  type: string;
  time: string;
  actor: string;
  keyId?: string;
  baseKeyId?: string;
  keyVersion?: number;
  reason?: string;
  details?: Record<string, unknown>;
}

async function makeStore(kind: 'software' | 'softhsm'): Promise<Store> {
  const { dir } = await tempDir(`olocus-cli-rel-${kind}-`);
  let env: Record<string, string>;
  let init: string[];
  if (kind === 'software') {
    env = testEnv();
    init = ['init'];
  } else {
    const token = createToken(`olocus-rel-${process.pid}`); // says how to install SoftHSM when it is missing
    env = cleanEnv({ SOFTHSM2_CONF: softHsmEnv().conf });
    await writeFile(join(dir, 'pin.txt'), `${token.pin}\n`, { mode: 0o600 });
    init = ['--pin-file', 'pin.txt', 'init', '--backend', 'pkcs11', '--module', SOFTHSM_LIB, '--token-label', token.label];
  }
  const run = (args: string[], extraEnv: Record<string, string> = {}) => cli(args, { cwd: dir, env: { ...env, ...extraEnv } });
  const ok = async (args: string[]) => {
    const r = await run(args);
    expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r;
  };
  const json = async <T,>(args: string[]) => JSON.parse((await ok([...args, '--json'])).stdout) as T;
  await ok(init);
  return { dir, env, run, ok, json };
}

async function auditRecords(s: Store): Promise<AuditRecord[]> {
  const r = await s.ok(['audit', 'export', '--out', '-']);
  return lines(r.stdout)
    .map((l) => JSON.parse(l) as AuditRecord)
    .filter((x) => x.kind === 'record');
}

/** Every row of the key's registry history has its key.state record (same version, from, to, time). */
async function expectEveryChangeAudited(s: Store, key: string): Promise<Change[]> {
  const { history } = await s.json<{ history: Change[] }>(['keys', 'history', '--id', key]);
  const records = (await auditRecords(s)).filter((r) => r.type === 'key.state' && r.baseKeyId === key);
  const unaudited = history.filter((c) => !records.some((r) => r.keyId === c.keyId && r.details?.['from'] === c.from && r.details?.['to'] === c.to && new Date(r.time).getTime() === new Date(c.at).getTime()));
  expect(unaudited, `history rows without an audit record (of ${history.length})`).toEqual([]);
  return history;
}

const stores: Partial<Record<'software' | 'softhsm', Store>> = {};
afterAll(async () => {
  for (const s of Object.values(stores)) if (s) await rm(s.dir, { recursive: true, force: true });
});

describe.each(['software', 'softhsm'] as const)('%s backend', (kind) => {
  let s: Store;
  beforeAll(async () => {
    s = await makeStore(kind);
    stores[kind] = s;
  }, 120_000);

  describe('keys rotate killed (SIGKILL) at each step', () => {
    it.each(STEPS)('after "%s": every history row is audited; the next keys rotate completes it at once, one new version', async (step) => {
      const key = `crash-${step}`;
      await s.ok(['keys', 'create', '--id', key, '--algorithm', 'ECDSA_P256']);
      const crashed = await s.run(['keys', 'rotate', '--id', key], { ...CRASH, OLOCUS_ROTATION_CRASH_AT: step });
      expect(crashed.code, crashed.stderr).toBe(-1); // killed by the signal
      // any command afterwards: what committed before the kill has its record
      await expectEveryChangeAudited(s, key);

      const started = Date.now();
      const r = await s.json<{ current: { version: number; state: string }; previous: { version: number; state: string }; recovered?: { fromStep: string; previousOwner: string } }>(['keys', 'rotate', '--id', key]);
      const stuckMs = Date.now() - started;
      // the dead process's 5-minute lease is not waited out
      expect(stuckMs).toBeLessThan(60_000);
      if (step === 'activated') {
        // the swap had committed: the rotation was complete, this is the next one
        expect(r.recovered).toBeUndefined();
        expect(r.current.version).toBe(3);
      } else {
        expect(r.recovered, 'keys rotate must say it completed the interrupted rotation').toMatchObject({ fromStep: expect.any(String), previousOwner: expect.stringMatching(/:\d+:/) });
        expect(r.current.version).toBe(2);
      }
      expect(r.current.state).toBe('Active');
      const history = await expectEveryChangeAudited(s, key);
      const { versions } = await s.json<{ versions: { version: number; state: string }[] }>(['keys', 'history', '--id', key]);
      expect(versions.map((v) => v.version)).toEqual(step === 'activated' ? [1, 2, 3] : [1, 2]);
      expect(versions.filter((v) => v.state === 'Active')).toHaveLength(1);
      expect(history.length).toBeGreaterThanOrEqual(5);
      const records = await auditRecords(s);
      if (step !== 'activated') {
        expect(records.filter((x) => x.type === 'admin.action' && x.baseKeyId === key && x.details?.['action'] === 'rotation recovered')).toHaveLength(1);
      }
      expect(records.filter((x) => x.type === 'key.rotate' && x.baseKeyId === key).length).toBe(step === 'activated' ? 2 : 1);
      console.log(`[figures] ${kind}, killed after ${step}: next keys rotate done in ${stuckMs} ms (whole command), ${r.recovered ? 'completed the interrupted rotation' : 'rotated anew'}; ${history.length} history rows, unaudited 0; Active versions 1`);
    }, 120_000);
  });

  it('rotation recover --key K --reason R completes an interrupted rotation, audited with the actor; a second one has nothing to recover', async () => {
    const key = 'recover-me';
    await s.ok(['keys', 'create', '--id', key, '--algorithm', 'Ed25519']);
    expect((await s.run(['keys', 'rotate', '--id', key], { ...CRASH, OLOCUS_ROTATION_CRASH_AT: 'registered' })).code).toBe(-1);
    const r = await s.json<{ current: { version: number; state: string }; recovered?: { fromStep: string } }>(['rotation', 'recover', '--key', key, '--reason', 'node ci-7 is gone', '--actor', 'ops-oncall']);
    expect(r.current).toMatchObject({ version: 2, state: 'Active' });
    expect(r.recovered?.fromStep).toBe('registered');
    const record = (await auditRecords(s)).find((x) => x.type === 'admin.action' && x.baseKeyId === key && x.details?.['action'] === 'rotation recovered');
    expect(record).toMatchObject({ actor: 'ops-oncall', reason: 'node ci-7 is gone', keyVersion: 2 });
    await expectEveryChangeAudited(s, key);
    const again = await s.run(['rotation', 'recover', '--key', key, '--reason', 'again']);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/^olocus-hsm: KeyNotFound: .*no unfinished rotation/m);
  }, 120_000);

  it('the exact race: 20 concurrent sign with 2 keys rotate on one key — every signedAt printed verifies with --signed-at', async () => {
    const key = 'race';
    await s.ok(['keys', 'create', '--id', key, '--algorithm', 'ECDSA_P256']);
    await writeFile(join(s.dir, 'race.msg'), 'signed while the key rotates');
    // launched one after another across the rotations, so that signatures straddle both swaps
    const signs = Array.from({ length: 20 }, async (_, i) => {
      await new Promise((resolve) => setTimeout(resolve, i * 700));
      return s.run(['sign', '--key', key, '--in', 'race.msg', '--out', `race-${i}.sig`, '--json']);
    });
    // two rotations, one after the other, while the 20 signatures are being made
    const rotations = (async () => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const out: RunResult[] = [];
      for (const i of [0, 1]) out.push(await s.run(['keys', 'rotate', '--id', key, '--reason', `race ${i}`, '--json']));
      return out;
    })();
    const signed = await Promise.all(signs);
    const rotated = await rotations;
    for (const r of signed) expect(r.code, r.stderr).toBe(0);
    for (const r of rotated) expect(r.code, r.stderr).toBe(0);
    const versionsUsed = new Set(signed.map((r) => (JSON.parse(r.stdout) as { version: number }).version));
    const results = signed.map((r) => JSON.parse(r.stdout) as { signedAt: string; version: number });
    const failures: string[] = [];
    const verified = await Promise.all(results.map((x, i) => s.run(['verify', '--key', key, '--in', 'race.msg', '--signature', `race-${i}.sig`, '--signed-at', x.signedAt])));
    verified.forEach((v, i) => {
      if (v.code !== 0) failures.push(`race-${i}.sig (v${results[i]!.version}, signedAt ${results[i]!.signedAt}): ${v.stdout}${v.stderr}`);
    });
    expect(failures).toEqual([]);
    // compliance judges each signature by its recorded signedAt: no LC-PROTECT finding other than a pass
    const report = await s.run(['compliance', 'report', '--framework', 'pci-dss', '--format', 'json', '--out', '-']);
    expect(report.code, report.stderr).not.toBe(2);
    const findings: { ruleId: string; status: string; keyId?: string; message: string }[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        const o = v as Record<string, unknown>;
        if (o['ruleId'] === 'LC-PROTECT' && typeof o['status'] === 'string') findings.push(o as never);
        Object.values(o).forEach(walk);
      }
    };
    walk(JSON.parse(report.stdout));
    expect(findings.length, 'LC-PROTECT was not evaluated').toBeGreaterThan(0);
    expect(findings.filter((f) => f.status === 'violation' || f.status === 'warning')).toEqual([]);
    // the race was real when signatures straddle a rotation (reported, not required: timing on a shared machine)
    console.log(`[figures] race (${kind}): 20 signatures by versions ${[...versionsUsed].sort().join(', ')}, 0 of 20 failed verify --signed-at`);
  }, 300_000);
});

describe('rotation run --daemon', () => {
  let s: Store;
  beforeAll(async () => {
    s = await makeStore('software');
  }, 120_000);
  afterAll(async () => rm(s.dir, { recursive: true, force: true }));

  function startDaemon(): { child: ChildProcessWithoutNullStreams; events: Record<string, unknown>[]; waitFor: (pred: (e: Record<string, unknown>) => boolean, ms: number) => Promise<Record<string, unknown>>; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>; stderr: () => string } {
    const child = spawn(process.execPath, [BIN, 'rotation', 'run', '--daemon', '--interval', '250ms', '--json'], { cwd: s.dir, env: s.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const events: Record<string, unknown>[] = [];
    const waiters: { pred: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }[] = [];
    let buffer = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      buffer += d.toString();
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!line.trim()) continue;
        const e = JSON.parse(line) as Record<string, unknown>;
        events.push(e);
        for (const w of [...waiters]) if (w.pred(e)) w.resolve(e);
      }
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    const waitFor = (pred: (e: Record<string, unknown>) => boolean, ms: number) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const seen = events.find(pred);
        if (seen) return resolve(seen);
        const timer = setTimeout(() => reject(new Error(`daemon: no such event within ${ms} ms; events: ${JSON.stringify(events)}; stderr: ${err}`)), ms);
        waiters.push({ pred, resolve: (e) => (clearTimeout(timer), resolve(e)) });
      });
    return { child, events, waitFor, exited, stderr: () => err };
  }

  it('finishes the rotation of a CLI killed mid-rotation, and stops cleanly on SIGTERM (exit 0, audit log closed and intact)', async () => {
    const key = 'daemon-k';
    await s.ok(['keys', 'create', '--id', key, '--algorithm', 'Ed25519']);
    const d = startDaemon();
    try {
      await d.waitFor((e) => e['event'] === 'started', 60_000);
      const crashed = await s.run(['keys', 'rotate', '--id', key], { ...CRASH, OLOCUS_ROTATION_CRASH_AT: 'registered' });
      expect(crashed.code).toBe(-1);
      const killedAt = Date.now();
      const recovered = await d.waitFor((e) => e['event'] === 'recovered' && e['key'] === key, 30_000);
      expect(recovered).toMatchObject({ version: 2, fromStep: 'registered' });
      // stuck time after the crash: one tick, not the 5-minute lease
      const stuck = Date.now() - killedAt;
      expect(stuck).toBeLessThan(30_000);
      console.log(`[figures] daemon (tick 250 ms) finished a rotation killed after "registered" ${stuck} ms after the kill`);
      d.child.kill('SIGTERM');
      const exit = await d.exited;
      expect(exit, d.stderr()).toEqual({ code: 0, signal: null });
      expect(d.events.map((e) => e['event'])).toEqual(expect.arrayContaining(['started', 'recovered', 'stopping', 'stopped']));
    } finally {
      if (d.child.exitCode === null) d.child.kill('SIGKILL');
    }
    const { versions } = await s.json<{ versions: { version: number; state: string }[] }>(['keys', 'history', '--id', key]);
    expect(versions.map((v) => `${v.version}:${v.state}`)).toEqual(['1:Superseded', '2:Active']);
    await expectEveryChangeAudited(s, key);
    const records = await auditRecords(s);
    expect(records.some((x) => x.type === 'admin.action' && x.baseKeyId === key && x.details?.['action'] === 'rotation recovered')).toBe(true);
    // the daemon closed its log with audit.stop (clean shutdown), and the chain verifies
    expect(records.filter((x) => x.type === 'audit.stop').length).toBeGreaterThan(0);
    const verify = await s.run(['audit', 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  }, 180_000);

  it('SIGINT stops it too; --interval out of range is refused naming the flag; --interval without --daemon is refused', async () => {
    const d = startDaemon();
    await d.waitFor((e) => e['event'] === 'started', 60_000);
    d.child.kill('SIGINT');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    const bad = await s.run(['rotation', 'run', '--daemon', '--interval', '5ms']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/InvalidArgument: --interval: "5ms"/);
    const noDaemon = await s.run(['rotation', 'run', '--interval', '1s']);
    expect(noDaemon.code).toBe(2);
    expect(noDaemon.stderr).toContain('--daemon');
  }, 120_000);
});

describe('missing or emptied stores while the backend holds evidence of them (item 11)', () => {
  let s: Store;
  beforeAll(async () => {
    s = await makeStore('software');
    await s.ok(['keys', 'create', '--id', 'k1', '--algorithm', 'Ed25519']);
    await s.ok(['keys', 'rotate', '--id', 'k1']);
    await writeFile(join(s.dir, 'msg'), 'message');
  }, 120_000);
  afterAll(async () => rm(s.dir, { recursive: true, force: true }));

  const auditDb = () => join(s.dir, '.olocus', 'audit.db');
  const rotationDb = () => join(s.dir, '.olocus', 'rotation.db');

  it('an emptied or deleted audit.db is an error naming the file and what to do; nothing is created', async () => {
    await truncate(auditDb());
    for (const f of ['-wal', '-shm']) rmSync(auditDb() + f, { force: true });
    let r = await s.run(['sign', '--key', 'k1', '--in', 'msg', '--out', 'sig']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/StorageCorrupted: .*audit\.db is empty, but the backend holds the audit checkpoint key/);
    expect(r.stderr).toContain('Restore');
    expect(r.stderr).toContain('OLOCUS_HSM_ACCEPT_NEW_STORE=audit');
    expect(existsSync(join(s.dir, 'sig'))).toBe(false);
    await rm(auditDb());
    r = await s.run(['sign', '--key', 'k1', '--in', 'msg', '--out', 'sig']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${auditDb()} is missing`);
    expect(existsSync(auditDb())).toBe(false);
    // the explicit override starts a new log, and says so in it
    r = await s.run(['sign', '--key', 'k1', '--in', 'msg', '--out', 'sig'], { OLOCUS_HSM_ACCEPT_NEW_STORE: 'audit' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('starting a new audit log');
    const accepted = (await auditRecords(s)).find((x) => x.type === 'admin.action' && x.details?.['action'] === 'accepted a new audit log');
    expect(accepted).toMatchObject({ reason: 'OLOCUS_HSM_ACCEPT_NEW_STORE=audit', details: { file: auditDb() } });
    // and from then on it is this log
    await s.ok(['sign', '--key', 'k1', '--in', 'msg', '--out', 'sig']);
  }, 120_000);

  it('an emptied or deleted rotation.db is an error: a Superseded version does not sign again as a plain key', async () => {
    await truncate(rotationDb());
    for (const f of ['-wal', '-shm']) rmSync(rotationDb() + f, { force: true });
    let r = await s.run(['sign', '--key', 'k1.v1', '--in', 'msg', '--out', 'sig1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/StorageCorrupted: .*rotation\.db is empty, but the backend holds keys named like versions of logical keys \(k1\.v1, k1\.v2\)/);
    expect(existsSync(join(s.dir, 'sig1'))).toBe(false);
    await rm(rotationDb());
    for (const args of [['sign', '--key', 'k1.v1', '--in', 'msg', '--out', 'sig1'], ['keys', 'list'], ['keys', 'history', '--id', 'k1'], ['keys', 'create', '--id', 'other', '--algorithm', 'Ed25519']]) {
      r = await s.run(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toContain(`${rotationDb()} is missing`);
    }
    r = await s.run(['keys', 'list'], { OLOCUS_HSM_ACCEPT_NEW_STORE: 'rotation' });
    expect(r.code, r.stderr).toBe(0);
    expect((await auditRecords(s)).some((x) => x.type === 'admin.action' && x.details?.['action'] === 'accepted a new key registry')).toBe(true);
    // accepted once: the new registry exists now
    await s.ok(['keys', 'list']);
  }, 120_000);

  it('a new store is still accepted as new: the first commands after init need no override', async () => {
    const fresh = await makeStore('software');
    try {
      await fresh.ok(['keys', 'create', '--id', 'a', '--algorithm', 'Ed25519']);
      await writeFile(join(fresh.dir, 'm'), 'x');
      await fresh.ok(['sign', '--key', 'a', '--in', 'm', '--out', 's']);
    } finally {
      await rm(fresh.dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('output fixes', () => {
  let s: Store;
  beforeAll(async () => {
    s = await makeStore('software');
  }, 120_000);
  afterAll(async () => rm(s.dir, { recursive: true, force: true }));

  it('keys rotate no longer sends plain verify users to --signed-at; an interrupted rotation is reported in text', async () => {
    await s.ok(['keys', 'create', '--id', 'txt', '--algorithm', 'Ed25519']);
    const r = await s.ok(['keys', 'rotate', '--id', 'txt']);
    expect(r.stdout).not.toContain('use verify --signed-at');
    expect(r.stdout).toMatch(/v1 signs no more; signatures it made before \S+ still verify/);
    expect((await s.run(['keys', 'rotate', '--id', 'txt'], { ...CRASH, OLOCUS_ROTATION_CRASH_AT: 'generated' })).code).toBe(-1);
    const again = await s.ok(['keys', 'rotate', '--id', 'txt']);
    expect(again.stdout).toMatch(/^completed the interrupted manual rotation of txt \(started \S+ by \S+:\d+:[0-9a-f]+, stopped after step "(intent|generated)"\): v2 \(now Superseded\) -> v3 Active/m);
    expect(again.stdout).toContain('no further rotation was started');
  }, 120_000);

  it('keys history escapes a newline in the stored created-by', async () => {
    await s.ok(['keys', 'create', '--id', 'nl', '--algorithm', 'Ed25519']);
    const db = new Database(join(s.dir, '.olocus', 'rotation.db'));
    db.prepare('update logical_keys set created_by = ? where base_key_id = ?').run('eve\nFORGED LINE', 'nl');
    db.close();
    const r = await s.ok(['keys', 'history', '--id', 'nl']);
    expect(lines(r.stdout)[0]).toContain('by eve\\nFORGED LINE');
    expect(lines(r.stdout).some((l) => l.startsWith('FORGED LINE'))).toBe(false);
  }, 60_000);

  it('health prints the fips check\'s warning instead of a plain Healthy', async () => {
    const r = await s.run(['health']);
    expect([0, 1], r.stderr).toContain(r.code);
    const fips = lines(r.stdout).findIndex((l) => /^\s+fips\s/.test(l));
    expect(fips, r.stdout).toBeGreaterThan(0);
    expect(lines(r.stdout)[0]).toMatch(/with a warning \(fips\)|warnings \(.*fips/);
    expect(lines(r.stdout)[fips + 1]).toMatch(/^\s+warning\s+\S/);
    expect(r.stderr).toContain('health warning (fips)');
    const j = JSON.parse((await s.run(['health', '--json'])).stdout) as { health: { checks: { name: string; warning?: string }[] } };
    expect(j.health.checks.find((c) => c.name === 'fips')?.warning).toEqual(expect.any(String));
  }, 60_000);
});

describe('a full disk under the CLI\'s audit log (item 7)', () => {
  let s: Store;
  const mountPoint = join('/tmp', `olocus-cli-full-${process.pid}`);
  let mounted = false;
  beforeAll(async () => {
    s = await makeStore('software');
    mkdirSync(mountPoint, { recursive: true });
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountPoint], { stdio: 'pipe' });
      mounted = true;
    } catch (error) {
      throw new Error(`this test fills a 2 MiB tmpfs and needs permission to mount one (run the tests as root, as CI does, or in the dev container): ${(error as Error).message}`);
    }
  }, 120_000);
  afterAll(async () => {
    if (mounted) execFileSync('umount', ['-l', mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
    await rm(s.dir, { recursive: true, force: true });
  });

  it('sign and keys rotate on a full disk: a retryable DeviceUnavailable that says the disk holding audit.db is full, as the library says it; no unaudited change', async () => {
    const auditPath = join(mountPoint, 'audit.db');
    const configPath = join(s.dir, '.olocus', 'config.json');
    const config = JSON.parse(await readFile(configPath, 'utf8')) as { audit: { storage: { path: string } } };
    config.audit.storage.path = auditPath;
    await writeFile(configPath, JSON.stringify(config));
    await s.ok(['keys', 'create', '--id', 'full', '--algorithm', 'Ed25519']);
    await writeFile(join(s.dir, 'msg'), 'x');
    // fill the volume, leaving room for the log to open but not to grow
    const avail = Number(execFileSync('df', ['-B1', '--output=avail', mountPoint]).toString().trim().split('\n').pop());
    execFileSync('dd', ['if=/dev/zero', `of=${join(mountPoint, 'filler')}`, `bs=${avail - 40_960}`, 'count=1'], { stdio: 'pipe' });
    for (const args of [['sign', '--key', 'full', '--in', 'msg', '--out', 'sig'], ['keys', 'rotate', '--id', 'full']]) {
      const r = await s.run([...args, '--json']);
      expect(r.code, args.join(' ')).toBe(2);
      const error = (JSON.parse(r.stdout) as { error: { code: string; message: string; retryable?: boolean; details?: Record<string, unknown> } }).error;
      expect(error, args.join(' ')).toMatchObject({ code: 'DeviceUnavailable', retryable: true, details: { storageFault: 'disk-full' } });
      expect(error.message).toContain(`the disk holding ${auditPath} is full`);
    }
    rmSync(join(mountPoint, 'filler'));
    const { versions } = await s.json<{ versions: { version: number }[] }>(['keys', 'history', '--id', 'full']);
    expect(versions.map((v) => v.version)).toEqual([1]);
    await expectEveryChangeAudited(s, 'full');
  }, 180_000);

  it('the rotation audit hook and a tagged (health canary) record refuse with the same fault, not a PolicyViolation', async () => {
    const { openCliAudit } = await import('../src/audit.js');
    const { parseAuditSection, resolveAuditPaths } = await import('../src/audit-config.js');
    const path = join(mountPoint, 'unit.db');
    const section = resolveAuditPaths(parseAuditSection({ storage: { kind: 'sqlite', path } }, 'test'), mountPoint);
    const notes: string[] = [];
    const ctx = { note: (l: string) => notes.push(l) } as unknown as Parameters<typeof openCliAudit>[0];
    const audit = await openCliAudit(ctx, section, 'test', 'svc-disk');
    try {
      const avail = Number(execFileSync('df', ['-B1', '--output=avail', mountPoint]).toString().trim().split('\n').pop());
      execFileSync('dd', ['if=/dev/zero', `of=${join(mountPoint, 'filler2')}`, `bs=${Math.max(1, avail - 4096)}`, 'count=1'], { stdio: 'pipe' });
      const change = { keyId: 'k.v2', baseKeyId: 'k', version: 2, from: 'PreActivation' as const, to: 'Active' as const, at: new Date(), actor: 'a', reason: 'r' };
      let hookError: unknown;
      let canaryError: unknown;
      for (let i = 0; i < 200 && (!hookError || !canaryError); i++) {
        if (!hookError) await audit.recordChanges([change]).catch((e: unknown) => (hookError = e));
        if (!canaryError) await audit.auditor.record({ operation: 'sign', backend: 'software', keyId: 'olocus-health-canary', purpose: 'health-canary', outcome: 'success', latencyMs: 1, data: new Uint8Array(8) }).catch((e: unknown) => (canaryError = e));
      }
      for (const e of [hookError, canaryError]) {
        expect(e).toMatchObject({ name: 'HsmError', code: 'DeviceUnavailable', retryable: true, details: { auditCode: 'AuditUnavailable', storageFault: 'disk-full' } });
        expect((e as Error).message).toContain(`the disk holding ${path} is full`);
      }
    } finally {
      rmSync(join(mountPoint, 'filler2'), { force: true });
      await audit.close().catch(() => undefined);
    }
  }, 120_000);
});
