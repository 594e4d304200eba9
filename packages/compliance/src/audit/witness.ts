import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { createConnection } from 'node:net';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type pg from 'pg';

/** pg is loaded only when a PostgreSQL store is opened: a SQLite-only process (a one-shot CLI command) never pays for it. */
const loadPg = async (): Promise<typeof pg> => (await import('pg')).default;
import { z } from 'zod';
import { HsmError, parseWithSchema } from '@olocus/hsm-core';
import { checkpointBody } from './jcs.js';
import type { AuditCheckpoint } from './types.js';

/**
 * Witnesses: places outside the log's own store that receive every signed checkpoint, so a log
 * rolled back or wiped together with its checkpoints is still caught (the C2SP tlog-witness model:
 * a log's checkpoint is only trusted when parties it cannot rewrite have seen it). A witness here
 * stores what it is sent; `verify` asks the readable ones for the newest checkpoint they hold and
 * checks the log against it.
 */

/** What a witness receives and returns: the checkpoint, its key's fingerprint and the C2SP signed note. */
export interface WitnessEntry extends AuditCheckpoint {
  format: 'olocus-audit-checkpoint/1';
  /** `sha256:<hex>` of the checkpoint key's SPKI (empty when checkpoints are unsigned). */
  keyFingerprint: string;
  /**
   * The checkpoint as a C2SP signed note: the body, an empty line, then
   * `— <keyId> <base64(4-byte key hash || signature)>` (key hash = first 4 bytes of SHA-256 of the SPKI).
   */
  note: string;
}

export interface AuditWitness {
  /** How the witness is named in results and errors, e.g. `file /mnt/w/audit.witness`. */
  readonly name: string;
  readonly kind: 'file' | 'postgres' | 'http' | 'syslog' | 'custom';
  /** False for witnesses that can be written to but not asked (syslog). */
  readonly readable: boolean;
  submit(entry: WitnessEntry): Promise<void>;
  /** The largest checkpoint the witness holds for `logName`, undefined when it holds none. */
  latest(logName: string): Promise<WitnessEntry | undefined>;
  /**
   * Every checkpoint it holds for `logName` (optional): lets verify catch a log rolled back and
   * then run on past the witnessed size, whose newest checkpoint alone looks consistent.
   */
  entries?(logName: string): AsyncIterable<WitnessEntry>;
  close?(): Promise<void>;
}

export type WitnessConfig =
  | { kind: 'file'; path: string }
  | { kind: 'postgres'; connectionString: string; table?: string; schema?: string }
  | { kind: 'http'; url: string; headers?: Record<string, string>; timeoutMs?: number }
  | { kind: 'syslog'; transport: 'udp' | 'tcp'; host?: string; port?: number; facility?: number; appName?: string };

const witnessConfigSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('file'), path: z.string().min(1, 'must not be empty') }).strict(),
  z
    .object({
      kind: z.literal('postgres'),
      connectionString: z.string().min(1, 'must not be empty'),
      table: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier').optional(),
      schema: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier').optional(),
    })
    .strict(),
  z
    .object({
      kind: z.literal('http'),
      url: z.string().url('must be an http(s) URL').refine((u) => /^https?:/i.test(u), 'must be an http(s) URL'),
      headers: z.record(z.string()).optional(),
      timeoutMs: z.number().int().min(100).max(120_000).optional(),
    })
    .strict(),
  z
    .object({
      kind: z.literal('syslog'),
      transport: z.enum(['udp', 'tcp']),
      host: z.string().min(1).optional(),
      port: z.number().int().min(1).max(65535).optional(),
      facility: z.number().int().min(0).max(23).optional(),
      appName: z.string().regex(/^[!-~]{1,48}$/, 'must be 1-48 printable ASCII characters without spaces').optional(),
    })
    .strict(),
]);

function unreachable(witness: string, action: string, error: unknown): HsmError {
  const why = error instanceof Error ? error.message : String(error);
  return new HsmError('DeviceUnavailable', `audit witness ${witness}: ${action} failed: ${why}`, { retryable: true, cause: error, details: { auditCode: 'WitnessUnavailable', witness } });
}

