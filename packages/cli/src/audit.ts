import { HsmError, isHsmError, type HsmBackend, type KeyAlgorithm, type OperationAuditor, type OperationEvent } from '@olocus/hsm-core';
import type { AuditEventInput, AuditLog, CheckpointSigner } from '@olocus/hsm-compliance';
import type { RotationEvent, RotationEvents, StateChange } from '@olocus/hsm-rotation';
import { rememberConnectionString } from './errors.js';
import { AUDIT_LOG_LABEL, auditLogIdentity } from './store-evidence.js';
import { inFile } from './config.js';
import { readCliSecret } from './secrets.js';
import type { AuditSection } from './audit-config.js';
import { witnessesFor } from './audit-config.js';
import type { CliContext } from './context.js';

/**
 * The CLI's audit log: opened with the manager when the config's `audit` section is enabled,
 * so every key operation a command performs is recorded before its result is printed.
 * Rotation events (state changes, rotations, security events) are appended as they happen;
 * `close()` waits for every pending record, writes the final checkpoint and closes the store.
 */
export interface CliAudit {
  readonly log: AuditLog;
  readonly section: AuditSection;
  readonly auditor: OperationAuditor;
  readonly actor: string;
  /** The backend itself, without the audit wrapper (set when the manager attaches): lookups that are part of an operation. */
  readonly backend: HsmBackend | undefined;
  /** Appends a record made by the CLI itself (audit access, configuration change). */
  append(input: Omit<AuditEventInput, 'actor'> & { actor?: string }): Promise<void>;
  /** Records a failure outside a key operation: opening the backend (a wrong PIN is `auth.failure`). */
  recordFailure(context: { backend: string; operation: string }, error: unknown): Promise<void>;
  /** Records rotation events until the returned function is called. */
  followRotation(events: RotationEvents): () => void;
  /**
   * The registry's `beforeCommit` hook: the records of one transaction's state changes (and the
   * rotation or security event they make up), durable before the transaction commits. A
   * rejection rolls the change back, so a crash can never leave a committed change unaudited.
   */
  recordChanges(changes: readonly StateChange[]): Promise<void>;
  /** The registry's `onEvent`: events that are not state changes (recoveries, task failures). */
  recordRotationEvent(event: RotationEvent): void;
  /** Waits for the rotation records appended so far to be durable. */
  flush(): Promise<void>;
  /** The backend the checkpoints are signed with (set when the manager attaches). */
  checkpointSigner(): CheckpointSigner;
  close(): Promise<void>;
}

async function storageOf(ctx: CliContext, section: AuditSection, configPath: string): Promise<{ kind: 'sqlite'; path: string } | { kind: 'postgres'; connectionString: string; schema?: string }> {
  const storage = section.storage;
  if (storage.kind === 'sqlite') return storage;
  let connectionString: string;
  try {
    connectionString = await readCliSecret(storage.connectionString, 'audit.storage.connectionString', ctx.env);
  } catch (error) {
    throw inFile(error, configPath);
  }
  rememberConnectionString(connectionString);
  return { kind: 'postgres', connectionString, ...(storage.schema ? { schema: storage.schema } : {}) };
}

type RecordInput = Omit<AuditEventInput, 'actor'> & { actor?: string };

function changeRecord(c: StateChange): RecordInput {
  return { type: 'key.state', outcome: 'success', actor: c.actor, keyId: c.keyId, baseKeyId: c.baseKeyId, keyVersion: c.version, reason: c.reason, time: c.at, details: { from: c.from, to: c.to } };
}

const RETIRED_BY_EMERGENCY = new Set(['Compromised', 'Revoked']);

/**
 * The records of one registry transaction: a key.state per change, plus what the changes make
 * up together — a new version made Active while the old one left Active is a rotation (an
 * emergency one when the old version was marked Compromised/Revoked, which is also a security
 * event). Derived here, inside the transaction, rather than from the events emitted after it.
 */
export function transactionRecords(changes: readonly StateChange[]): RecordInput[] {
  const records = changes.map(changeRecord);
  for (const activated of changes) {
    if (activated.to !== 'Active' || activated.from !== 'PreActivation') continue;
    const retired = changes.find((c) => c.baseKeyId === activated.baseKeyId && c !== activated && (c.from === 'Active' || c.from === 'Suspended') && c.to !== 'Active');
    if (!retired) continue; // version 1 of a new key: its creation is the key.generate record
    const emergency = RETIRED_BY_EMERGENCY.has(retired.to);
    const kind = emergency ? 'emergency' : activated.actor === 'system:scheduler' ? 'scheduled' : 'manual';
    records.push({
      type: 'key.rotate',
      outcome: 'success',
      actor: activated.actor,
      keyId: activated.keyId,
      baseKeyId: activated.baseKeyId,
      keyVersion: activated.version,
      reason: activated.reason,
      time: activated.at,
      details: { kind, fromVersion: retired.version, toVersion: activated.version, oldState: retired.to },
    });
    if (emergency) {
      records.push({
        type: 'security.event',
        outcome: 'success',
        actor: activated.actor,
        keyId: retired.keyId,
        baseKeyId: retired.baseKeyId,
        keyVersion: retired.version,
        reason: retired.reason,
        time: retired.at,
        details: { event: 'emergencyRotation', severity: 'CRIT', markedAs: retired.to, newVersion: activated.version },
      });
    }
  }
  return records;
}

