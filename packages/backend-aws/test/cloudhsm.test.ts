import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { CloudHSMV2Client, CreateClusterCommand } from '@aws-sdk/client-cloudhsm-v2';
import { expectHsmError, runConformanceSuite } from '@olocus/hsm-core/testing';
import { SOFTHSM_LIB, createToken, softHsmEnv } from '@olocus/hsm-test-support';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsCloudHsmBackend, parseAwsCloudHsmOptions, type AwsCloudHsmOptionsInput } from '../src/index.js';
import { REGION, startMoto, useTestCredentials, type Emulator } from './emulators.js';
import { HttpFaultProxy } from './proxy.js';

/**
 * Runs against: moto_server's cloudhsmv2 (control plane: DescribeClusters, DescribeBackups) and a
 * SoftHSM token standing in for the cluster's PKCS#11 library, reached through
 * @olocus/hsm-backend-pkcs11 with the `cloudhsm` vendor profile (user:password PIN, token "hsm1").
 * moto creates every cluster ACTIVE and with no HSMs, so a project-owned proxy rewrites
 * DescribeClusters answers (same AWS JSON shape) to give a cluster ACTIVE HSMs or another state.
 * What it cannot prove: the CloudHSM client SDK 5 library itself (no emulator exists), its
 * mechanisms and quirks, HSM replication, and the FIPS status (SoftHSM does not match the
 * CloudHSM profile, so fipsStatus() says 'unknown' with a finding, as it should).
 */
useTestCredentials();
softHsmEnv();
const token = createToken('hsm1');
// CloudHSM PINs are `crypto-user:password`; the profile refuses anything else before C_Login
const PIN = `olocus_cu:${randomBytes(6).toString('hex')}`;
setUserPin(token.pin, PIN);

let moto: Emulator;
let proxy: HttpFaultProxy;
let activeCluster: string;
let bareCluster: string;
let degradedCluster: string;
/** When set, DescribeBackups answers say the cluster's backups were taken at this time (ms, whole seconds on the wire). */
let nextBackupAt: number | undefined;
beforeAll(async () => {
  moto = await startMoto();
  const sdk = new CloudHSMV2Client({ region: REGION, endpoint: moto.endpoint });
  const create = async () => (await sdk.send(new CreateClusterCommand({ HsmType: 'hsm2m.medium', SubnetIds: ['subnet-0123456789abcdef0'] }))).Cluster!.ClusterId!;
  activeCluster = await create();
  bareCluster = await create();
  degradedCluster = await create();
  sdk.destroy();
  proxy = await new HttpFaultProxy(moto.port).start();
  proxy.rewrite = (target, body) => {
    if (target.endsWith('.DescribeBackups') && nextBackupAt !== undefined) {
      // the cluster's next automatic backup, taken after a key was made (moto backs a cluster up once, at creation)
      const answer = JSON.parse(body) as { Backups?: Array<{ CreateTimestamp?: number }> };
      for (const backup of answer.Backups ?? []) backup.CreateTimestamp = nextBackupAt / 1000;
      return JSON.stringify(answer);
    }
    if (!target.endsWith('.DescribeClusters')) return body;
    const answer = JSON.parse(body) as { Clusters?: Array<{ ClusterId: string; State: string; Hsms: unknown[] }> };
    for (const cluster of answer.Clusters ?? []) {
      if (cluster.ClusterId === activeCluster) {
        cluster.Hsms = [
          { HsmId: 'hsm-aaaaaaaaaaa', ClusterId: activeCluster, AvailabilityZone: `${REGION}a`, SubnetId: 'subnet-a', EniIp: '10.0.0.10', State: 'ACTIVE' },
          { HsmId: 'hsm-bbbbbbbbbbb', ClusterId: activeCluster, AvailabilityZone: `${REGION}b`, SubnetId: 'subnet-b', EniIp: '10.0.1.10', State: 'DEGRADED' },
        ];
      }
      if (cluster.ClusterId === degradedCluster) cluster.State = 'UNINITIALIZED';
    }
    return JSON.stringify(answer);
  };
}, 120_000);
afterAll(async () => {
  await proxy?.stop();
  await moto?.stop();
});

