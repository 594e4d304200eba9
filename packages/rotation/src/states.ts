/**
 * Key version states and the moves between them, exactly as in COMPLIANCE-RULES.md part B
 * ("States"). The storage enforces "at most one Active version per logical key" on its own
 * (a partial unique index); this table is enforced by the registry before every change.
 */
export const KEY_STATES = [
  'PreActivation',
  'Active',
  'Suspended',
  'Superseded',
  'Revoked',
  'Compromised',
  'Archived',
  'PendingDestruction',
  'Destroyed',
] as const;

export type KeyState = (typeof KEY_STATES)[number];

/** States a new version may be registered in ("create → PreActivation or Active"). */
export const INITIAL_STATES: readonly KeyState[] = Object.freeze(['PreActivation', 'Active']);

/**
 * Allowed moves. Read literally from the rules:
 * PreActivation → Active; Active → Superseded (rotation), Suspended, Revoked/Compromised;
 * Suspended → Active (before its cryptoperiod ends), Superseded, Revoked;
 * Superseded → Archived, Revoked, PendingDestruction; Archived → PendingDestruction;
 * Revoked/Compromised → PendingDestruction; PendingDestruction → Destroyed (after the waiting
 * period) or back to Archived/Superseded (cancel). Nothing leaves Destroyed.
 */
export const TRANSITIONS: Readonly<Record<KeyState, readonly KeyState[]>> = Object.freeze({
  PreActivation: Object.freeze(['Active'] as KeyState[]),
  Active: Object.freeze(['Superseded', 'Suspended', 'Revoked', 'Compromised'] as KeyState[]),
  Suspended: Object.freeze(['Active', 'Superseded', 'Revoked'] as KeyState[]),
  Superseded: Object.freeze(['Archived', 'Revoked', 'PendingDestruction'] as KeyState[]),
  Revoked: Object.freeze(['PendingDestruction'] as KeyState[]),
  Compromised: Object.freeze(['PendingDestruction'] as KeyState[]),
  Archived: Object.freeze(['PendingDestruction'] as KeyState[]),
  PendingDestruction: Object.freeze(['Destroyed', 'Archived', 'Superseded'] as KeyState[]),
  Destroyed: Object.freeze([] as KeyState[]),
});

export function isKeyState(value: unknown): value is KeyState {
  return typeof value === 'string' && (KEY_STATES as readonly string[]).includes(value);
}

/** Whether a version may move from `from` to `to` (`null` = creation). */
export function canTransition(from: KeyState | null, to: KeyState): boolean {
  if (from === null) return INITIAL_STATES.includes(to);
  return TRANSITIONS[from]?.includes(to) ?? false;
}

/** States whose versions may sign (LC-PROTECT). */
export const SIGNING_STATES: readonly KeyState[] = Object.freeze(['Active']);

/**
 * States whose versions may verify a signature made while they were Active (LC-PROCESS):
 * Active, Superseded and Archived. Never PreActivation, Suspended (needs an audited override),
 * Revoked, Compromised, PendingDestruction or Destroyed.
 */
export const VERIFYING_STATES: readonly KeyState[] = Object.freeze(['Active', 'Superseded', 'Archived']);
