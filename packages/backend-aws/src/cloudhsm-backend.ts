import { CloudHSMV2Client, DescribeBackupsCommand, DescribeClustersCommand, type Backup, type Cluster } from '@aws-sdk/client-cloudhsm-v2';
import { Pkcs11Backend, parsePkcs11Options, type Pkcs11Options } from '@olocus/hsm-backend-pkcs11';
import {
  HsmError,
  assertSameInstance,
  isHsmError,
  type BackendContext,
  type BackendMetrics,
  type Capabilities,
  type ExportedKey,
  type FipsStatus,
  type HealthStatus,
  type HsmBackend,
  type HsmErrorCode,
  type HsmInfo,
  type HsmKeyHandle,
  type KeyBackupCapability,
  type KeyPage,
  type KeyRef,
  type KeySpec,
  type ListKeysOptions,
  type PublicKeyInfo,
  type SignOptions,
} from '@olocus/hsm-core';
import { abortAll, awsCall, type CallSettings, type HttpOptions } from './call.js';
import type { AwsCloudHsmOptions } from './cloudhsm-options.js';
import type { AwsErrorContext } from './errors.js';
import { Semaphore } from './semaphore.js';

/** What DescribeClusters says about the cluster, as info() and healthCheck() report it. */
export interface ClusterView {
  clusterId: string;
  state: string;
  stateMessage?: string;
  hsmType?: string;
  hsms: Array<{ hsmId: string; availabilityZone?: string; state?: string; eniIp?: string }>;
  activeHsms: number;
}

/** A cluster backup as DescribeBackups lists it (for the backup work that builds on this backend). */
export interface ClusterBackup {
  backupId: string;
  state?: string;
  createdAt?: Date;
  neverExpires?: boolean;
  arn?: string;
}

export interface AwsCloudHsmBackendInit {
  readSecret?: BackendContext['readSecret'];
  /** The PIN itself (tests); otherwise read from `pkcs11.pin` at initialize(). */
  pin?: string;
}

/**
 * AWS CloudHSM: the control plane (CloudHSM v2 API) says whether the cluster exists, is ACTIVE
 * and has HSMs; every key operation goes through @olocus/hsm-backend-pkcs11 with the `cloudhsm`
 * vendor profile, the only PKCS#11 implementation in the project.
 */
export class AwsCloudHsmBackend implements HsmBackend {
  readonly type = 'aws-cloudhsm';
  readonly instanceId: string;
  readonly pkcs11Options: Pkcs11Options;
  private readonly inner: Pkcs11Backend;
  private readonly client: CloudHSMV2Client;
  private readonly closing = new AbortController();
  private readonly settings: CallSettings;
  private state: 'new' | 'ready' | 'closed' = 'new';
  private lastView: ClusterView | undefined;

  /**
   * Backup (method `provider-backup`): CloudHSM backs up the whole cluster (DescribeBackups), and a
   * key is restored by restoring a cluster backup, not by this library. exportKey records which READY
   * backups hold the key (taken after the key was created) beside its reference and public key;
   * importKey refuses. See the README, "Backup".
   */
  readonly backup: KeyBackupCapability = {
    method: 'provider-backup',
    exportKey: (key, options) => this.exportBackupReference(key, options),
    importKey: async (exported) => {
      throw new HsmError(
        'InvalidArgument',
        `AWS CloudHSM keeps key ${String(exported?.id)} in its cluster backups (${String(exported?.parameters?.backupIds ?? 'see DescribeBackups')}); it is restored by restoring a cluster backup (CreateCluster with SourceBackupId, or RestoreBackup), which the library does not re-implement`,
        { details: { field: 'exported.method', provider: 'aws-cloudhsm' } },
      );
    },
  };