function rotationRecord(event: RotationEvent): RecordInput | undefined {
  switch (event.type) {
    case 'rotationRecovered':
      return {
        type: 'admin.action',
        outcome: 'success',
        actor: event.actor,
        baseKeyId: event.baseKeyId,
        keyVersion: event.version,
        reason: event.reason,
        time: event.at,
        details: { action: 'rotation recovered', fromStep: event.fromStep, previousOwner: event.previousOwner, version: event.version },
      };
    case 'securityEvent':
      // with a new version it was recorded inside the swap transaction (transactionRecords); an
      // emergency whose new key could not be made marks the old version alone, recorded here
      if (event.newVersion !== null) return undefined;
      return {
        type: 'security.event',
        outcome: 'success',
        actor: event.actor,
        keyId: event.compromisedKeyId,
        baseKeyId: event.baseKeyId,
        keyVersion: event.compromisedVersion,
        reason: event.reason,
        time: event.at,
        details: { event: event.event, severity: event.severity, markedAs: event.markedAs, newVersion: event.newVersion },
      };
    case 'taskFailed':
      return {
        type: 'admin.action',
        outcome: 'failure',
        actor: 'rotation-scheduler',
        baseKeyId: event.baseKeyId,
        time: event.at,
        reason: event.error,
        details: { action: `scheduled ${event.kind}`, taskId: event.taskId, attempts: event.attempts, final: event.final },
      };
    default:
      // keyCreated / keyDestroyed are the backend operations the auditor already records;
      // warnings and orphans are monitoring's.
      return undefined;
  }
}