function isEntry(v: unknown, logName?: string): v is WitnessEntry {
  const e = v as WitnessEntry;
  return (
    typeof e === 'object' && e !== null && typeof e.logName === 'string' && Number.isSafeInteger(e.size) && e.size >= 0 && typeof e.headHash === 'string' && /^[0-9a-f]{64}$/.test(e.headHash) &&
    typeof e.signature === 'string' && typeof e.keyId === 'string' && typeof e.algorithm === 'string' && typeof e.time === 'string' && (logName === undefined || e.logName === logName)
  );
}

/** `sha256:<hex>` of an SPKI: how checkpoint keys are named in rotation records and witnesses. */
export function keyFingerprint(spki: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(spki).digest('hex');
}

/** The witness entry for a checkpoint (`spki`: the key that signed it, when signed). */
export function witnessEntry(cp: AuditCheckpoint, spki?: Uint8Array): WitnessEntry {
  const body = checkpointBody(cp.logName, cp.size, cp.headHash);
  const keyHash = spki ? createHash('sha256').update(spki).digest().subarray(0, 4) : Buffer.alloc(4);
  const note = cp.signature ? `${body}\n\u2014 ${cp.keyId} ${Buffer.concat([keyHash, Buffer.from(cp.signature, 'base64')]).toString('base64')}\n` : body;
  return { format: 'olocus-audit-checkpoint/1', ...cp, keyFingerprint: spki ? keyFingerprint(spki) : '', note };
}

/** Append-only JSON Lines, fsync'd (file and, when it is created, its folder); put it on another volume than the log. */
function fileWitness(path: string): AuditWitness {
  const name = `file ${path}`;
  return {
    name,
    kind: 'file',
    readable: true,
    async submit(entry) {
      let created = false;
      try {
        await stat(path);
      } catch {
        created = true;
      }
      try {
        const fh = await open(path, 'a', 0o600);
        try {
          await fh.write(JSON.stringify(entry) + '\n');
          await fh.sync();
        } finally {
          await fh.close();
        }
        if (created) {
          const dir = await open(dirname(path), 'r');
          await dir.sync().catch(() => undefined);
          await dir.close();
        }
      } catch (error) {
        throw unreachable(name, 'writing the checkpoint', error);
      }
    },
    async *entries(logName) {
      try {
        const lines = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
        for await (const line of lines) {
          if (line.trim() === '') continue;
          let e: unknown;
          try {
            e = JSON.parse(line);
          } catch {
            continue; // a torn last line (a crash mid-append) is not a checkpoint
          }
          if (isEntry(e, logName)) yield e;
        }
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw unreachable(name, 'reading', error);
      }
    },
    async latest(logName) {
      // The whole file, streamed: the largest size matters, not the last line — a log rolled back
      // and then run on sends smaller checkpoints after the one that proves the rollback.
      let best: WitnessEntry | undefined;
      for await (const e of this.entries!(logName)) if (!best || e.size > best.size) best = e;
      return best;
    },
  };
}