  constructor(
    readonly options: AwsCloudHsmOptions,
    init: AwsCloudHsmBackendInit = {},
  ) {
    this.instanceId = `aws-cloudhsm:${options.region}:${options.clusterId}`;
    // the profile's defaults: CloudHSM exposes one token per cluster, labelled hsm1
    const raw = { tokenLabel: 'hsm1', ...options.pkcs11, vendor: 'cloudhsm' } as Record<string, unknown>;
    if (raw.slotId !== undefined && options.pkcs11.tokenLabel === undefined) delete raw.tokenLabel;
    this.pkcs11Options = parsePkcs11Options(raw);
    this.inner = new Pkcs11Backend(this.pkcs11Options, {
      ...(init.readSecret ? { readSecret: init.readSecret } : {}),
      ...(init.pin !== undefined ? { pin: init.pin } : {}),
    });
    this.client = new CloudHSMV2Client({
      region: options.region,
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.profile ? { profile: options.profile } : {}),
      maxAttempts: 1,
    });
    this.settings = { semaphore: new Semaphore(4), retry: options.retry, requestTimeoutMs: options.requestTimeoutMs, closing: this.closing.signal, inflight: new Set() };
  }

  private call<T>(operation: string, send: (http: HttpOptions) => Promise<T>, fallback: HsmErrorCode): Promise<T> {
    const context: AwsErrorContext = { operation, service: 'AWS CloudHSM', fallback, subject: `cluster ${this.options.clusterId}`, ...(this.options.profile ? { profile: this.options.profile } : {}) };
    return awsCall(this.settings, context, send);
  }

  private ready(): void {
    if (this.state === 'closed') throw new HsmError('Closed', 'the aws-cloudhsm backend is closed');
    if (this.state !== 'ready') throw new HsmError('NotInitialized', 'call initialize() before using the aws-cloudhsm backend');
  }

  /** DescribeClusters for this cluster; ClusterNotFound when AWS does not know it. */
  async describeCluster(): Promise<ClusterView> {
    const answer = await this.call(
      'DescribeClusters',
      (http) => this.client.send(new DescribeClustersCommand({ Filters: { clusterIds: [this.options.clusterId] } }), http as never),
      'InitializationFailed',
    );
    const cluster: Cluster | undefined = answer.Clusters?.find((c) => c.ClusterId === this.options.clusterId);
    if (!cluster) {
      throw new HsmError('InitializationFailed', `AWS CloudHSM has no cluster ${this.options.clusterId} in ${this.options.region}; check backend.options.clusterId and region`, {
        details: { reason: 'ClusterNotFound', clusterId: this.options.clusterId, region: this.options.region },
      });
    }
    const hsms = (cluster.Hsms ?? []).map((h) => ({
      hsmId: h.HsmId ?? '',
      ...(h.AvailabilityZone ? { availabilityZone: h.AvailabilityZone } : {}),
      ...(h.State ? { state: h.State } : {}),
      ...(h.EniIp ? { eniIp: h.EniIp } : {}),
    }));
    const view: ClusterView = {
      clusterId: this.options.clusterId,
      state: cluster.State ?? 'UNKNOWN',
      ...(cluster.StateMessage ? { stateMessage: cluster.StateMessage } : {}),
      ...(cluster.HsmType ? { hsmType: cluster.HsmType } : {}),
      hsms,
      activeHsms: hsms.filter((h) => h.state === 'ACTIVE').length,
    };
    this.lastView = view;
    return view;
  }

  async initialize(): Promise<void> {
    if (this.state === 'closed') throw new HsmError('Closed', 'the aws-cloudhsm backend is closed');
    if (this.state === 'ready') return;
    const view = await this.describeCluster();
    if (view.state !== 'ACTIVE') {
      throw new HsmError(
        'DeviceUnavailable',
        `AWS CloudHSM cluster ${view.clusterId} is ${view.state}, not ACTIVE${view.stateMessage ? ` (${view.stateMessage})` : ''}; keys can be used once the cluster is ACTIVE`,
        { retryable: true, details: { reason: 'ClusterNotActive', clusterId: view.clusterId, state: view.state } },
      );
    }
    await this.inner.initialize();
    this.state = 'ready';
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    abortAll(this.settings, this.closing);
    this.client.destroy();
    await this.inner.close();
  }

  /** Cluster backups, newest first (DescribeBackups filtered by this cluster). */
  async listBackups(): Promise<ClusterBackup[]> {
    this.ready();
    const out: ClusterBackup[] = [];
    let token: string | undefined;
    do {
      const page = await this.call(
        'DescribeBackups',
        (http) =>
          this.client.send(new DescribeBackupsCommand({ Filters: { clusterIds: [this.options.clusterId] }, SortAscending: false, ...(token ? { NextToken: token } : {}) }), http as never),
        'DeviceUnavailable',
      );
      for (const b of (page.Backups ?? []) as Backup[]) {
        if (!b.BackupId) continue;
        out.push({
          backupId: b.BackupId,
          ...(b.BackupState ? { state: b.BackupState } : {}),
          ...(b.CreateTimestamp ? { createdAt: new Date(b.CreateTimestamp) } : {}),
          ...(b.NeverExpires !== undefined ? { neverExpires: b.NeverExpires } : {}),
          ...((b as { BackupArn?: string }).BackupArn ? { arn: (b as { BackupArn?: string }).BackupArn! } : {}),
        });
      }
      token = page.NextToken;
    } while (token);
    return out;
  }

  private async exportBackupReference(key: KeyRef, options: { signal?: AbortSignal } = {}): Promise<ExportedKey> {
    this.ready();
    if (options.signal?.aborted) throw new HsmError('Timeout', 'the operation was aborted by its caller', { cause: options.signal.reason, retryable: true });
    const handle = await this.getKey(key);
    const { spki } = await this.getPublicKey(handle);
    const ready = (await this.listBackups()).filter((b) => b.state === 'READY');
    // a backup taken before the key existed does not hold it; without a creation time every READY backup is listed
    const holding = handle.createdAt ? ready.filter((b) => b.createdAt !== undefined && b.createdAt.getTime() >= handle.createdAt!.getTime()) : ready;
    if (holding.length === 0) {
      throw new HsmError(
        'KeyUsageNotAllowed',
        `key ${handle.id} is in no READY backup of cluster ${this.options.clusterId} yet${handle.createdAt ? ` (created ${handle.createdAt.toISOString()}, after the newest backup)` : ''}: CloudHSM backs up a cluster at least once a day, or on demand; back up again after the next cluster backup`,
        { details: { keyId: handle.id, clusterId: this.options.clusterId, reason: 'no-cluster-backup-yet' } },
      );
    }
    return {
      method: 'provider-backup',
      id: handle.id,
      algorithm: handle.algorithm,
      usages: [...handle.usages],
      publicKeySpki: new Uint8Array(spki),
      parameters: {
        provider: 'aws-cloudhsm',
        region: this.options.region,
        clusterId: this.options.clusterId,
        keyRef: handle.ref,
        ...(handle.metadata.ckaId ? { ckaId: handle.metadata.ckaId } : {}),
        ...(handle.metadata.label ? { label: handle.metadata.label } : {}),
        // newest first, comma-separated: the cluster backups that hold the key
        backupIds: holding.map((b) => b.backupId).join(','),
        latestBackupId: holding[0]!.backupId,
        ...(holding[0]!.createdAt ? { latestBackupAt: holding[0]!.createdAt.toISOString() } : {}),
        restore: 'restore a listed cluster backup (CreateCluster with SourceBackupId); the key comes back with the cluster, under the same CKA_ID and label',
      },
    };
  }

  // --- handles: ours outside, the PKCS#11 backend's inside ------------------------------------

  private outward(handle: HsmKeyHandle): HsmKeyHandle {
    return { ...handle, backend: this.type, instance: this.instanceId };
  }

  private inward(key: KeyRef): KeyRef {
    assertSameInstance(key, this.instanceId);
    return typeof key === 'string' ? key : { ...key, backend: this.inner.type, instance: this.inner.instanceId };
  }

  async info(): Promise<HsmInfo> {
    this.ready();
    const inner = await this.inner.info();
    const view = await this.describeCluster().catch(() => this.lastView);
    return {
      ...inner,
      backend: this.type,
      description: `AWS CloudHSM cluster ${this.options.clusterId} in ${this.options.region} (${inner.description})`,
      details: {
        ...(inner.details ?? {}),
        region: this.options.region,
        clusterId: this.options.clusterId,
        ...(view ? clusterDetails(view) : { clusterState: 'unknown' }),
      },
    };
  }

  async capabilities(): Promise<Capabilities> {
    this.ready();
    return this.inner.capabilities();
  }

  async fipsStatus(): Promise<FipsStatus> {
    this.ready();
    return this.inner.fipsStatus();
  }

  async healthCheck(): Promise<HealthStatus> {
    this.ready();
    const started = performance.now();
    const [cluster, token] = await Promise.all([
      this.describeCluster().then(
        (view) => ({ view }),
        (error: unknown) => ({ error: isHsmError(error) ? error.message : 'DescribeClusters failed' }),
      ),
      this.inner.healthCheck(),
    ]);
    const details: Record<string, string | number | boolean> = { ...(token.details ?? {}), pkcs11Healthy: token.healthy };
    if ('error' in cluster) {
      return { healthy: false, latencyMs: performance.now() - started, message: `AWS CloudHSM cluster ${this.options.clusterId} could not be described: ${cluster.error}`, details };
    }
    Object.assign(details, clusterDetails(cluster.view));
    const problems: string[] = [];
    if (cluster.view.state !== 'ACTIVE') problems.push(`cluster is ${cluster.view.state}`);
    // the PKCS#11 client may still answer from a session while the cluster has lost every HSM
    if (cluster.view.activeHsms === 0) problems.push(`no ACTIVE HSM (${cluster.view.hsms.length} HSMs in the cluster)`);
    if (!token.healthy) problems.push(`PKCS#11: ${token.message}`);
    return {
      healthy: problems.length === 0,
      latencyMs: performance.now() - started,
      message: problems.length === 0 ? `cluster ${this.options.clusterId} ACTIVE with ${cluster.view.activeHsms} ACTIVE HSM(s); ${token.message}` : `cluster ${this.options.clusterId}: ${problems.join('; ')}`,
      details,
    };
  }

  metrics(): BackendMetrics {
    return this.inner.metrics();
  }

  async generateKeyPair(spec: KeySpec): Promise<HsmKeyHandle> {
    this.ready();
    return this.outward(await this.inner.generateKeyPair(spec));
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    this.ready();
    return this.outward(await this.inner.getKey(this.inward(key)));
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    this.ready();
    return this.inner.getPublicKey(this.inward(key));
  }

  async sign(key: KeyRef, data: Uint8Array, options?: SignOptions): Promise<Uint8Array> {
    this.ready();
    return this.inner.sign(this.inward(key), data, options);
  }

  async signStream(key: KeyRef, chunks: AsyncIterable<Uint8Array>, options?: SignOptions): Promise<Uint8Array> {
    this.ready();
    return this.inner.signStream(this.inward(key), chunks, options);
  }

  async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options?: SignOptions): Promise<boolean> {
    this.ready();
    return this.inner.verify(this.inward(key), data, signature, options);
  }

  async listKeys(options?: ListKeysOptions): Promise<KeyPage> {
    this.ready();
    const page = await this.inner.listKeys(options);
    return { ...page, keys: page.keys.map((k) => this.outward(k)) };
  }

  async destroyKey(key: KeyRef): Promise<void> {
    this.ready();
    await this.inner.destroyKey(this.inward(key));
  }
}

function clusterDetails(view: ClusterView): Record<string, string | number> {
  const details: Record<string, string | number> = {
    clusterState: view.state,
    hsmCount: view.hsms.length,
    activeHsms: view.activeHsms,
    ...(view.hsmType ? { hsmType: view.hsmType } : {}),
  };
  // one flat entry per HSM: info().details holds scalars only
  for (const hsm of view.hsms) details[`hsm.${hsm.hsmId}`] = `${hsm.state ?? 'UNKNOWN'} in ${hsm.availabilityZone ?? 'unknown AZ'}`;
  return details;
}
