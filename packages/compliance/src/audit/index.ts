export * from './types.js';
export { ZERO_HASH, canonicalRecord, canonicalDetails, recordHash, checkpointBody, type RecordLike } from './jcs.js';
export type { AuditLogOptions, AuditStorageOptions, CheckpointSigner } from './options.js';
export { AuditLog, openAuditLog, verifyExport, SECRET_KEY_PATTERN, CHECKPOINT_KEY_ROTATED, type CheckpointKeyRotation, type AuditStats, type AuditExportSummary, type AuditTailOptions, type AuditVerifyOptions, type AuditPruneResult } from './log.js';
export { checkpointSignerFromBackend, type CheckpointSignerOptions } from './checkpoint.js';
export { auditorFor, withAudit, dataDigest, eventToRecords, type AuditorOptions, type LogAuditor } from './auditor.js';
export { classifyStorageFault, storageFaultError, storageFaultOf, type StorageFault, type StorageFaultKind, type StorageFaultContext } from './faults.js';
export { createWitness, consultWitnesses, keyFingerprint, witnessEntry, syslogMessage, type AuditWitness, type WitnessConfig, type WitnessEntry, type WitnessConsultation } from './witness.js';
