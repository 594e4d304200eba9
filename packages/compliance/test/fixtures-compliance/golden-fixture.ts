import type { AuditRecord } from '../../src/audit/types.js';
import { ComplianceManager } from '../../src/report/index.js';
import { staticInventory, type ComplianceConfigInput, type Framework } from '../../src/rules/index.js';
import { DAY, hsmModule, keyWith, softwareModule } from './builders.js';
import { chain, defaultSettings, MemoryAuditReader, type RecordInput } from './memory-audit.js';

/** A key id that must come out escaped in every format. */
export const HOSTILE_KEY_ID = '<script>alert("x")</script>';

export const GOLDEN_FROM = new Date('2026-03-01T00:00:00Z');
export const GOLDEN_TO = new Date('2026-03-08T00:00:00Z');
export const GOLDEN_NOW = new Date('2026-03-08T06:00:00Z');

export function goldenKeys() {
  return [
    keyWith(
      'payments',
      'ECDSA_P256',
      'pkcs11',
      [
        { n: 1, path: [['PreActivation', '2025-06-01T00:00:00Z'], ['Active', '2025-06-01T00:00:01Z'], ['Superseded', '2026-03-03T12:00:00Z']] },
        { n: 2, path: [['PreActivation', '2026-03-03T12:00:00Z'], ['Active', '2026-03-03T12:00:00Z']] },
      ],
      { rotationIntervalMs: 90 * DAY },
    ),
    keyWith('legacy', 'RSA_2048', 'software', [{ n: 1, path: [['Active', '2024-01-10T00:00:00Z']] }]),
    keyWith(
      'tokens',
      'Ed25519',
      'pkcs11',
      [
        { n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Compromised', '2026-03-05T10:00:00Z']] },
        { n: 2, path: [['Active', '2026-03-05T11:00:00Z']] },
      ],
      { rotationIntervalMs: 30 * DAY },
    ),
  ];
}

/** The week's audit records, built by rule (not listed by hand) so the counts follow from the loop. */
export function goldenRecords(): AuditRecord[] {
  const inputs: RecordInput[] = [{ type: 'audit.start', time: '2026-03-01T00:00:00.000Z', actor: 'olocus-hsm', details: { logName: 'olocus-audit' } }];
  const at = (day: number, h: number, m = 0) => new Date(Date.UTC(2026, 2, 1 + day, h, m)).toISOString();
  const rotation = Date.parse('2026-03-03T12:00:00Z');
  for (let d = 0; d < 7; d++) {
    for (let i = 0; i < d + 2; i++) {
      const time = at(d, 9, i);
      const v = Date.parse(time) < rotation ? 1 : 2;
      inputs.push({ type: 'key.sign', time, actor: 'svc-payments', backend: 'pkcs11', keyId: `payments.v${v}`, baseKeyId: 'payments', keyVersion: v, algorithm: 'ECDSA_P256', dataDigest: `sha256:${'ab'.repeat(32)}`, latencyMs: 2 });
    }
    inputs.push({ type: 'key.verify', time: at(d, 10), actor: 'svc-gateway', backend: 'pkcs11', keyId: 'payments.v1', baseKeyId: 'payments', keyVersion: 1, algorithm: 'ECDSA_P256', details: { valid: true } });
    inputs.push({ type: 'key.sign', time: at(d, 11), actor: 'svc-legacy', backend: 'software', keyId: 'legacy.v1', baseKeyId: 'legacy', keyVersion: 1, algorithm: 'RSA_2048' });
    if (d === 2) {
      // `keys create` asks whether the id is free first: a lookup miss, not a failure
      inputs.push({ type: 'key.access', time: at(d, 11, 59), actor: 'alice@example.com', outcome: 'failure', backend: 'pkcs11', keyId: 'payments.v2', errorCode: 'KeyNotFound', details: { operation: 'getKey' } });
      inputs.push({ type: 'key.generate', time: at(d, 12), actor: 'alice@example.com', backend: 'pkcs11', keyId: 'payments.v2', baseKeyId: 'payments', keyVersion: 2, algorithm: 'ECDSA_P256' });
      inputs.push({ type: 'key.rotate', time: at(d, 12), actor: 'alice@example.com', keyId: 'payments.v2', baseKeyId: 'payments', keyVersion: 2, reason: 'scheduled rotation', details: { kind: 'scheduled', fromVersion: 1, toVersion: 2 } });
      inputs.push({ type: 'key.state', time: at(d, 12), actor: 'alice@example.com', keyId: 'payments.v1', baseKeyId: 'payments', keyVersion: 1, reason: 'rotated', details: { from: 'Active', to: 'Superseded' } });
    }
    if (d === 3) {
      // A caller still signing with the superseded version directly (LC-PROTECT).
      inputs.push({ type: 'key.sign', time: at(d, 8), actor: 'svc-batch', backend: 'pkcs11', keyId: 'payments.v1', baseKeyId: 'payments', keyVersion: 1, algorithm: 'ECDSA_P256' });
    }
    if (d === 4) {
      inputs.push({ type: 'key.state', time: at(d, 10), actor: 'secops@example.com', keyId: 'tokens.v1', baseKeyId: 'tokens', keyVersion: 1, reason: 'private key exposed in a crash dump', details: { from: 'Active', to: 'Compromised' } });
      inputs.push({ type: 'key.generate', time: at(d, 11), actor: 'secops@example.com', backend: 'pkcs11', keyId: 'tokens.v2', baseKeyId: 'tokens', keyVersion: 2, algorithm: 'Ed25519' });
      inputs.push({ type: 'key.rotate', time: at(d, 11), actor: 'secops@example.com', keyId: 'tokens.v2', baseKeyId: 'tokens', keyVersion: 2, reason: 'compromise', details: { kind: 'emergency', fromVersion: 1, toVersion: 2, approvers: 'secops@example.com' } });
    }
    if (d === 5) {
      inputs.push({ type: 'auth.failure', time: at(d, 3), actor: 'mallory@example.com', outcome: 'failure', backend: 'pkcs11', errorCode: 'LoginFailed' });
      inputs.push({ type: 'key.sign', time: at(d, 4), actor: 'svc-payments', outcome: 'failure', backend: 'pkcs11', keyId: 'payments.v9', algorithm: 'ECDSA_P256', errorCode: 'KeyNotFound' });
      inputs.push({ type: 'key.access', time: at(d, 5), actor: 'svc-gateway', backend: 'pkcs11', keyId: 'payments.v2', algorithm: 'ECDSA_P256' });
      // the HSM was unreachable for one signature: a service failure (availability counts it; KeyNotFound above it does not)
      inputs.push({ type: 'key.sign', time: at(d, 6), actor: 'svc-payments', outcome: 'failure', backend: 'pkcs11', keyId: 'payments.v2', baseKeyId: 'payments', keyVersion: 2, algorithm: 'ECDSA_P256', errorCode: 'DeviceUnavailable' });
    }
    if (d === 6) {
      inputs.push({ type: 'key.sign', time: at(d, 13), actor: 'unknown', backend: 'pkcs11', keyId: 'payments.v2', baseKeyId: 'payments', keyVersion: 2, algorithm: 'ECDSA_P256' });
      inputs.push({ type: 'key.generate', time: at(d, 14), actor: 'bob@example.com', backend: 'software', keyId: HOSTILE_KEY_ID, algorithm: 'ECDSA_P256' });
      inputs.push({ type: 'key.sign', time: at(d, 14, 1), actor: 'bob@example.com', backend: 'software', keyId: HOSTILE_KEY_ID, algorithm: 'ECDSA_P256' });
      inputs.push({ type: 'audit.access', time: at(d, 23), actor: 'auditor@example.com', details: { action: 'compliance-report' } });
    }
  }
  inputs.sort((a, b) => a.time.localeCompare(b.time));
  return chain(inputs);
}

export const GOLDEN_CONFIG: ComplianceConfigInput = {
  policy: { keyManagementRules: { generation: 'KMP-1 §2', storage: 'KMP-1 §3', access: 'KMP-1 §4', destruction: 'KMP-1 §5' } },
};

export function goldenManager(options: { framework?: Framework } = {}): { manager: ComplianceManager; reader: MemoryAuditReader; framework: Framework } {
  // a measured duration as performance.now() gives it: the report must show it rounded
  const reader = new MemoryAuditReader(goldenRecords(), defaultSettings(), { durationMs: 2.3763809999999808 });
  const manager = new ComplianceManager({
    audit: reader,
    inventory: staticInventory(goldenKeys(), 'golden fixture'),
    // the HSM's certificate and approved mode come from the operator's attestation, not the device
    modules: [hsmModule('pkcs11', { eddsaValidated: false, evidence: 'attested' }), softwareModule()],
    config: GOLDEN_CONFIG,
    clock: () => GOLDEN_NOW,
  });
  return { manager, reader, framework: options.framework ?? 'pci-dss' };
}