function backendFor(clusterId: () => string, endpoint: () => string, extra: Partial<AwsCloudHsmOptionsInput> = {}) {
  return new AwsCloudHsmBackend(
    parseAwsCloudHsmOptions({ region: REGION, clusterId: clusterId(), endpoint: endpoint(), pkcs11: { libraryPath: SOFTHSM_LIB, sessionPool: { minSessions: 1, maxSessions: 4 } }, ...extra }),
    { pin: PIN },
  );
}

runConformanceSuite({
  name: 'aws-cloudhsm on moto cloudhsmv2 + SoftHSM (cloudhsm profile)',
  createBackend: () => backendFor(() => activeCluster, () => proxy.endpoint),
  concurrency: 64,
});

describe('aws-cloudhsm backup (provider-backup): the cluster backups are referenced, not re-implemented', () => {
  it('exportKey names the READY cluster backups taken after the key was made, refuses while there is none, and importKey refuses', async () => {
    const backend = backendFor(() => activeCluster, () => proxy.endpoint);
    await backend.initialize();
    try {
      expect(backend.backup.method).toBe('provider-backup');
      // the cluster's backup was taken before the key existed (moto's own timestamp is not in the API's
      // epoch-seconds form, so the SDK cannot read it: the proxy gives the backup a time the API would)
      nextBackupAt = Math.floor(Date.now() / 1000) * 1000 - 60_000;
      const key = await backend.generateKeyPair({ id: 'cloudhsm-backup', algorithm: 'ECDSA_P256', backup: true });
      expect((await backend.listBackups())[0]!.createdAt?.getTime()).toBe(nextBackupAt);
      const early = await expectHsmError(backend.backup.exportKey(key), 'KeyUsageNotAllowed');
      expect(early.details.reason).toBe('no-cluster-backup-yet');
      expect(early.message).toContain('in no READY backup');
      nextBackupAt = Math.floor(Date.now() / 1000) * 1000 + 60_000;
      const out = await backend.backup.exportKey(key);
      const [backup] = await backend.listBackups();
      expect(out).toMatchObject({ method: 'provider-backup', id: 'cloudhsm-backup', algorithm: 'ECDSA_P256' });
      expect(out.blob).toBeUndefined();
      expect(Buffer.from(out.publicKeySpki).equals(Buffer.from((await backend.getPublicKey(key)).spki))).toBe(true);
      expect(out.parameters).toMatchObject({ provider: 'aws-cloudhsm', region: REGION, clusterId: activeCluster, keyRef: key.ref, backupIds: backup!.backupId, latestBackupId: backup!.backupId });
      expect(out.parameters.latestBackupAt).toBe(new Date(nextBackupAt).toISOString());
      const refused = await expectHsmError(backend.backup.importKey(out), 'InvalidArgument');
      expect(refused.message).toContain('restoring a cluster backup');
      await backend.destroyKey(key);
    } finally {
      nextBackupAt = undefined;
      await backend.close();
    }
  });
});

