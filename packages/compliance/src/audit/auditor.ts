import { hash as oneShot } from 'node:crypto';
import { HsmError, auditedBackend, isHsmError, type HsmBackend, type OperationAuditor, type OperationEvent } from '@olocus/hsm-core';
import { storageFaultOf } from './faults.js';
import type { AuditLog } from './log.js';
import type { AuditDetails, AuditEventInput, AuditEventType } from './types.js';

export interface AuditorOptions {
  /** Who performs the operations (a principal, service account or OS user), or a function returning it per event. */
  actor: string | (() => string);
  /** Refuse the operation's result when its record cannot be written (default: the log's failClosed). */
  failClosed?: boolean;
  /** Called when a record could not be written and failClosed is off (raise an alert here). */
  onAuditFailure?: (error: unknown) => void;
}

/** An OperationAuditor writing to an AuditLog, plus a way to record failures that happen outside key operations. */
export interface LogAuditor extends OperationAuditor {
  /**
   * Records a failure that is not a key operation — typically opening a backend with a wrong
   * PIN or passphrase (recorded as `auth.failure`). Never rejects when failClosed is off.
   */
  recordFailure(context: { backend: string; operation: string; keyId?: string }, error: unknown): Promise<void>;
}

const AUTH_CODES = new Set(['LoginFailed', 'PinLocked', 'WrongPassphrase']);

const TYPE_OF: Record<OperationEvent['operation'], AuditEventType> = {
  generateKey: 'key.generate',
  getKey: 'key.access',
  getPublicKey: 'key.access',
  sign: 'key.sign',
  verify: 'key.verify',
  destroyKey: 'key.destroy',
};

/** `sha256:<hex>` of data: what the log keeps instead of the data. */
export function dataDigest(data: Uint8Array): string {
  return 'sha256:' + oneShot('sha256', data, 'hex');
}

function errorFacts(error: unknown): { errorCode: string; reason: string } {
  if (isHsmError(error)) return { errorCode: error.code, reason: error.message.slice(0, 1000).replace(/\u0000|\p{Cs}/gu, '\uFFFD') || error.code };
  // a foreign error's message may carry anything: only its class name is kept
  return { errorCode: 'Unknown', reason: `non-HsmError failure (${error instanceof Error ? error.name : typeof error})` };
}

/** Maps a core OperationEvent to audit records (a second `auth.failure` record for credential errors). */
export function eventToRecords(event: OperationEvent, actor: string): AuditEventInput[] {
  const details: AuditDetails = { operation: event.operation };
  // The caller's tag (SignOptions.purpose): lets reports and tails tell a health canary or an
  // audit checkpoint signature from application traffic.
  const { purpose, dataDigest: streamedDigest } = event as OperationEvent & { purpose?: unknown; dataDigest?: unknown };
  if (typeof purpose === 'string' && purpose !== '') details['purpose'] = purpose.slice(0, 64);
  if (event.valid !== undefined) details['valid'] = event.valid;
  if (event.verifiedLocally !== undefined) details['verifiedLocally'] = event.verifiedLocally;
  // A logical-key signature is dated by the moment its version was confirmed Active; the rules
  // judge it by that, not by this record's (later) append time.
  if (event.operation === 'sign' && event.signedAt instanceof Date && !Number.isNaN(event.signedAt.getTime())) details['signedAt'] = event.signedAt.toISOString();
  const base: AuditEventInput = {
    type: TYPE_OF[event.operation],
    actor,
    outcome: event.outcome,
    backend: event.backend,
    ...(event.keyId ? { keyId: event.keyId } : {}),
    ...(event.algorithm ? { algorithm: event.algorithm } : {}),
    ...(event.logicalKey ? { baseKeyId: event.logicalKey.baseKeyId, keyVersion: event.logicalKey.version } : {}),
    latencyMs: Math.max(0, event.latencyMs),
    ...(event.data ? { dataDigest: dataDigest(event.data) } : typeof streamedDigest === 'string' ? { dataDigest: streamedDigest } : {}),
    details,
  };
  if (event.outcome === 'success' || event.error === undefined) return [base];
  const facts = errorFacts(event.error);
  const records: AuditEventInput[] = [{ ...base, ...facts }];
  if (AUTH_CODES.has(facts.errorCode)) {
    records.push({ ...base, type: 'auth.failure', ...facts, details: { operation: event.operation, ...(details['purpose'] !== undefined ? { purpose: details['purpose'] } : {}) } });
  }
  return records;
}

/**
 * The compliance side of core's auditing seam: each key operation becomes a durable record
 * before HsmManager / auditedBackend hands the result back. failClosed (default the log's):
 * when the record cannot be written the operation's result is withheld with
 * HsmError('PolicyViolation', details.auditCode 'AuditUnavailable'); otherwise the result is
 * returned and `onAuditFailure` is told.
 */
export function auditorFor(log: AuditLog, options: AuditorOptions): LogAuditor {
  const failClosed = options.failClosed ?? log.settings.failClosed;
  const actorOf = typeof options.actor === 'function' ? options.actor : () => options.actor as string;
  if (typeof options.actor === 'string' && options.actor.trim() === '') {
    throw new HsmError('InvalidConfiguration', 'auditor.actor: must be a non-empty string', { details: { field: 'auditor.actor' } });
  }
  const write = async (records: AuditEventInput[]): Promise<void> => {
    try {
      await Promise.all(records.map((r) => log.append(r)));
    } catch (error) {
      if (failClosed) {
        // The refusal says why. A retryable storage fault (a full disk, a busy or unreachable
        // store) keeps its code and retryable flag, so the library and the CLI report the same
        // fault the same way; anything else is a policy refusal.
        const fault = storageFaultOf(error);
        const transient = fault !== undefined && isHsmError(error) && error.retryable;
        const why = isHsmError(error) ? error.message : 'the audit log failed';
        throw new HsmError(transient ? error.code : 'PolicyViolation', `audit record could not be written (${why}); operation refused (failClosed)`, {
          cause: error,
          retryable: transient,
          details: { auditCode: 'AuditUnavailable', errorCode: isHsmError(error) ? error.code : undefined, ...(fault ? { storageFault: fault } : {}) },
        });
      }
      try {
        options.onAuditFailure?.(error);
      } catch {
        // the alert hook must not turn a tolerated audit failure into an operation failure
      }
    }
  };
  return {
    record: (event) => write(eventToRecords(event, actorOf())),
    recordFailure: (context, error) => {
      const facts = errorFacts(error);
      const base: AuditEventInput = {
        type: AUTH_CODES.has(facts.errorCode) ? 'auth.failure' : 'admin.action',
        actor: actorOf(),
        outcome: 'failure',
        backend: context.backend,
        ...(context.keyId ? { keyId: context.keyId } : {}),
        ...facts,
        details: { operation: context.operation },
      };
      return write([base]);
    },
  };
}

/** `auditedBackend(backend, auditorFor(log, options))`. */
export function withAudit(backend: HsmBackend, log: AuditLog, options: AuditorOptions): HsmBackend {
  return auditedBackend(backend, auditorFor(log, options));
}
