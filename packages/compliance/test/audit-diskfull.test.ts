import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync, rmSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { HsmManager } from '@olocus/hsm-core';
import { auditorFor, classifyStorageFault, openAuditLog, storageFaultError, storageFaultOf } from '../src/audit/index.js';
import { tempDir } from './audit-helpers.js';

const PASS_ENV = 'OLOCUS_AUDIT_DISKFULL_PASSPHRASE';
process.env[PASS_ENV] = randomBytes(12).toString('hex');

describe('one mapping for storage faults (issue 18 item 7)', () => {
  it('a real SQLITE_FULL, a real ENOSPC and PostgreSQL 53100 are the same retryable "disk is full" error naming the file', () => {
    // SQLITE_FULL from the driver itself: a database capped at a few pages
    const file = join(tempDir('full-sqlite'), 'capped.db');
    const db = new BetterSqlite3(file);
    db.pragma('max_page_count = 8');
    db.exec('create table t (x blob)');
    let sqliteFull: unknown;
    try {
      for (let i = 0; i < 100; i++) db.prepare('insert into t values (?)').run(randomBytes(4096));
    } catch (error) {
      sqliteFull = error;
    }
    db.close();
    expect((sqliteFull as { code?: string }).code).toBe('SQLITE_FULL');
    // ENOSPC from the kernel: /dev/full refuses every write
    let enospc: unknown;
    const fd = openSync('/dev/full', 'w');
    try {
      writeSync(fd, Buffer.alloc(16));
    } catch (error) {
      enospc = error;
    } finally {
      closeSync(fd);
    }
    expect((enospc as { code?: string }).code).toBe('ENOSPC');
    // what node-postgres raises for disk_full (SQLSTATE 53100)
    const pgFull = Object.assign(new Error('could not extend file "base/16384/16385": No space left on device'), { code: '53100', severity: 'ERROR' });

    for (const [error, target] of [
      [sqliteFull, file],
      [enospc, '/var/lib/olocus/rotation.db'],
      [pgFull, 'postgres://db.internal:5432/olocus'],
    ] as const) {
      expect(classifyStorageFault(error)).toMatchObject({ kind: 'disk-full', code: 'DeviceUnavailable', retryable: true });
      const mapped = storageFaultError(error, { store: 'audit log', action: 'writing audit records', target });
      expect(mapped).toMatchObject({ name: 'HsmError', code: 'DeviceUnavailable', retryable: true, details: { storageFault: 'disk-full', target } });
      expect(mapped.message).toContain(`the disk holding ${target} is full`);
      expect(mapped.message).toContain('free space');
      expect(mapped.message).not.toMatch(/disk I\/O error/);
      expect(storageFaultOf(mapped)).toBe('disk-full');
    }
  });

  it('other faults keep their own meaning: busy is retryable, corruption and permissions are not', () => {
    expect(classifyStorageFault({ code: 'SQLITE_BUSY' })).toMatchObject({ kind: 'busy', retryable: true });
    expect(classifyStorageFault({ code: 'SQLITE_CORRUPT' })).toMatchObject({ kind: 'corrupt', code: 'StorageCorrupted', retryable: false });
    expect(classifyStorageFault({ code: 'SQLITE_NOTADB' })).toMatchObject({ kind: 'corrupt', code: 'StorageCorrupted', retryable: false });
    expect(classifyStorageFault({ code: 'EACCES' })).toMatchObject({ kind: 'permission', code: 'PermissionDenied', retryable: false });
    expect(classifyStorageFault({ code: 'SQLITE_READONLY_DBMOVED' })).toMatchObject({ kind: 'read-only', retryable: false });
    expect(classifyStorageFault({ code: 'ECONNREFUSED' })).toMatchObject({ kind: 'unreachable', retryable: true });
    // a vague I/O error on a volume with space left stays an I/O error
    expect(classifyStorageFault({ code: 'SQLITE_IOERR_WRITE', message: 'disk I/O error' }, join(tempDir('io'), 'x.db'))).toMatchObject({ kind: 'io' });
  });
});

describe('a full disk under the SQLite audit log', () => {
  const mountPoint = join(tempDir('tmpfs-parent'), 'small');
  let mounted = false;
  afterAll(() => {
    if (mounted) execFileSync('umount', ['-l', mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  });

  it('a signature refused for a full disk is a retryable DeviceUnavailable that says the disk holding audit.db is full', async () => {
    mkdirSync(mountPoint, { recursive: true });
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mountPoint], { stdio: 'pipe' });
      mounted = true;
    } catch (error) {
      throw new Error(`this test fills a 1 MiB tmpfs and needs permission to mount one (run the tests as root, as CI does, or in the dev container): ${(error as Error).message}`);
    }
    const path = join(mountPoint, 'audit.db');
    const log = await openAuditLog({ storage: { kind: 'sqlite', path }, logName: 'full' });
    const manager = new HsmManager(
      { backend: { type: 'software', options: { directory: tempDir('full-keys'), passphrase: { env: PASS_ENV }, scrypt: { N: 2 ** 15, r: 8, p: 1 } } } },
      { auditor: auditorFor(log, { actor: 'svc-disk' }) },
    );
    await manager.initialize();
    try {
      const key = await manager.generateKey({ id: 'k', algorithm: 'Ed25519' });
      let refusal: { code?: string; retryable?: boolean; message?: string; details?: Record<string, unknown> } | undefined;
      let signed = 0;
      const started = Date.now();
      for (let i = 0; i < 20_000 && !refusal; i++) {
        await manager.sign(key, randomBytes(32)).then(
          () => void signed++,
          (error: typeof refusal) => {
            refusal = error;
          },
        );
      }
      expect(refusal, 'the 1 MiB volume never filled').toBeDefined();
      // every signature that was returned has its durable record (plus audit.start and key.generate)
      const records = await log.count();
      expect(records).toBeGreaterThanOrEqual(signed + 2);
      console.log(`[figures] full disk (1 MiB tmpfs): ${signed} signatures returned, each with its record (${records} records durable), then refused as ${refusal!.code} retryable=${refusal!.retryable} storageFault=${String(refusal!.details?.['storageFault'])} after ${Date.now() - started} ms; signatures without a record: 0`);
      expect(refusal).toMatchObject({ code: 'DeviceUnavailable', retryable: true, details: { auditCode: 'AuditUnavailable', storageFault: 'disk-full' } });
      expect(refusal!.message).toContain(`the disk holding ${path} is full`);
      expect(refusal!.message).toContain('operation refused (failClosed)');
    } finally {
      await manager.close().catch(() => undefined);
      await log.close().catch(() => undefined);
    }
  });
});

describe('audit store file mode (issue 10 item 7)', () => {
  it.runIf(process.platform !== 'win32')('a new SQLite audit log and its WAL are 0600', async () => {
    const { stat } = await import('node:fs/promises');
    const path = join(tempDir('mode'), 'audit.db');
    const log = await openAuditLog({ storage: { kind: 'sqlite', path }, logName: 'mode' });
    await log.append({ type: 'admin.action', actor: 'alice', outcome: 'success', details: { operation: 'test' } });
    for (const file of [path, `${path}-wal`]) expect({ file, mode: (await stat(file)).mode & 0o777 }).toEqual({ file, mode: 0o600 });
    await log.close();
  });
});
