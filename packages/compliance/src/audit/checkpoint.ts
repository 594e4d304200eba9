import { HsmError, isHsmError, type HsmBackend, type KeyAlgorithm } from '@olocus/hsm-core';
import type { CheckpointSigner } from './options.js';

export interface CheckpointSignerOptions {
  /** Create the key when it does not exist (default true). */
  create?: boolean;
  algorithm?: KeyAlgorithm;
}

/**
 * A checkpoint signer backed by an HSM key. Pass the backend itself, not an audited wrapper:
 * a checkpoint signature must not wait on the log it protects (HsmManager hands the raw
 * backend to `OperationAuditor.attach`). The key is looked up (or created) on first use.
 */
export function checkpointSignerFromBackend(backend: HsmBackend, keyId: string, options: CheckpointSignerOptions = {}): CheckpointSigner {
  const algorithm = options.algorithm ?? 'ECDSA_P256';
  const create = options.create ?? true;
  let ready: Promise<void> | undefined;
  const ensure = () =>
    (ready ??= (async () => {
      try {
        const handle = await backend.getKey(keyId);
        if (handle.algorithm !== algorithm) {
          throw new HsmError('InvalidConfiguration', `audit checkpoint key ${keyId} is ${handle.algorithm}, expected ${algorithm}`, { details: { field: 'checkpoint.signer', auditCode: 'CheckpointKeyMismatch' } });
        }
      } catch (error) {
        if (!isHsmError(error, 'KeyNotFound') || !create) throw error;
        try {
          await backend.generateKeyPair({ id: keyId, algorithm, labels: { purpose: 'olocus audit checkpoints' } } as Parameters<HsmBackend['generateKeyPair']>[0]);
        } catch (e) {
          if (!isHsmError(e, 'KeyAlreadyExists')) throw e;
        }
      }
    })().catch((error) => {
      ready = undefined;
      throw error;
    }));
  return {
    keyId,
    algorithm,
    backend: backend.type,
    // a key the log finds in charge after a rotation already exists: never created here
    withKey: (other, otherAlgorithm) => checkpointSignerFromBackend(backend, other, { create: false, algorithm: otherAlgorithm }),
    async sign(data) {
      await ensure();
      // tagged, so that a backend wrapped for auditing after all records it as a checkpoint signature
      return backend.sign(keyId, data, { purpose: 'audit-checkpoint' });
    },
    async publicKey() {
      await ensure();
      return (await backend.getPublicKey(keyId)).spki;
    },
  };
}
