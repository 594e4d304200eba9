export {
  AUDIT_PART_NAME,
  BUNDLE_FORMAT,
  DEFAULT_BACKUP_SIGNER_KEY_ID,
  bundleErrorPart,
  canonicalJson,
  fingerprintOf,
  keyPartName,
  registryPartName,
  type AuditPart,
  type BundleFile,
  type BundleManifest,
  type BundleSigner,
  type KeyPart,
  type ManifestPart,
  type PartKind,
  type RegistryPart,
  type Row,
} from './format.js';
export { writeFileAtomic } from './atomic.js';
export { withBackupByDefault } from './eligible.js';
export { createBundle, ensureSigner, type BackupProgress, type CreateBundleOptions, type CreateBundleResult, type CreatedKey } from './create.js';
export { verifyBundle, verifyBundleText, type VerifiedBundle, type VerifyBundleOptions } from './verify.js';
export {
  restoreBundle,
  restoreVerified,
  type RestoreAction,
  type RestoreBundleOptions,
  type RestoreKeyRow,
  type RestoreProgress,
  type RestoreRegistryRow,
  type RestoreResult,
} from './restore.js';
export { drillBundle, type DrillOptions, type DrillResult, type DrillRow } from './drill.js';
export {
  BACKUP_STALE_ALERT,
  BUNDLE_PREFIX,
  BUNDLE_SUFFIX,
  applyRetention,
  checkBackupFreshness,
  listBundles,
  runScheduledBackup,
  scheduledBundleName,
  type BackupAlertTarget,
  type BundleListing,
  type FreshnessReport,
  type RetentionResult,
  type ScheduledBackupOptions,
  type ScheduledBackupResult,
} from './schedule.js';
