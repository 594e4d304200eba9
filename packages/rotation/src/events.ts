import { EventEmitter } from 'node:events';
import type { KeyState } from './states.js';
import type { StateChange } from './types.js';

/**
 * Everything the rotation package reports. The compliance package subscribes to these (all
 * through the 'event' channel, or by type); a listener's failure never undoes a committed change.
 */
export type RotationEvent =
  | ({ type: 'stateChanged' } & StateChange)
  | { type: 'keyCreated'; baseKeyId: string; version: number; keyId: string; algorithm: string; actor: string; reason: string; at: Date }
  | {
      type: 'rotated';
      baseKeyId: string;
      kind: 'manual' | 'scheduled' | 'emergency';
      fromVersion: number;
      toVersion: number;
      keyId: string;
      oldState: KeyState;
      overlapUntil?: Date;
      actor: string;
      reason: string;
      at: Date;
    }
  | {
      /** A security event: emitted for every emergency rotation (LC-EMERG, PCI-3.7.5). */
      type: 'securityEvent';
      event: 'emergencyRotation';
      severity: 'HIGH' | 'CRIT';
      baseKeyId: string;
      compromisedKeyId: string;
      compromisedVersion: number;
      markedAs: KeyState;
      /** null when the new version could not be generated (the old one was marked anyway). */
      newVersion: number | null;
      actor: string;
      reason: string;
      at: Date;
    }
  | { type: 'rotationWarning'; baseKeyId: string; version: number; keyId: string; rotationDueAt: Date; at: Date }
  | { type: 'overlapEnded'; baseKeyId: string; version: number; keyId: string; at: Date }
  | { type: 'keyDestroyed'; baseKeyId: string; version: number; keyId: string; at: Date }
  | { type: 'orphanKey'; keyId: string; baseKeyId: string; version: number; at: Date }
  /** An interrupted rotation (its node crashed) was completed by reconcile, a later rotate, or `recoverRotation`. */
  | { type: 'rotationRecovered'; baseKeyId: string; version: number; fromStep: string; previousOwner: string; actor: string; reason: string; at: Date }
  | { type: 'taskFailed'; taskId: string; kind: string; baseKeyId: string; attempts: number; final: boolean; error: string; at: Date };

export type RotationEventType = RotationEvent['type'];
export type RotationEventOf<T extends RotationEventType> = Extract<RotationEvent, { type: T }>;

/** A typed emitter: `on('rotated', e => ...)` or `on('event', e => ...)` for all. */
export class RotationEvents {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(100);
  }

  on<T extends RotationEventType>(type: T | 'event', listener: (event: RotationEventOf<T>) => void): () => void {
    this.emitter.on(type, listener as (e: unknown) => void);
    return () => this.emitter.off(type, listener as (e: unknown) => void);
  }

  once<T extends RotationEventType>(type: T | 'event', listener: (event: RotationEventOf<T>) => void): void {
    this.emitter.once(type, listener as (e: unknown) => void);
  }

  emit(event: RotationEvent): void {
    for (const channel of [event.type, 'event']) {
      for (const listener of this.emitter.listeners(channel)) {
        try {
          (listener as (e: RotationEvent) => void)(event);
        } catch {
          /* listeners never break the operation that emitted */
        }
      }
    }
  }
}
