import { createHash } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DeleteAliasCommand,
  DescribeKeyCommand,
  GetPublicKeyCommand,
  KMSClient,
  ListAliasesCommand,
  ListKeysCommand,
  ListResourceTagsCommand,
  ScheduleKeyDeletionCommand,
  SignCommand,
  type SignCommandOutput,
  type AliasListEntry,
  type KeyMetadata,
  type KeySpec as AwsKeySpec,
  type SigningAlgorithmSpec,
  type Tag,
} from '@aws-sdk/client-kms';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import {
  HsmError,
  algorithmInfo,
  assertAlgorithmSupported,
  assertMessageSize,
  assertSameInstance,
  assertUsable,
  createNameCodec,
  describeValue,
  ecdsaComponentBytes,
  ecdsaDerToRaw,
  isHsmError,
  nodeHashName,
  normalizeKeySpec,
  normalizeListOptions,
  throwIfAborted,
  verifyLocally,
  type BackendMetrics,
  type Capabilities,
  type ExportedKey,
  type FipsStatus,
  type HealthStatus,
  type HsmBackend,
  type HsmErrorCode,
  type HsmInfo,
  type HsmKeyHandle,
  type KeyAlgorithm,
  type KeyBackupCapability,
  type KeyPage,
  type KeyRef,
  type KeySpec,
  type KeyState,
  type KeyUsage,
  type ListKeysOptions,
  type NameCodec,
  type PublicKeyInfo,
  type SignOptions,
} from '@olocus/hsm-core';
import { abortAll, awsCall, type CallOptions, type CallSettings, type HttpOptions } from './call.js';
import type { AwsErrorContext } from './errors.js';
import { KMS_ALGORITHMS, type AwsKmsOptions } from './kms-options.js';
import { Semaphore } from './semaphore.js';

/** Tags this library writes on the keys it creates (non-secret; visible in the console). */
export const TAG_ID = 'olocus:id';
export const TAG_ALGORITHM = 'olocus:algorithm';
export const TAG_EXPIRES = 'olocus:expires-at';
export const TAG_LABEL_PREFIX = 'olocus:label:';

/** Ed25519 is signed as a RAW message, which AWS KMS caps at 4,096 bytes. */
export const KMS_RAW_MESSAGE_LIMIT = 4096;

const KEY_SPEC: Record<KeyAlgorithm, AwsKeySpec> = {
  Ed25519: 'ECC_NIST_EDWARDS25519',
  ECDSA_P256: 'ECC_NIST_P256',
  ECDSA_P384: 'ECC_NIST_P384',
  ECDSA_P521: 'ECC_NIST_P521',
  RSA_2048: 'RSA_2048',
  RSA_3072: 'RSA_3072',
  RSA_4096: 'RSA_4096',
  RSA_PSS_2048: 'RSA_2048',
  RSA_PSS_3072: 'RSA_3072',
  RSA_PSS_4096: 'RSA_4096',
};

const SIGNING_ALGORITHM: Record<KeyAlgorithm, SigningAlgorithmSpec> = {
  Ed25519: 'ED25519_SHA_512',
  ECDSA_P256: 'ECDSA_SHA_256',
  ECDSA_P384: 'ECDSA_SHA_384',
  ECDSA_P521: 'ECDSA_SHA_512',
  RSA_2048: 'RSASSA_PKCS1_V1_5_SHA_256',
  RSA_3072: 'RSASSA_PKCS1_V1_5_SHA_256',
  RSA_4096: 'RSASSA_PKCS1_V1_5_SHA_256',
  RSA_PSS_2048: 'RSASSA_PSS_SHA_256',
  RSA_PSS_3072: 'RSASSA_PSS_SHA_256',
  RSA_PSS_4096: 'RSASSA_PSS_SHA_256',
};

/** The algorithm a key made outside the library is taken to have: RSA keys sign PKCS#1 v1.5 unless tagged PSS. */
function algorithmOfKeySpec(spec: string | undefined): KeyAlgorithm | undefined {
  switch (spec) {
    case 'ECC_NIST_EDWARDS25519':
      return 'Ed25519';
    case 'ECC_NIST_P256':
      return 'ECDSA_P256';
    case 'ECC_NIST_P384':
      return 'ECDSA_P384';
    case 'ECC_NIST_P521':
      return 'ECDSA_P521';
    case 'RSA_2048':
    case 'RSA_3072':
    case 'RSA_4096':
      return spec;
    default:
      return undefined;
  }
}