describe('aws-cloudhsm cluster checks', () => {
  it('refuses a cluster AWS does not know: InitializationFailed, reason ClusterNotFound, naming the id', async () => {
    const backend = backendFor(() => 'cluster-doesnotexist', () => moto.endpoint);
    const error = await expectHsmError(backend.initialize(), 'InitializationFailed');
    expect(error.details.reason).toBe('ClusterNotFound');
    expect(error.message).toContain('cluster-doesnotexist');
    await backend.close();
  });

  it('refuses a cluster that is not ACTIVE: DeviceUnavailable, reason ClusterNotActive, naming id and state', async () => {
    const backend = backendFor(() => degradedCluster, () => proxy.endpoint);
    const error = await expectHsmError(backend.initialize(), 'DeviceUnavailable');
    expect(error.details.reason).toBe('ClusterNotActive');
    expect(error.details.state).toBe('UNINITIALIZED');
    expect(error.message).toContain(degradedCluster);
    expect(error.message).toContain('UNINITIALIZED');
    await expectHsmError(backend.sign('any', randomBytes(8)), 'NotInitialized');
    await backend.close();
  });

  it('is unhealthy when the cluster has no ACTIVE HSM, even though the PKCS#11 side answers', async () => {
    // moto's own answer: an ACTIVE cluster without HSMs
    const backend = backendFor(() => bareCluster, () => moto.endpoint);
    await backend.initialize();
    try {
      const health = await backend.healthCheck();
      expect(health.healthy).toBe(false);
      expect(health.message).toMatch(/no ACTIVE HSM/);
      expect(health.details?.pkcs11Healthy).toBe(true);
      expect(health.details?.hsmCount).toBe(0);
    } finally {
      await backend.close();
    }
  });

  it('reports the cluster view (state, HSMs, zones) in info() and healthCheck(), and lists the cluster backups', async () => {
    const backend = backendFor(() => activeCluster, () => proxy.endpoint);
    await backend.initialize();
    try {
      const info = await backend.info();
      expect(info.backend).toBe('aws-cloudhsm');
      expect(info.details).toMatchObject({ clusterId: activeCluster, clusterState: 'ACTIVE', hsmCount: 2, activeHsms: 1, hsmType: 'hsm2m.medium' });
      expect(info.details?.['hsm.hsm-aaaaaaaaaaa']).toBe(`ACTIVE in ${REGION}a`);
      expect(info.details?.['hsm.hsm-bbbbbbbbbbb']).toBe(`DEGRADED in ${REGION}b`);
      const health = await backend.healthCheck();
      expect(health.healthy).toBe(true);
      expect(health.details?.activeHsms).toBe(1);
      const backups = await backend.listBackups();
      expect(backups.length).toBe(1);
      expect(backups[0]!.state).toBe('READY');
      // every key operation went through the PKCS#11 backend: the handle is ours, the ref a PKCS#11 URI
      const key = await backend.generateKeyPair({ id: 'cloudhsm-key', algorithm: 'ECDSA_P256' });
      expect(key.instance).toBe(`aws-cloudhsm:${REGION}:${activeCluster}`);
      expect(key.ref).toMatch(/^pkcs11:/);
      const fips = await backend.fipsStatus();
      expect(fips.standard).toBe('unknown');
      expect(fips.findings?.join(' ')).toMatch(/cloudhsm/);
      await backend.destroyKey(key);
    } finally {
      await backend.close();
    }
  });

  it('an unreachable control plane fails initialize() with a retryable DeviceUnavailable within the retry budget', async () => {
    const closed = await new HttpFaultProxy(moto.port).start();
    const endpoint = closed.endpoint;
    await closed.stop();
    const backend = backendFor(() => activeCluster, () => endpoint, { retry: { totalTimeMs: 1000 }, requestTimeoutMs: 500 });
    const started = Date.now();
    const error = await expectHsmError(backend.initialize(), 'DeviceUnavailable');
    expect(error.retryable).toBe(true);
    expect(Date.now() - started).toBeLessThan(1000 + 2000);
    await backend.close();
  });

  it('a throttled DescribeClusters is retried, then the cluster view is read', async () => {
    let throttled = 0;
    proxy.inject = (target) => (target.endsWith('.DescribeClusters') && throttled++ < 2 ? { status: 400, type: 'ThrottlingException', message: 'Rate exceeded' } : undefined);
    const backend = backendFor(() => activeCluster, () => proxy.endpoint, { retry: { totalTimeMs: 5000, baseDelayMs: 20 } });
    try {
      await backend.initialize();
      expect(throttled).toBeGreaterThanOrEqual(3);
      expect((await backend.info()).details?.clusterState).toBe('ACTIVE');
    } finally {
      proxy.inject = undefined;
      await backend.close();
    }
  });

  it('refuses a vendor other than cloudhsm in the pkcs11 section', () => {
    expect(() => parseAwsCloudHsmOptions({ region: REGION, clusterId: 'cluster-abc', pkcs11: { vendor: 'luna' } })).toThrow(/pkcs11\.vendor/);
  });
});

/** Sets the user PIN the CloudHSM profile expects (C_SetPIN through pkcs11js: the PIN never reaches argv). */
function setUserPin(oldPin: string, newPin: string): void {
  const { PKCS11 } = createRequire(import.meta.url)('pkcs11js') as typeof import('pkcs11js');
  const p11 = new PKCS11();
  p11.load(SOFTHSM_LIB);
  p11.C_Initialize({ flags: 0x2 });
  try {
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === token.label);
    if (slot === undefined) throw new Error(`token ${token.label} not found`);
    const session = p11.C_OpenSession(slot, 0x4 | 0x2);
    try {
      p11.C_Login(session, 1, oldPin);
      p11.C_SetPIN(session, oldPin, newPin);
      p11.C_Logout(session);
    } finally {
      p11.C_CloseSession(session);
    }
  } finally {
    p11.C_Finalize();
  }
}