function pgWitness(config: Extract<WitnessConfig, { kind: 'postgres' }>): AuditWitness {
  const table = `${config.schema ? `"${config.schema}".` : ''}"${config.table ?? 'olocus_audit_witness'}"`;
  let host = 'postgres';
  try {
    const u = new URL(config.connectionString);
    host = `${u.hostname}${u.port ? `:${u.port}` : ''}${u.pathname}`;
  } catch {
    // a key=value connection string: named without its contents (it may hold a password)
  }
  const name = `postgres ${host} table ${config.table ?? 'olocus_audit_witness'}`;
  let ready = false;
  const withClient = async <T>(action: string, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const pgLib = await loadPg();
    const client = new pgLib.Client({ connectionString: config.connectionString, connectionTimeoutMillis: 10_000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      if (!ready) {
        if (config.schema) await client.query(`create schema if not exists "${config.schema}"`);
        await client.query(
          `create table if not exists ${table} (id bigserial primary key, log_name text not null, size bigint not null, head_hash text not null, time text not null, key_id text not null, algorithm text not null, signature text not null, key_fingerprint text not null, note text not null, received_at timestamptz not null default now())`,
        );
        ready = true;
      }
      return await fn(client);
    } catch (error) {
      throw unreachable(name, action, error);
    } finally {
      await client.end().catch(() => undefined);
    }
  };
  return {
    name,
    kind: 'postgres',
    readable: true,
    submit: (e) =>
      withClient('writing the checkpoint', async (c) => {
        await c.query(`insert into ${table} (log_name, size, head_hash, time, key_id, algorithm, signature, key_fingerprint, note) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, [
          e.logName, e.size, e.headHash, e.time, e.keyId, e.algorithm, e.signature, e.keyFingerprint, e.note,
        ]);
      }),
    async *entries(logName) {
      const rows = await withClient('reading', async (c) => (await c.query(`select * from ${table} where log_name = $1 order by id`, [logName])).rows as Record<string, unknown>[]);
      for (const r of rows) yield fromRow(r);
    },
    latest: (logName) =>
      withClient('reading', async (c) => {
        const r = (await c.query(`select * from ${table} where log_name = $1 order by size desc, id desc limit 1`, [logName])).rows[0] as Record<string, unknown> | undefined;
        return r ? fromRow(r) : undefined;
      }),
  };
}

function fromRow(r: Record<string, unknown>): WitnessEntry {
  return {
    format: 'olocus-audit-checkpoint/1',
    logName: String(r['log_name']),
    size: Number(r['size']),
    headHash: String(r['head_hash']),
    time: String(r['time']),
    keyId: String(r['key_id']),
    algorithm: String(r['algorithm']),
    signature: String(r['signature']),
    keyFingerprint: String(r['key_fingerprint']),
    note: String(r['note']),
  };
}

/**
 * POST the entry as JSON to `url`; read back with GET `url?logName=<name>` (200 with the entry,
 * 404 when it holds none). Header values are credentials to the witness: never echoed.
 */
function httpWitness(config: Extract<WitnessConfig, { kind: 'http' }>): AuditWitness {
  const u = new URL(config.url);
  const name = `http ${u.origin}${u.pathname}`;
  const timeout = config.timeoutMs ?? 10_000;
  return {
    name,
    kind: 'http',
    readable: true,
    async submit(entry) {
      let res: Response;
      try {
        res = await fetch(config.url, { method: 'POST', headers: { 'content-type': 'application/json', ...config.headers }, body: JSON.stringify(entry), signal: AbortSignal.timeout(timeout) });
        await res.arrayBuffer();
      } catch (error) {
        throw unreachable(name, 'POST of the checkpoint', error);
      }
      if (!res.ok) throw unreachable(name, 'POST of the checkpoint', new Error(`HTTP ${res.status}`));
    },
    async latest(logName) {
      const url = new URL(config.url);
      url.searchParams.set('logName', logName);
      let res: Response;
      let body: unknown;
      try {
        res = await fetch(url, { headers: { accept: 'application/json', ...config.headers }, signal: AbortSignal.timeout(timeout) });
        if (res.status === 404) {
          await res.arrayBuffer();
          return undefined;
        }
        body = await res.json();
      } catch (error) {
        throw unreachable(name, 'GET of the newest checkpoint', error);
      }
      if (!res.ok) throw unreachable(name, 'GET of the newest checkpoint', new Error(`HTTP ${res.status}`));
      if (!isEntry(body, logName)) throw unreachable(name, 'GET of the newest checkpoint', new Error('the answer is not a checkpoint of this log'));
      return body;
    },
  };
}

function sdEscape(v: string): string {
  return v.replace(/[\\"\]]/g, (c) => `\\${c}`);
}

/** An RFC 5424 message for a checkpoint: structured data names it, the message is the entry as JSON. */
export function syslogMessage(entry: WitnessEntry, options: { facility?: number; appName?: string; host?: string } = {}): string {
  const pri = (options.facility ?? 13) * 8 + 5; // facility 13 = log audit, severity 5 = notice
  const host = (options.host ?? hostname()).replace(/[^!-~]/g, '').slice(0, 255) || '-';
  const sd = `[olocusCheckpoint@32473 logName="${sdEscape(entry.logName)}" size="${entry.size}" headHash="${entry.headHash}" keyId="${sdEscape(entry.keyId)}" keyFingerprint="${entry.keyFingerprint}"]`;
  return `<${pri}>1 ${new Date().toISOString()} ${host} ${options.appName ?? 'olocus-hsm'} ${process.pid} checkpoint ${sd} \uFEFF${JSON.stringify(entry)}`;
}

/** RFC 5424 over UDP (RFC 5426) or TCP (octet counting, RFC 6587). Write-only: syslog cannot be asked back. */
function syslogWitness(config: Extract<WitnessConfig, { kind: 'syslog' }>): AuditWitness {
  const host = config.host ?? '127.0.0.1';
  const port = config.port ?? 514;
  const name = `syslog ${config.transport}://${host}:${port}`;
  return {
    name,
    kind: 'syslog',
    readable: false,
    async submit(entry) {
      const message = Buffer.from(syslogMessage(entry, { ...(config.facility !== undefined ? { facility: config.facility } : {}), ...(config.appName ? { appName: config.appName } : {}) }));
      try {
        if (config.transport === 'udp') {
          const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
          try {
            await new Promise<void>((resolve, reject) => socket.send(message, port, host, (error) => (error ? reject(error) : resolve())));
          } finally {
            socket.close();
          }
          return;
        }
        await new Promise<void>((resolve, reject) => {
          const socket = createConnection({ host, port });
          socket.setTimeout(10_000, () => socket.destroy(new Error('timed out')));
          socket.once('error', reject);
          socket.once('connect', () => {
            socket.end(Buffer.concat([Buffer.from(`${message.length} `), message]), () => resolve());
          });
        });
      } catch (error) {
        throw unreachable(name, 'sending the checkpoint', error);
      }
    },
    async latest() {
      return undefined;
    },
  };
}

/** A witness from its config (validated; a bad field is InvalidConfiguration naming `field`). */
export function createWitness(config: WitnessConfig | AuditWitness, field = 'witnesses'): AuditWitness {
  if (typeof (config as AuditWitness).submit === 'function') return config as AuditWitness;
  const c = parseWithSchema(witnessConfigSchema, config, field) as WitnessConfig;
  switch (c.kind) {
    case 'file':
      return fileWitness(c.path);
    case 'postgres':
      return pgWitness(c);
    case 'http':
      return httpWitness(c);
    case 'syslog':
      return syslogWitness(c);
  }
}

/** What `verify` learned from one witness. */
export interface WitnessConsultation {
  witness: string;
  kind: AuditWitness['kind'];
  /** consulted: it answered with a checkpoint; empty: it holds none of this log; write-only: cannot be asked (syslog); unreachable; invalid: its checkpoint's signature does not verify. */
  status: 'consulted' | 'empty' | 'write-only' | 'unreachable' | 'invalid';
  size?: number;
  headHash?: string;
  time?: string;
  message?: string;
}

/** Asks every readable witness for the newest checkpoint of `logName`. */
export async function consultWitnesses(witnesses: readonly AuditWitness[], logName: string): Promise<Array<{ witness: AuditWitness; entry?: WitnessEntry; consultation: WitnessConsultation }>> {
  return Promise.all(
    witnesses.map(async (witness) => {
      const base = { witness: witness.name, kind: witness.kind };
      if (!witness.readable) return { witness, consultation: { ...base, status: 'write-only' as const, message: 'receives checkpoints but cannot be asked for them' } };
      try {
        const entry = await witness.latest(logName);
        if (!entry) return { witness, consultation: { ...base, status: 'empty' as const } };
        return { witness, entry, consultation: { ...base, status: 'consulted' as const, size: entry.size, headHash: entry.headHash, time: entry.time } };
      } catch (error) {
        return { witness, consultation: { ...base, status: 'unreachable' as const, message: error instanceof Error ? error.message : String(error) } };
      }
    }),
  );
}