function stateOf(metadata: KeyMetadata): KeyState {
  switch (metadata.KeyState) {
    case 'Enabled':
      return 'enabled';
    case 'PendingDeletion':
    case 'PendingReplicaDeletion':
      return 'pending-deletion';
    default:
      // Disabled, Unavailable, PendingImport, Creating, Updating: none of them signs now
      return 'disabled';
  }
}

type Orphan = KeyMetadata & { tags: Record<string, string> };

interface ResolvedKey {
  handle: HsmKeyHandle;
  arn: string;
  resolvedAt: number;
}

const KEY_ID = /^(mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

export interface AwsKmsBackendInit {
  /** Replaces the SDK client (tests). The backend still owns and destroys it. */
  client?: KMSClient;
}

/**
 * AWS KMS: keys are KMS asymmetric SIGN_VERIFY keys named by an alias `alias/<prefix><id>` and
 * tagged with the Olocus id and algorithm. Signing hashes locally and sends the digest
 * (ECDSA, RSA) or the raw message (Ed25519); verification is local with the public key.
 */
/** What a reference-only backup of a KMS key relies on (recorded in `ExportedKey.parameters.durability`). */
export const KMS_DURABILITY =
  "the private key exists only inside AWS KMS (asymmetric KMS keys cannot be exported): the backup holds its reference and public key, and the key relies on the provider's durability; it is lost if the key is deleted (after its deletion waiting period) or its account or region becomes unavailable";

export class AwsKmsBackend implements HsmBackend {
  readonly type = 'aws-kms';
  private identity: string;
  private readonly client: KMSClient;
  private readonly agents: { http: HttpAgent; https: HttpsAgent };
  private readonly semaphore: Semaphore;
  private readonly closing = new AbortController();
  private readonly settings: CallSettings;
  private readonly codec: NameCodec;
  private readonly aliasPrefix: string;
  private readonly algorithms: readonly KeyAlgorithm[];
  private readonly keys = new Map<string, ResolvedKey>();
  private readonly publicKeys = new Map<string, Uint8Array>();
  private orphanScan: Promise<Map<string, Orphan[]>> | undefined;
  private state: 'new' | 'ready' | 'closed' = 'new';
  private account: string | undefined;
  private signatures = 0;

  /**
   * Backup (method `reference-only`): an asymmetric KMS private key never leaves AWS, so a backup
   * records where the key is and its public key, and the key relies on KMS's own durability.
   * importKey refuses: there is nothing to put back (see the README, "Backup").
   */
  readonly backup: KeyBackupCapability = {
    method: 'reference-only',
    exportKey: (key, options) => this.exportReference(key, options),
    importKey: async (exported) => {
      throw new HsmError(
        'InvalidArgument',
        `AWS KMS keeps the private key of ${String(exported?.id)}: asymmetric KMS keys cannot be exported or imported back, so there is nothing to restore; the backup records its reference (${String(exported?.parameters?.keyArn ?? 'keyArn')}), usable while the key exists in KMS`,
        { details: { field: 'exported.method', provider: 'aws-kms' } },
      );
    },
  };

  constructor(
    readonly options: AwsKmsOptions,
    init: AwsKmsBackendInit = {},
  ) {
    this.aliasPrefix = `alias/${options.aliasPrefix}`;
    // AWS alias names: `alias/` + [A-Za-z0-9/_-], 256 characters in all
    this.codec = createNameCodec({ allowed: /[A-Za-z0-9/_-]/, escape: '_', maxLength: 256, prefix: this.aliasPrefix });
    this.algorithms = options.algorithms ?? KMS_ALGORITHMS;
    this.account = options.accountId;
    this.identity = this.identityFor(options.accountId);
    this.semaphore = new Semaphore(options.maxConcurrency);
    // the SDK's default agent caps sockets at 50, which would cap maxConcurrency
    this.agents = {
      http: new HttpAgent({ keepAlive: true, maxSockets: options.maxConcurrency }),
      https: new HttpsAgent({ keepAlive: true, maxSockets: options.maxConcurrency }),
    };
    this.client =
      init.client ??
      new KMSClient({
        region: options.region,
        ...(options.endpoint ? { endpoint: options.endpoint } : {}),
        ...(options.profile ? { profile: options.profile } : {}),
        maxAttempts: 1,
        requestHandler: new NodeHttpHandler({
          httpAgent: this.agents.http,
          httpsAgent: this.agents.https,
          connectionTimeout: options.requestTimeoutMs,
          requestTimeout: options.requestTimeoutMs,
          // without it the handler only logs a warning and the request hangs on
          throwOnRequestTimeout: true,
        }),
      });
    // a client passed in (tests) has its own handler: its requests keep a controller and timer each
    this.settings = { semaphore: this.semaphore, retry: options.retry, requestTimeoutMs: options.requestTimeoutMs, closing: this.closing.signal, inflight: new Set(), socketBounded: init.client === undefined };
  }

  get instanceId(): string {
    return this.identity;
  }

  private identityFor(account: string | undefined): string {
    const where = account ?? (this.options.endpoint ? new URL(this.options.endpoint).host : 'default-account');
    return `aws-kms:${this.options.region}:${where}`;
  }

  private call<T>(operation: string, subject: string | undefined, send: (http: HttpOptions) => Promise<T>, fallback: HsmErrorCode = 'Internal', options: CallOptions = {}): Promise<T> {
    const context: AwsErrorContext = { operation, service: 'AWS KMS', fallback, ...(subject ? { subject } : {}), ...(this.options.profile ? { profile: this.options.profile } : {}) };
    return awsCall(this.settings, context, send, options);
  }

  private ready(): void {
    if (this.state === 'closed') throw new HsmError('Closed', 'the aws-kms backend is closed');
    if (this.state !== 'ready') throw new HsmError('NotInitialized', 'call initialize() before using the aws-kms backend');
  }

  async initialize(): Promise<void> {
    if (this.state === 'closed') throw new HsmError('Closed', 'the aws-kms backend is closed');
    if (this.state === 'ready') return;
    // One request proves the endpoint, the credentials and the permission to list, and gives the account.
    const aliases = await this.call('ListAliases', undefined, (http) => this.client.send(new ListAliasesCommand({ Limit: 100 }), http), 'InitializationFailed');
    if (!this.account) {
      const arn = aliases.Aliases?.find((a) => a.AliasArn)?.AliasArn;
      const account = arn?.split(':')[4];
      if (account) this.account = account;
      this.identity = this.identityFor(this.account);
    }
    this.state = 'ready';
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    abortAll(this.settings, this.closing);
    this.client.destroy();
    this.agents.http.destroy();
    this.agents.https.destroy();
    this.keys.clear();
  }

  async info(): Promise<HsmInfo> {
    this.ready();
    return {
      backend: this.type,
      description: `AWS KMS in ${this.options.region}${this.account ? ` (account ${this.account})` : ''}${this.options.endpoint ? ` at ${this.options.endpoint}` : ''}`,
      manufacturer: 'Amazon Web Services',
      model: 'AWS KMS HSM (provider claim)',
      details: {
        region: this.options.region,
        ...(this.account ? { account: this.account } : {}),
        ...(this.options.endpoint ? { endpoint: this.options.endpoint } : {}),
        aliasPrefix: this.aliasPrefix,
        deletionWindowDays: this.options.deletionWindowDays,
        maxConcurrency: this.options.maxConcurrency,
      },
    };
  }

  async capabilities(): Promise<Capabilities> {
    this.ready();
    return {
      algorithms: [...this.algorithms],
      persistentKeys: true,
      hardwareBacked: true,
      remoteVerify: false,
      maxConcurrency: this.options.maxConcurrency,
      ...(this.algorithms.includes('Ed25519') ? { maxMessageBytes: { Ed25519: KMS_RAW_MESSAGE_LIMIT } } : {}),
    };
  }

  async fipsStatus(): Promise<FipsStatus> {
    this.ready();
    const china = this.options.region.startsWith('cn-');
    if (china) {
      return {
        standard: 'none',
        level: 0,
        approvedMode: false,
        evidence: 'provider-claim',
        notes: 'AWS documents that the KMS HSMs in the China regions are not FIPS 140 validated (they use OSCCA-certified HSMs).',
      };
    }
    return {
      standard: 'FIPS 140-3',
      level: 3,
      approvedMode: true,
      certificateStatus: 'unknown',
      evidence: 'provider-claim',
      notes:
        'AWS documents that AWS KMS keys are generated and used only inside HSMs validated under FIPS 140-3 Security Level 3 (the AWS KMS HSM module). This is the provider\'s claim: the client cannot inspect the module, its certificate or its mode.',
    };
  }

  async healthCheck(): Promise<HealthStatus> {
    this.ready();
    const started = performance.now();
    try {
      await this.call('ListKeys', undefined, (http) => this.client.send(new ListKeysCommand({ Limit: 1 }), http), 'DeviceUnavailable');
      return { healthy: true, latencyMs: performance.now() - started, message: `AWS KMS in ${this.options.region} answers`, details: { region: this.options.region } };
    } catch (error) {
      const code = isHsmError(error) ? error.code : 'Internal';
      return {
        healthy: false,
        latencyMs: performance.now() - started,
        message: isHsmError(error) ? error.message : 'AWS KMS health check failed',
        details: { region: this.options.region, code },
      };
    }
  }

  metrics(): BackendMetrics {
    return { pool: { size: this.semaphore.inUse, inUse: this.semaphore.inUse, waiting: this.semaphore.waiting, max: this.semaphore.max } };
  }

  /** Signatures made by this instance (benchmarks). */
  get signatureCount(): number {
    return this.signatures;
  }

  private aliasFor(id: string): string {
    return this.codec.encode(id);
  }

  // ---------------------------------------------------------------------------------------------
  // Resolution

  /** What AWS is asked for a key reference: an alias name or ARN, a key id or ARN, or the alias of an Olocus id. */
  private awsKeyIdFor(key: string): string {
    if (key.startsWith('arn:') || key.startsWith('alias/') || KEY_ID.test(key)) return key;
    try {
      return this.aliasFor(key);
    } catch (error) {
      throw new HsmError('KeyNotFound', `no key ${describeValue(key)} in AWS KMS: it is neither an Olocus key id, an alias, a key id nor an ARN`, {
        cause: error,
        details: { keyId: key.slice(0, 200) },
      });
    }
  }

  private async resolve(key: KeyRef, options: { fresh?: boolean } = {}): Promise<ResolvedKey> {
    this.ready();
    assertSameInstance(key, this.instanceId);
    // a handle is resolved by its ref (the key ARN) alone
    const wanted = typeof key === 'string' ? key : key.ref;
    if (typeof wanted !== 'string' || wanted.length === 0 || wanted.length > 2048) {
      throw new HsmError('InvalidArgument', 'key must be a key id, alias, key id or ARN, or a handle returned by the backend', { details: { field: 'key' } });
    }
    const cached = this.keys.get(wanted);
    if (!options.fresh && cached && Date.now() - cached.resolvedAt < this.options.keyCacheTtlMs) return cached;
    const awsId = this.awsKeyIdFor(wanted);
    const described = await this.call('DescribeKey', wanted, (http) => this.client.send(new DescribeKeyCommand({ KeyId: awsId }), http), 'KeyNotFound');
    const metadata = described.KeyMetadata;
    if (!metadata?.Arn || !metadata.KeyId) throw new HsmError('Internal', `AWS KMS DescribeKey for ${wanted} returned no key metadata`);
    const tags = await this.tagsOf(metadata.KeyId, wanted);
    const aliasId = awsId.startsWith('alias/') ? this.codec.decode(awsId) : undefined;
    const id = aliasId ?? (typeof key === 'string' ? (awsId === wanted && !wanted.startsWith('alias/') ? (tags[TAG_ID] ?? metadata.Arn) : wanted) : (tags[TAG_ID] ?? metadata.Arn));
    const handle = this.handleOf(id, metadata, tags);
    const resolved = { handle, arn: metadata.Arn, resolvedAt: Date.now() };
    this.keys.set(wanted, resolved);
    return resolved;
  }

  private async tagsOf(keyId: string, subject: string): Promise<Record<string, string>> {
    const tags: Record<string, string> = {};
    let marker: string | undefined;
    do {
      const page = await this.call('ListResourceTags', subject, (http) => this.client.send(new ListResourceTagsCommand({ KeyId: keyId, ...(marker ? { Marker: marker } : {}) }), http), 'KeyNotFound');
      for (const tag of page.Tags ?? []) if (tag.TagKey !== undefined && tag.TagValue !== undefined) tags[tag.TagKey] = tag.TagValue;
      marker = page.Truncated ? page.NextMarker : undefined;
    } while (marker);
    return tags;
  }

  private handleOf(id: string, metadata: KeyMetadata, tags: Record<string, string>): HsmKeyHandle {
    const spec = metadata.KeySpec ?? metadata.CustomerMasterKeySpec;
    if (metadata.KeyUsage !== 'SIGN_VERIFY') {
      throw new HsmError('UnsupportedAlgorithm', `AWS KMS key ${metadata.Arn} has KeyUsage ${metadata.KeyUsage ?? 'unknown'}; only SIGN_VERIFY keys sign`, { details: { keyId: id } });
    }
    const base = algorithmOfKeySpec(spec);
    if (!base) throw new HsmError('UnsupportedAlgorithm', `AWS KMS key ${metadata.Arn} has key spec ${spec ?? 'unknown'}, which the library does not sign with`, { details: { keyId: id } });
    const tagged = tags[TAG_ALGORITHM] as KeyAlgorithm | undefined;
    // a tag may only choose the padding of the key's own size, never another key type
    const algorithm = tagged && KEY_SPEC[tagged] === spec ? tagged : base;
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(tags)) if (k.startsWith(TAG_LABEL_PREFIX)) labels[k.slice(TAG_LABEL_PREFIX.length)] = v;
    const expires = tags[TAG_EXPIRES] ? new Date(tags[TAG_EXPIRES]) : undefined;
    const usages: KeyUsage[] = ['sign', 'verify'];
    return {
      id,
      ref: metadata.Arn!,
      algorithm,
      usages,
      ...(metadata.CreationDate ? { createdAt: new Date(metadata.CreationDate) } : {}),
      ...(expires && !Number.isNaN(expires.getTime()) ? { expiresAt: expires } : {}),
      backend: this.type,
      instance: this.instanceId,
      ...(stateOf(metadata) !== 'enabled' ? { state: stateOf(metadata) } : {}),
      ...(Object.keys(labels).length > 0 ? { labels } : {}),
      metadata: {
        keyId: metadata.KeyId!,
        keySpec: spec ?? '',
        keyState: metadata.KeyState ?? '',
        managedByOlocus: String(tags[TAG_ID] !== undefined),
        ...(metadata.DeletionDate ? { deletionDate: new Date(metadata.DeletionDate).toISOString() } : {}),
      },
    };
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    const resolved = await this.resolve(key, { fresh: true });
    return { ...resolved.handle };
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    const resolved = await this.resolve(key, { fresh: true });
    if (resolved.handle.state === 'pending-deletion' || resolved.handle.state === 'destroyed') assertUsable(resolved.handle, 'verify');
    return { algorithm: resolved.handle.algorithm, spki: await this.spkiOf(resolved) };
  }

  private async exportReference(key: KeyRef, options: { signal?: AbortSignal } = {}): Promise<ExportedKey> {
    throwIfAborted(options.signal);
    const resolved = await this.resolve(key, { fresh: true });
    const { handle } = resolved;
    return {
      method: 'reference-only',
      id: handle.id,
      algorithm: handle.algorithm,
      usages: [...handle.usages],
      publicKeySpki: new Uint8Array(await this.spkiOf(resolved)),
      parameters: {
        provider: 'aws-kms',
        region: this.options.region,
        ...(this.account ? { account: this.account } : {}),
        keyArn: resolved.arn,
        keyId: handle.metadata.keyId ?? '',
        keySpec: handle.metadata.keySpec ?? '',
        keyState: handle.metadata.keyState ?? '',
        ...(handle.metadata.deletionDate ? { deletionDate: handle.metadata.deletionDate } : {}),
        durability: KMS_DURABILITY,
      },
    };
  }

  /** The public key of an ARN never changes: fetched once. */
  private async spkiOf(resolved: ResolvedKey): Promise<Uint8Array> {
    const cached = this.publicKeys.get(resolved.arn);
    if (cached) return cached;
    const answer = await this.call('GetPublicKey', resolved.handle.id, (http) => this.client.send(new GetPublicKeyCommand({ KeyId: resolved.arn }), http), 'KeyNotFound');
    if (!answer.PublicKey) throw new HsmError('Internal', `AWS KMS returned no public key for ${resolved.arn}`);
    const spki = new Uint8Array(answer.PublicKey);
    this.publicKeys.set(resolved.arn, spki);
    return spki;
  }

  // ---------------------------------------------------------------------------------------------
  // Keys

  async generateKeyPair(spec: KeySpec): Promise<HsmKeyHandle> {
    this.ready();
    const normalized = normalizeKeySpec(spec);
    assertAlgorithmSupported(normalized.algorithm, this.algorithms, `AWS KMS in ${this.options.region}`);
    if (!normalized.usages.includes('sign')) {
      throw new HsmError('InvalidArgument', 'AWS KMS SIGN_VERIFY keys always allow kms:Sign; a verify-only key cannot be made here (restrict kms:Sign in the key policy instead)', {
        details: { field: 'usages' },
      });
    }
    const alias = this.aliasFor(normalized.id);
    await this.assertAliasFree(alias, normalized.id);

    // a key this library tagged but never named (crash between CreateKey and CreateAlias)
    const orphans = (await this.findOrphans()).get(normalized.id) ?? [];
    const adoptable = orphans.find((o) => o.KeySpec === KEY_SPEC[normalized.algorithm] && o.KeyState === 'Enabled');
    let keyId: string;
    let arn: string;
    if (adoptable && adoptable.tags[TAG_ALGORITHM] === normalized.algorithm && sameSpecTags(adoptable.tags, normalized)) {
      keyId = adoptable.KeyId!;
      arn = adoptable.Arn!;
    } else {
      const tags: Tag[] = [
        { TagKey: TAG_ID, TagValue: normalized.id },
        { TagKey: TAG_ALGORITHM, TagValue: normalized.algorithm },
        ...(normalized.expiresAt ? [{ TagKey: TAG_EXPIRES, TagValue: normalized.expiresAt.toISOString() }] : []),
        ...Object.entries(normalized.labels ?? {}).map(([k, v]) => ({ TagKey: `${TAG_LABEL_PREFIX}${k}`, TagValue: v })),
      ];
      const created = await this.call(
        'CreateKey',
        normalized.id,
        (http) =>
          this.client.send(
            new CreateKeyCommand({
              KeySpec: KEY_SPEC[normalized.algorithm],
              KeyUsage: 'SIGN_VERIFY',
              Description: `Olocus HSM key ${normalized.id} (${normalized.algorithm})`,
              Tags: tags,
            }),
            http,
          ),
        'KeyGenerationFailed',
        // a timed-out CreateKey may have made a key: never sent twice (a leftover is an orphan the scan cleans)
        { idempotent: false, timeoutMs: this.options.keyCreationTimeoutMs },
      );
      keyId = created.KeyMetadata!.KeyId!;
      arn = created.KeyMetadata!.Arn!;
    }
    // every other orphan of this id is cleaned once its grace time is over
    for (const orphan of orphans) if (orphan.KeyId !== keyId) await this.cleanOrphan(orphan);
    try {
      await this.call('CreateAlias', normalized.id, (http) => this.client.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: keyId }), http), 'KeyGenerationFailed', { idempotent: false });
    } catch (error) {
      // a timed-out CreateAlias may have been applied: the alias then already names this key
      const target = await this.call('DescribeKey', normalized.id, (http) => this.client.send(new DescribeKeyCommand({ KeyId: alias }), http), 'KeyNotFound').catch(() => undefined);
      if (target?.KeyMetadata?.KeyId === keyId) return this.finishGenerate(normalized.id, arn);
      // a named key or none: the unnamed one goes (a second generate of the same id may have won)
      await this.scheduleDeletion(keyId, normalized.id).catch(() => undefined);
      if (isHsmError(error, 'KeyAlreadyExists')) {
        throw new HsmError('KeyAlreadyExists', `key ${normalized.id} already exists in AWS KMS (alias ${alias})`, { details: { keyId: normalized.id } });
      }
      throw error;
    }
    return this.finishGenerate(normalized.id, arn);
  }

  private async finishGenerate(id: string, arn: string): Promise<HsmKeyHandle> {
    this.orphanScan?.then((map) => map.delete(id)).catch(() => undefined);
    const resolved = await this.resolve(arn, { fresh: true });
    const handle = { ...resolved.handle, id };
    const entry = { handle, arn, resolvedAt: Date.now() };
    this.keys.set(arn, entry);
    this.keys.set(id, entry);
    return { ...handle };
  }

  private async assertAliasFree(alias: string, id: string): Promise<void> {
    try {
      await this.call('DescribeKey', id, (http) => this.client.send(new DescribeKeyCommand({ KeyId: alias }), http), 'KeyNotFound');
    } catch (error) {
      if (isHsmError(error, 'KeyNotFound')) return;
      throw error;
    }
    throw new HsmError('KeyAlreadyExists', `key ${id} already exists in AWS KMS (alias ${alias})`, { details: { keyId: id } });
  }

  /**
   * Keys tagged with an Olocus id but not named by that id's alias, grouped by id. Scanned once
   * per instance (the first generateKeyPair), because KMS cannot search by tag.
   */
  private findOrphans(): Promise<Map<string, Orphan[]>> {
    this.orphanScan ??= (async () => {
      const named = new Set<string>();
      for (const alias of await this.allAliases()) if (alias.TargetKeyId && this.codec.decode(alias.AliasName ?? '') !== undefined) named.add(alias.TargetKeyId);
      const orphans = new Map<string, Orphan[]>();
      let marker: string | undefined;
      do {
        const page = await this.call('ListKeys', undefined, (http) => this.client.send(new ListKeysCommand({ Limit: 1000, ...(marker ? { Marker: marker } : {}) }), http));
        for (const entry of page.Keys ?? []) {
          if (!entry.KeyId || named.has(entry.KeyId)) continue;
          let tags: Record<string, string>;
          try {
            tags = await this.tagsOf(entry.KeyId, entry.KeyId);
          } catch {
            continue; // a key we may not read is not ours to clean
          }
          const id = tags[TAG_ID];
          if (!id) continue;
          const described = await this.call('DescribeKey', entry.KeyId, (http) => this.client.send(new DescribeKeyCommand({ KeyId: entry.KeyId }), http), 'KeyNotFound').catch(() => undefined);
          const metadata = described?.KeyMetadata;
          if (!metadata || metadata.KeyState === 'PendingDeletion') continue;
          const list = orphans.get(id) ?? [];
          list.push({ ...metadata, tags });
          orphans.set(id, list);
        }
        marker = page.Truncated ? page.NextMarker : undefined;
      } while (marker);
      // orphans of other ids are cleaned now, once their grace time is over
      for (const [, list] of orphans) for (const orphan of list) await this.cleanOrphan(orphan).catch(() => undefined);
      return orphans;
    })();
    const scan = this.orphanScan;
    // a failed scan is tried again by the next call
    scan.catch(() => {
      if (this.orphanScan === scan) this.orphanScan = undefined;
    });
    return scan;
  }

  private async cleanOrphan(orphan: Orphan): Promise<void> {
    const age = orphan.CreationDate ? Date.now() - new Date(orphan.CreationDate).getTime() : Infinity;
    if (age < this.options.orphanGraceMs || !orphan.KeyId || orphan.KeyState === 'PendingDeletion') return;
    await this.scheduleDeletion(orphan.KeyId, orphan.tags[TAG_ID] ?? orphan.KeyId);
    orphan.KeyState = 'PendingDeletion';
  }

  private async scheduleDeletion(keyId: string, subject: string): Promise<void> {
    await this.call('ScheduleKeyDeletion', subject, (http) => this.client.send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: this.options.deletionWindowDays }), http), 'Internal');
  }

  private async allAliases(): Promise<AliasListEntry[]> {
    const all: AliasListEntry[] = [];
    let marker: string | undefined;
    do {
      const page = await this.call('ListAliases', undefined, (http) => this.client.send(new ListAliasesCommand({ Limit: 100, ...(marker ? { Marker: marker } : {}) }), http));
      all.push(...(page.Aliases ?? []));
      marker = page.Truncated ? page.NextMarker : undefined;
    } while (marker);
    return all;
  }

  async listKeys(options?: ListKeysOptions): Promise<KeyPage> {
    this.ready();
    const { prefix, limit, cursor } = normalizeListOptions(options);
    const ours: Array<{ id: string; alias: string }> = [];
    for (const alias of await this.allAliases()) {
      const id = alias.AliasName ? this.codec.decode(alias.AliasName) : undefined;
      if (id?.startsWith(prefix) && (cursor === undefined || id > cursor)) ours.push({ id, alias: alias.AliasName! });
    }
    ours.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const page = ours.slice(0, limit);
    const keys: HsmKeyHandle[] = [];
    for (const { id } of page) {
      try {
        keys.push({ ...(await this.resolve(id, { fresh: true })).handle });
      } catch (error) {
        // an alias whose key went away between the two calls is not listed
        if (!isHsmError(error, 'KeyNotFound')) throw error;
      }
    }
    return ours.length > limit ? { keys, nextCursor: page[page.length - 1]!.id } : { keys };
  }

  async destroyKey(key: KeyRef): Promise<void> {
    const resolved = await this.resolve(key, { fresh: true });
    const handle = resolved.handle;
    const wasPending = handle.state === 'pending-deletion';
    // the key id rather than the ARN: both are valid for AWS, and moto resolves only the id here
    if (!wasPending) await this.scheduleDeletion(handle.metadata.keyId ?? resolved.arn, handle.id);
    // the alias goes too, so that the id is free again and never names a dying key
    const aliases = (await this.allAliases()).filter((a) => a.TargetKeyId === handle.metadata.keyId && a.AliasName && this.codec.decode(a.AliasName) !== undefined);
    for (const alias of aliases) {
      await this.call('DeleteAlias', alias.AliasName, (http) => this.client.send(new DeleteAliasCommand({ AliasName: alias.AliasName }), http), 'Internal').catch((error: unknown) => {
        if (!isHsmError(error, 'KeyNotFound')) throw error;
      });
    }
    for (const [name, entry] of this.keys) if (entry.arn === resolved.arn) this.keys.delete(name);
    if (wasPending) {
      throw new HsmError('KeyDisabled', `key ${handle.id} is already scheduled for deletion${handle.metadata.deletionDate ? ` on ${handle.metadata.deletionDate}` : ''}`, {
        details: { keyId: handle.id, state: 'pending-deletion' },
      });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Signatures

  async sign(key: KeyRef, data: Uint8Array, options: SignOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    const resolved = await this.resolve(key);
    const handle = resolved.handle;
    assertUsable(handle, 'sign');
    const info = algorithmInfo(handle.algorithm);
    if (info.family === 'EdDSA') {
      assertMessageSize({ maxMessageBytes: { Ed25519: KMS_RAW_MESSAGE_LIMIT } }, handle.algorithm, data.length);
      if (data.length === 0) {
        throw new HsmError('InvalidArgument', 'AWS KMS signs Ed25519 messages of 1 to 4096 bytes; the message is empty', { details: { field: 'data', limit: KMS_RAW_MESSAGE_LIMIT, length: 0 } });
      }
      return this.signRemote(resolved, data, 'RAW', options.signal);
    }
    const digest = createHash(nodeHashName(info.hash!)).update(data).digest();
    return this.signRemote(resolved, digest, 'DIGEST', options.signal);
  }

  async signStream(key: KeyRef, chunks: AsyncIterable<Uint8Array>, options: SignOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    const resolved = await this.resolve(key);
    assertUsable(resolved.handle, 'sign');
    const info = algorithmInfo(resolved.handle.algorithm);
    if (info.family === 'EdDSA') throw new HsmError('InvalidArgument', 'Ed25519 signs a whole message; it cannot be streamed', { details: { field: 'data' } });
    const hash = createHash(nodeHashName(info.hash!));
    for await (const chunk of chunks) hash.update(chunk);
    return this.signRemote(resolved, hash.digest(), 'DIGEST', options.signal);
  }

  private async signRemote(resolved: ResolvedKey, message: Uint8Array, messageType: 'RAW' | 'DIGEST', signal?: AbortSignal): Promise<Uint8Array> {
    const { handle, arn } = resolved;
    let answer: SignCommandOutput;
    try {
      answer = await this.call(
        'Sign',
        handle.id,
        (http) => this.client.send(new SignCommand({ KeyId: arn, Message: message, MessageType: messageType, SigningAlgorithm: SIGNING_ALGORITHM[handle.algorithm] }), http),
        'SigningFailed',
        signal ? { signal } : {},
      );
    } catch (error) {
      // the key changed under the cache (disabled, scheduled for deletion elsewhere): ask again next time
      if (isHsmError(error, 'KeyNotFound') || isHsmError(error, 'KeyDisabled')) for (const [name, entry] of this.keys) if (entry.arn === arn) this.keys.delete(name);
      throw error;
    }
    if (!answer.Signature) throw new HsmError('SigningFailed', `AWS KMS returned no signature for ${handle.id}`);
    this.signatures++;
    const signature = new Uint8Array(answer.Signature);
    const info = algorithmInfo(handle.algorithm);
    if (info.family === 'ECDSA') return ecdsaDerToRaw(signature, ecdsaComponentBytes(handle.algorithm));
    if (signature.length !== info.signatureBytes) {
      throw new HsmError('SigningFailed', `AWS KMS returned a ${signature.length}-byte signature for ${handle.algorithm} key ${handle.id}; expected ${info.signatureBytes}`);
    }
    return signature;
  }

  async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options: SignOptions = {}): Promise<boolean> {
    throwIfAborted(options.signal);
    const resolved = await this.resolve(key);
    assertUsable(resolved.handle, 'verify');
    return verifyLocally(resolved.handle.algorithm, await this.spkiOf(resolved), data, signature);
  }
}

function sameSpecTags(tags: Record<string, string>, spec: { expiresAt?: Date; labels?: Record<string, string> }): boolean {
  if ((tags[TAG_EXPIRES] ?? '') !== (spec.expiresAt?.toISOString() ?? '')) return false;
  const labels = Object.entries(tags).filter(([k]) => k.startsWith(TAG_LABEL_PREFIX));
  const wanted = Object.entries(spec.labels ?? {});
  return labels.length === wanted.length && wanted.every(([k, v]) => tags[`${TAG_LABEL_PREFIX}${k}`] === v);
}