export async function openCliAudit(ctx: CliContext, section: AuditSection, configPath: string, actor: string): Promise<CliAudit> {
  const { openAuditLog, auditorFor, eventToRecords, storageFaultError, storageFaultOf } = await import('@olocus/hsm-compliance/audit');
  const file = section.storage.kind === 'sqlite' ? section.storage.path : undefined;
  // One mapping with the library (compliance's): a full disk is a retryable DeviceUnavailable
  // that says so and names the file, whichever layer meets it.
  const storageError = (error: unknown, action: string): unknown =>
    isHsmError(error) || !file ? error : storageFaultError(error, { store: 'audit log', action, target: file, file, details: { auditCode: 'AuditUnavailable' } });
  /** What a fail-closed refusal is: the storage fault's own code when it is transient, else PolicyViolation — as compliance's auditor decides. */
  const refusal = (error: unknown, what: string): HsmError => {
    const fault = storageFaultOf(error);
    const transient = fault !== undefined && isHsmError(error) && error.retryable;
    const why = isHsmError(error) ? error.message : (error as Error)?.message ?? 'the audit log failed';
    return new HsmError(transient ? (error as HsmError).code : 'PolicyViolation', `audit record could not be written (${why}); ${what} refused (failClosed)`, {
      cause: error,
      retryable: transient,
      details: { auditCode: 'AuditUnavailable', errorCode: isHsmError(error) ? error.code : undefined, ...(fault ? { storageFault: fault } : {}) },
    });
  };
  const storage = await storageOf(ctx, section, configPath);
  let backend: HsmBackend | undefined;
  // withKey: a log whose checkpoint key was rotated (`audit rotate-checkpoint-key`) reopens with
  // the key its chain names, not the configured one.
  const signerFor = (keyId: string, algorithm: KeyAlgorithm = 'ECDSA_P256'): CheckpointSigner => ({
    keyId,
    algorithm,
    sign: async (data) => {
      if (!backend) throw new Error('the audit checkpoint key is not available before the backend opens');
      return backend.sign(keyId, data, { purpose: 'audit-checkpoint' });
    },
    publicKey: async () => {
      if (!backend) throw new Error('the audit checkpoint key is not available before the backend opens');
      return (await backend.getPublicKey(keyId)).spki;
    },
    withKey: (other, otherAlgorithm) => signerFor(other, otherAlgorithm),
  });
  const signer = signerFor(section.checkpoint.keyId);
  let log: AuditLog;
  try {
    log = await openAuditLog({
      storage,
      logName: section.logName,
      failClosed: section.failClosed,
      retention: section.retention,
      witnesses: await witnessesFor(section, configPath, ctx.env),
      checkpoint: { everyRecords: section.checkpoint.everyRecords, intervalMs: Math.round(section.checkpoint.intervalSeconds * 1000), signer },
      onFailure: (error: unknown) => {
        // A backend that never opened cannot sign the closing checkpoint; the next command's
        // checkpoint covers these records, so this is not worth a line.
        if (!backend && (error as { details?: { auditCode?: string } }).details?.auditCode === 'CheckpointSignFailed') return;
        ctx.note(`olocus-hsm: audit: ${(error as Error).message}`);
      },
    });
  } catch (error) {
    throw inFile(storageError(error, 'opening'), configPath);
  }
  const inner = auditorFor(log, { actor, failClosed: section.failClosed, onAuditFailure: (error: unknown) => ctx.note(`olocus-hsm: audit record not written (failClosed is off): ${(error as Error).message}`) });
  const pending = new Set<Promise<unknown>>();
  const track = (p: Promise<unknown>): void => {
    const tracked = p.catch((error) => ctx.note(`olocus-hsm: audit: ${(error as Error).message}`)).finally(() => pending.delete(tracked));
    pending.add(tracked);
  };
  // An operation's purpose ('health-canary', ...) is kept in its record so that reports can tell
  // probes from application use. Written here, with the auditor's fail-closed rule, for as long
  // as the compliance auditor does not copy it itself.
  const recordWithPurpose = async (event: OperationEvent & { purpose: string }): Promise<void> => {
    const records = eventToRecords(event, actor).map((r) => ({ ...r, details: { ...r.details, purpose: event.purpose } }));
    try {
      await Promise.all(records.map((r) => log.append(r)));
    } catch (error) {
      if (section.failClosed) throw refusal(storageError(error, 'writing audit records'), 'operation');
      ctx.note(`olocus-hsm: audit record not written (failClosed is off): ${(error as Error).message}`);
    }
  };
  const auditor: OperationAuditor = {
    record: (event: OperationEvent) => {
      const purpose = (event as { purpose?: unknown }).purpose;
      if (typeof purpose !== 'string' || purpose === '') return inner.record(event);
      if (eventToRecords(event, actor).every((r) => r.details?.['purpose'] === purpose)) return inner.record(event);
      return recordWithPurpose({ ...event, purpose });
    },
    attach: async (b: HsmBackend) => {
      backend = b;
      // The checkpoint key is the audit's own: created on first use, never an application key.
      // After a rotation the chain names the key in use (the log's signer), not the configured one.
      const keyId = log.checkpointSigner?.keyId ?? section.checkpoint.keyId;
      try {
        await b.getKey(keyId);
      } catch (error) {
        if (!isHsmError(error, 'KeyNotFound')) throw error;
        // labelled with the log it was made for: a missing or emptied log whose key exists is then known to be lost, not new
        const identity = auditLogIdentity(section.logName, section.storage.kind === 'sqlite' ? section.storage.path : `postgres:${section.storage.schema ?? 'public'}`);
        await b.generateKeyPair({ id: keyId, algorithm: 'ECDSA_P256', labels: { purpose: 'olocus audit checkpoints and reports', [AUDIT_LOG_LABEL]: identity } });
      }
    },
  };
  return {
    log,
    section,
    auditor,
    actor,
    get backend() {
      return backend;
    },
    recordFailure: (context, error) => inner.recordFailure(context, error),
    append: (input) => log.append({ actor, ...input } as AuditEventInput).then(() => undefined),
    followRotation(events) {
      return events.on('event', (event: RotationEvent) => {
        const record = rotationRecord(event);
        if (record) track(log.append({ actor, ...record } as AuditEventInput));
      });
    },
    async recordChanges(changes) {
      const records = transactionRecords(changes);
      try {
        await Promise.all(records.map((r) => log.append({ actor, ...r } as AuditEventInput)));
      } catch (error) {
        // failClosed: no record, no change (the registry rolls the transaction back)
        if (section.failClosed) throw refusal(storageError(error, 'writing audit records'), 'key state change');
        ctx.note(`olocus-hsm: audit record not written (failClosed is off): ${(error as Error).message}`);
      }
    },
    recordRotationEvent(event) {
      const record = rotationRecord(event);
      if (record) track(log.append({ actor, ...record } as AuditEventInput));
    },
    checkpointSigner: () => signer,
    async flush() {
      await Promise.all(pending);
    },
    async close() {
      await Promise.all(pending);
      await log.close();
    },
  };
}
