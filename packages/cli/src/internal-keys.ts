/**
 * Keys the CLI and its libraries make for themselves: the audit log's checkpoint key (it signs
 * checkpoints and compliance reports; destroying it makes the log unverifiable) and the health
 * canary. Commands that destroy keys refuse these.
 */
export const AUDIT_CHECKPOINT_KEY_ID = 'olocus-audit-checkpoint';
export const HEALTH_CANARY_KEY_ID = 'olocus-health-canary';
/** Signs backup bundle manifests (@olocus/hsm-backup's default signer id). */
export const BACKUP_SIGNER_KEY_ID = 'olocus.backup-signer';

const INTERNAL_KEY_IDS: ReadonlySet<string> = new Set([AUDIT_CHECKPOINT_KEY_ID, HEALTH_CANARY_KEY_ID, BACKUP_SIGNER_KEY_ID]);

/**
 * True for an internal key id. `extra` adds ids a config chose instead of the defaults
 * (`audit.checkpoint.keyId`), so a renamed checkpoint key is protected too.
 */
export function isInternalKeyId(id: string, extra: readonly string[] = []): boolean {
  return INTERNAL_KEY_IDS.has(id) || extra.includes(id);
}
