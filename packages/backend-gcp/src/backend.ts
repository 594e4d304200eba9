import { createHash, createPublicKey } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyManagementServiceClient, type protos } from '@google-cloud/kms';
import { credentials as grpcCredentials } from '@grpc/grpc-js';
import {
  HsmError,
  NAME_CODECS,
  algorithmInfo,
  assertAlgorithmSupported,
  assertMessageSize,
  assertSameInstance,
  assertUsable,
  assertValidKeyId,
  createNameCodec,
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
  type PublicKeyInfo,
  type SignOptions,
} from '@olocus/hsm-core';
import { ED25519_MAX_MESSAGE_BYTES, contractAlgorithm, digestField, gcpAlgorithm } from './algorithms.js';
import { crc32c, int64Value } from './crc32c.js';
import { RETRYABLE_CODES, adcSearchDescription, grpcCode, mapGcpError } from './errors.js';
import { Limiter } from './limiter.js';
import { GCP_ALGORITHMS, parseGcpOptions, type GcpKmsBackendOptions, type GcpKmsBackendOptionsInput } from './options.js';

export const GCP_BACKEND_TYPE = 'gcp-kms';

type ICryptoKey = protos.google.cloud.kms.v1.ICryptoKey;
type ICryptoKeyVersion = protos.google.cloud.kms.v1.ICryptoKeyVersion;
type IAsymmetricSignRequest = protos.google.cloud.kms.v1.IAsymmetricSignRequest;
type IAsymmetricSignResponse = protos.google.cloud.kms.v1.IAsymmetricSignResponse;
type IPublicKey = protos.google.cloud.kms.v1.IPublicKey;
/** The per-call settings this backend gives the client (its own retries are off: see `call`). */
interface GaxCallOptions {
  timeout: number;
  retry: null;
  autoPaginate?: boolean;
}

/** Labels the library keeps on a CryptoKey. Cloud KMS labels: `[a-z][a-z0-9_-]{0,62}` keys, `[a-z0-9_-]{0,63}` values. */
export const LABELS = {
  id: 'olocus-id',
  algorithm: 'olocus-algorithm',
  usages: 'olocus-usages',
  expiresAt: 'olocus-expires-at',
  /** Prefix of the labels holding, hex-encoded JSON, the caller's labels Cloud KMS cannot hold as they are. */
  encodedLabels: 'olocus-labels',
} as const;
const MAX_GCP_LABELS = 64;
const RESERVED_LABEL_PREFIX = 'olocus-';
const LABEL_KEY = /^[a-z][a-z0-9_-]{0,62}$/;
const LABEL_VALUE = /^[a-z0-9_-]{0,63}$/;
const LABEL_VALUE_MAX = 63;

/**
 * Label values are lower case, so the id label uses core's codec in its case-insensitive form
 * (`A` → `_a`); an id that needs more than 63 characters continues in `olocus-id-1`.
 */
const ID_LABEL_CODEC = createNameCodec({ allowed: /[A-Za-z0-9_-]/, escape: '_', caseInsensitive: true, maxLength: 2 * LABEL_VALUE_MAX });

const KEY_RING_NAME = /^projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+$/;
const CRYPTO_KEY_NAME = /^(projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+)\/cryptoKeys\/([^/]+)$/;
const VERSION_NAME = /^((projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+)\/cryptoKeys\/([^/]+))\/cryptoKeyVersions\/(\d+)$/;

const STATE_OF: Readonly<Record<string, KeyState>> = {
  ENABLED: 'enabled',
  DISABLED: 'disabled',
  DESTROY_SCHEDULED: 'pending-deletion',
  DESTROYED: 'destroyed',
};

interface Resolved {
  handle: HsmKeyHandle;
  /** Epoch ms after which the entry is resolved again. */
  freshUntil: number;
}

export interface GcpKmsBackendInit {
  /** Environment to read (ADC variables for messages); defaults to process.env. */
  env?: Record<string, string | undefined>;
  /** A ready client (tests, custom transports); the backend then does not close it. */
  client?: KeyManagementServiceClient;
}

/**
 * Cloud KMS asymmetric signing keys (HSM protection by default) as an Olocus backend.
 *
 * One CryptoKey per Olocus key id, named by core's `NAME_CODECS.gcpCryptoKey`; the handle's
 * `ref` is the CryptoKeyVersion resource name. Every sign request and response is checked with
 * CRC32C end to end, and the public key's PEM too; verification is local.
 */
/** What a reference-only backup of a Cloud KMS key relies on (recorded in `ExportedKey.parameters.durability`). */
export const GCP_DURABILITY =
  "the private key exists only inside Google Cloud KMS (asymmetric Cloud KMS keys cannot be exported): the backup holds the CryptoKeyVersion name and public key, and the key relies on the provider's durability; it is lost once the version is destroyed (after its scheduled-destruction period) or the project or key ring becomes unavailable";

export class GcpKmsBackend implements HsmBackend {
  readonly type = GCP_BACKEND_TYPE;
  readonly instanceId: string;
  readonly options: GcpKmsBackendOptions;
  private readonly keyRingName: string;
  private readonly algorithms: readonly KeyAlgorithm[];
  private readonly env: Record<string, string | undefined>;
  private readonly limiter: Limiter;
  private client: KeyManagementServiceClient | undefined;
  private readonly ownsClient: boolean;
  private state: 'new' | 'ready' | 'closed' = 'new';
  private readonly resolved = new Map<string, Resolved>();
  private readonly publicKeys = new Map<string, Uint8Array>();
  private retries = 0;
  private integrityFailures = 0;

  /**
   * Backup (method `reference-only`): Cloud KMS never exports an asymmetric private key, so a backup
   * records the CryptoKeyVersion and its public key, and the key relies on Google's durability.
   * importKey refuses: there is nothing to put back (see the README, "Backup").
   */
  readonly backup: KeyBackupCapability = {
    method: 'reference-only',
    exportKey: (key, options) => this.exportReference(key, options),
    importKey: async (exported) => {
      throw new HsmError(
        'InvalidArgument',
        `Google Cloud KMS keeps the private key of ${String(exported?.id)}: asymmetric Cloud KMS keys cannot be exported or imported back, so there is nothing to restore; the backup records its reference (${String(exported?.parameters?.cryptoKeyVersion ?? 'cryptoKeyVersion')}), usable while the version exists`,
        { details: { field: 'exported.method', provider: 'gcp-kms' } },
      );
    },
  };

  constructor(options: GcpKmsBackendOptions | GcpKmsBackendOptionsInput, init: GcpKmsBackendInit = {}) {
    this.options = parseGcpOptions(options);
    this.keyRingName = `projects/${this.options.projectId}/locations/${this.options.location}/keyRings/${this.options.keyRing}`;
    this.instanceId = `gcp-kms:${this.keyRingName}`;
    this.algorithms = this.options.algorithms ?? GCP_ALGORITHMS;
    this.env = init.env ?? process.env;
    this.limiter = new Limiter(this.options.maxConcurrency);
    this.client = init.client;
    this.ownsClient = init.client === undefined;
  }

  // ---------------------------------------------------------------------------------------------
  // lifecycle

  async initialize(): Promise<void> {
    if (this.state === 'closed') throw new HsmError('Closed', 'the Cloud KMS backend is closed');
    if (this.state === 'ready') return;
    if (!this.client) {
      const client = this.createClient();
      if (!this.options.insecure) await this.checkCredentials(client);
      this.client = client;
    }
    this.state = 'ready';
    try {
      await this.ensureKeyRing();
    } catch (error) {
      this.state = 'new';
      throw error;
    }
  }

  /**
   * Finds Application Default Credentials before the first call. Without this, google-gax
   * discovers their absence while building its stub and leaves that rejection unhandled (seen
   * with google-gax 5.0.8), which ends a Node process that runs with the default
   * --unhandled-rejections=throw.
   */
  private async checkCredentials(client: KeyManagementServiceClient): Promise<void> {
    try {
      await client.auth.getClient();
    } catch (error) {
      // The library's text is not repeated: a parse error of a key file may quote the file.
      const missing = error instanceof Error && /could not load the default credentials/i.test(error.message);
      throw new HsmError(
        'AuthenticationFailed',
        `Cloud KMS credentials are ${missing ? 'missing' : `unusable (${error instanceof Error ? error.name : 'error'} while reading them)`}: ${adcSearchDescription(this.env)}. ` +
          'Set GOOGLE_APPLICATION_CREDENTIALS to a valid credentials file, run `gcloud auth application-default login`, or use workload identity',
        { cause: error, details: { operation: 'find credentials' } },
      );
    }
  }

  private createClient(): KeyManagementServiceClient {
    const { apiEndpoint, port, insecure } = this.options;
    return new KeyManagementServiceClient({
      ...(apiEndpoint ? { apiEndpoint } : {}),
      ...(port ? { port } : {}),
      // plaintext and no credentials: loopback emulators only (enforced by the options schema)
      ...(insecure ? { sslCreds: grpcCredentials.createInsecure() } : {}),
      projectId: this.options.projectId,
    });
  }

  private async ensureKeyRing(): Promise<void> {
    try {
      await this.call('read key ring ' + this.keyRingName, 'InitializationFailed', (o) => this.kms.getKeyRing({ name: this.keyRingName }, o));
      return;
    } catch (error) {
      if (!isHsmError(error, 'KeyNotFound')) throw error;
      if (!this.options.createKeyRing) {
        throw new HsmError(
          'InitializationFailed',
          `the key ring ${this.keyRingName} does not exist: create it (gcloud kms keyrings create ${this.options.keyRing} --location ${this.options.location} --project ${this.options.projectId}) or set createKeyRing: true`,
          { details: { field: 'keyRing', keyRing: this.keyRingName } },
        );
      }
    }
    try {
      await this.call('create key ring ' + this.keyRingName, 'InitializationFailed', (o) =>
        this.kms.createKeyRing({ parent: `projects/${this.options.projectId}/locations/${this.options.location}`, keyRingId: this.options.keyRing, keyRing: {} }, o),
      { idempotent: false });
    } catch (error) {
      // another process created it meanwhile
      if (!isHsmError(error, 'KeyAlreadyExists')) throw error;
    }
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.resolved.clear();
    const client = this.client;
    this.client = undefined;
    if (client && this.ownsClient) await client.close().catch(() => undefined);
  }

  private ready(): void {
    if (this.state === 'closed') throw new HsmError('Closed', 'the Cloud KMS backend is closed');
    if (this.state !== 'ready' || !this.client) throw new HsmError('NotInitialized', 'call initialize() before using the Cloud KMS backend');
  }

  private get kms(): KeyManagementServiceClient {
    this.ready();
    return this.client!;
  }

  // ---------------------------------------------------------------------------------------------
  // facts

  async info(): Promise<HsmInfo> {
    this.ready();
    return {
      backend: this.type,
      description: `Cloud KMS key ring ${this.keyRingName} (${this.options.protectionLevel} protection)`,
      manufacturer: 'Google Cloud',
      model: this.options.protectionLevel === 'HSM' ? 'Cloud HSM' : 'Cloud KMS software keys',
      details: {
        projectId: this.options.projectId,
        location: this.options.location,
        keyRing: this.options.keyRing,
        protectionLevel: this.options.protectionLevel,
        endpoint: `${this.options.apiEndpoint ?? 'cloudkms.googleapis.com'}${this.options.port ? `:${this.options.port}` : ''}`,
      },
    };
  }

  async capabilities(): Promise<Capabilities> {
    this.ready();
    return {
      algorithms: [...this.algorithms],
      persistentKeys: true,
      hardwareBacked: this.options.protectionLevel === 'HSM',
      remoteVerify: false,
      maxConcurrency: this.options.maxConcurrency,
      ...(this.algorithms.includes('Ed25519') ? { maxMessageBytes: { Ed25519: ED25519_MAX_MESSAGE_BYTES } } : {}),
    };
  }

  async fipsStatus(): Promise<FipsStatus> {
    this.ready();
    if (this.options.protectionLevel === 'SOFTWARE') {
      return {
        standard: 'none',
        level: 0,
        approvedMode: false,
        evidence: 'none',
        notes: 'protectionLevel SOFTWARE: keys live in Google\'s software crypto module, not in an HSM; no hardware FIPS claim is made for them',
      };
    }
    return {
      standard: 'FIPS 140-2',
      level: 3,
      approvedMode: true,
      certificateStatus: 'unknown',
      evidence: 'provider-claim',
      notes:
        'Google documents that Cloud HSM keys are generated and used only inside HSMs validated to FIPS 140-2 Level 3 (Cloud HSM documentation); ' +
        'the client cannot check this itself. Per-version attestations (CryptoKeyVersion.attestation) can be verified offline with Google\'s tools.',
    };
  }

  async healthCheck(): Promise<HealthStatus> {
    this.ready();
    const started = performance.now();
    try {
      // one attempt: a health check reports the state now instead of waiting out an outage
      await this.call('read key ring ' + this.keyRingName, 'DeviceUnavailable', (o) => this.kms.getKeyRing({ name: this.keyRingName }, o), { retry: false });
      return { healthy: true, latencyMs: performance.now() - started, message: `Cloud KMS key ring ${this.keyRingName} reachable` };
    } catch (error) {
      const message = isHsmError(error) ? `${error.code}: ${error.message}` : String(error);
      return { healthy: false, latencyMs: performance.now() - started, message };
    }
  }

  metrics(): BackendMetrics {
    return {
      pool: { size: this.limiter.max, inUse: this.limiter.inUse, waiting: this.limiter.queued, max: this.limiter.max },
      recoveries: this.retries,
    };
  }

  /** Integrity-check failures seen (a CRC32C or name mismatch in an answer), for tests and telemetry. */
  get integrityFailureCount(): number {
    return this.integrityFailures;
  }

  // ---------------------------------------------------------------------------------------------
  // keys

  async generateKeyPair(spec: KeySpec): Promise<HsmKeyHandle> {
    this.ready();
    const normalized = normalizeKeySpec(spec);
    const versionAlgorithm = gcpAlgorithm(normalized.algorithm);
    assertAlgorithmSupported(normalized.algorithm, this.algorithms, `this Cloud KMS backend (options.algorithms)`);
    const cryptoKeyId = NAME_CODECS.gcpCryptoKey.encode(normalized.id);
    const labels = this.labelsFor(normalized);
    const cryptoKeyName = `${this.keyRingName}/cryptoKeys/${cryptoKeyId}`;
    const destroySeconds = this.options.destroyScheduledDuration;
    await this.call(
      `create key ${normalized.id}`,
      'KeyGenerationFailed',
      (o) =>
        this.kms.createCryptoKey(
          {
            parent: this.keyRingName,
            cryptoKeyId,
            cryptoKey: {
              purpose: 'ASYMMETRIC_SIGN',
              versionTemplate: { algorithm: versionAlgorithm as never, protectionLevel: this.options.protectionLevel },
              labels,
              ...(destroySeconds !== undefined ? { destroyScheduledDuration: { seconds: destroySeconds } } : {}),
            },
          },
          o,
        ),
      { idempotent: false, keyId: normalized.id },
    ).catch((error: unknown) => {
      if (isHsmError(error, 'KeyAlreadyExists')) {
        throw new HsmError('KeyAlreadyExists', `key ${normalized.id} already exists (CryptoKey ${cryptoKeyName}); Cloud KMS never deletes CryptoKeys, so an id cannot be reused`, {
          details: { keyId: normalized.id },
        });
      }
      throw error;
    });
    const version = await this.awaitGeneration(cryptoKeyName, normalized.id);
    const cryptoKey: ICryptoKey = { name: cryptoKeyName, labels, purpose: 'ASYMMETRIC_SIGN' };
    const handle = this.toHandle(cryptoKey, version);
    this.remember(handle);
    return { ...handle };
  }

  /**
   * HSM keys are made asynchronously: the first version stays PENDING_GENERATION for a while.
   * Poll with backoff (bounded by keyGenerationTimeoutMs) so that the returned key signs at once.
   */
  private async awaitGeneration(cryptoKeyName: string, keyId: string): Promise<ICryptoKeyVersion> {
    const deadline = Date.now() + this.options.keyGenerationTimeoutMs;
    let delay = 100;
    for (;;) {
      const versions = await this.listVersions(cryptoKeyName, keyId);
      const version = versions[0];
      const state = String(version?.state ?? '');
      if (version && state === 'ENABLED') return version;
      if (version && (state === 'GENERATION_FAILED' || state === 'DESTROYED' || state === 'DESTROY_SCHEDULED')) {
        throw new HsmError('KeyGenerationFailed', `Cloud KMS could not generate key ${keyId}: its version ${version.name} is ${state}`, { details: { keyId, state } });
      }
      if (Date.now() + delay > deadline) {
        throw new HsmError(
          'KeyGenerationFailed',
          `key ${keyId} was created but its version is still ${state || 'missing'} after ${this.options.keyGenerationTimeoutMs} ms; it may become usable later (see keyGenerationTimeoutMs)`,
          { details: { keyId, state: state || 'missing' }, retryable: true },
        );
      }
      await sleep(delay);
      delay = Math.min(2000, Math.round(delay * 1.6));
    }
  }

  /** Versions of a CryptoKey, newest first. */
  private async listVersions(cryptoKeyName: string, keyId?: string): Promise<ICryptoKeyVersion[]> {
    const versions: ICryptoKeyVersion[] = [];
    let pageToken = '';
    do {
      const [page, , response] = await this.call(
        `list versions of ${cryptoKeyName}`,
        'KeyNotFound',
        (o) => this.kms.listCryptoKeyVersions({ parent: cryptoKeyName, pageSize: 1000, pageToken }, { ...o, autoPaginate: false }),
        keyId ? { keyId } : {},
      );
      versions.push(...page);
      pageToken = response?.nextPageToken ?? '';
    } while (pageToken);
    return versions.sort((a, b) => versionNumber(b.name) - versionNumber(a.name));
  }

  private labelsFor(spec: { id: string; algorithm: KeyAlgorithm; usages: KeyUsage[]; expiresAt?: Date; labels?: Record<string, string> }): Record<string, string> {
    const labels: Record<string, string> = {};
    // Labels that already fit Cloud KMS's alphabet stay readable in the console; the rest
    // (upper case, '.', ':', '/', spaces...) travel hex-encoded as JSON in olocus-labels-N.
    const encoded: Record<string, string> = {};
    for (const [key, value] of Object.entries(spec.labels ?? {})) {
      if (LABEL_KEY.test(key) && !key.startsWith(RESERVED_LABEL_PREFIX) && LABEL_VALUE.test(value)) labels[key] = value;
      else encoded[key] = value;
    }
    const encodedId = ID_LABEL_CODEC.encode(spec.id);
    labels[LABELS.id] = encodedId.slice(0, LABEL_VALUE_MAX);
    if (encodedId.length > LABEL_VALUE_MAX) labels[`${LABELS.id}-1`] = encodedId.slice(LABEL_VALUE_MAX);
    labels[LABELS.algorithm] = spec.algorithm.toLowerCase();
    labels[LABELS.usages] = spec.usages.join('_');
    if (spec.expiresAt) labels[LABELS.expiresAt] = String(spec.expiresAt.getTime());
    if (Object.keys(encoded).length > 0) {
      const hex = Buffer.from(JSON.stringify(encoded), 'utf8').toString('hex');
      const parts = Math.ceil(hex.length / LABEL_VALUE_MAX);
      if (Object.keys(labels).length + parts > MAX_GCP_LABELS) {
        throw new HsmError(
          'InvalidArgument',
          `labels take ${Object.keys(labels).length + parts} Cloud KMS labels once encoded; a CryptoKey holds at most ${MAX_GCP_LABELS}. Use fewer or shorter labels, or lower-case labels that Cloud KMS stores as they are ([a-z][a-z0-9_-]* keys, [a-z0-9_-]* values, at most 63 characters)`,
          { details: { field: 'labels', limit: MAX_GCP_LABELS } },
        );
      }
      for (let i = 0; i < parts; i++) labels[`${LABELS.encodedLabels}-${i}`] = hex.slice(i * LABEL_VALUE_MAX, (i + 1) * LABEL_VALUE_MAX);
    }
    return labels;
  }

  /** The Olocus id of a CryptoKey: core's codec decodes its id; a foreign name stays its full resource name. */
  private idOf(cryptoKeyName: string): string {
    const match = CRYPTO_KEY_NAME.exec(cryptoKeyName);
    const decoded = match ? NAME_CODECS.gcpCryptoKey.decode(match[2]!) : undefined;
    return decoded ?? cryptoKeyName;
  }

  private toHandle(cryptoKey: ICryptoKey, version: ICryptoKeyVersion): HsmKeyHandle {
    const versionName = String(version.name);
    const gcpAlg = String(version.algorithm ?? '');
    const algorithm = contractAlgorithm(gcpAlg);
    if (!algorithm) {
      throw new HsmError('UnsupportedAlgorithm', `key version ${versionName} uses ${gcpAlg || 'no algorithm'}, which is not a signing algorithm of the library (purpose must be ASYMMETRIC_SIGN)`, {
        details: { keyId: versionName, algorithm: gcpAlg },
      });
    }
    const rawLabels = (cryptoKey.labels ?? {}) as Record<string, string>;
    const labels = callerLabels(rawLabels);
    const usages = parseUsages(rawLabels[LABELS.usages]);
    const expiresMs = rawLabels[LABELS.expiresAt] !== undefined ? Number(rawLabels[LABELS.expiresAt]) : undefined;
    const stateName = String(version.state ?? '');
    const state: KeyState = STATE_OF[stateName] ?? 'disabled';
    const createdAt = timestampToDate(version.createTime);
    const match = VERSION_NAME.exec(versionName);
    return {
      id: this.idOf(String(cryptoKey.name)),
      ref: versionName,
      algorithm,
      usages,
      backend: this.type,
      instance: this.instanceId,
      ...(createdAt ? { createdAt } : {}),
      ...(expiresMs !== undefined && Number.isFinite(expiresMs) ? { expiresAt: new Date(expiresMs) } : {}),
      ...(state !== 'enabled' ? { state } : {}),
      ...(Object.keys(labels).length > 0 ? { labels } : {}),
      metadata: {
        cryptoKey: String(cryptoKey.name),
        version: match ? match[4]! : '',
        versionState: stateName,
        gcpAlgorithm: gcpAlg,
        protectionLevel: String(version.protectionLevel ?? ''),
      },
    };
  }

  private remember(handle: HsmKeyHandle, alsoAs?: string): void {
    const entry = { handle, freshUntil: Date.now() + this.options.keyCacheTtlMs };
    this.resolved.set(handle.ref, entry);
    if (alsoAs !== undefined) this.resolved.set(alsoAs, entry);
  }

  private forget(handle: HsmKeyHandle): void {
    for (const [key, entry] of this.resolved) if (entry.handle.ref === handle.ref || entry.handle.id === handle.id) this.resolved.delete(key);
  }

  /**
   * Resolves a handle by its `ref` (a CryptoKeyVersion name) alone; a string as a
   * CryptoKeyVersion name, a CryptoKey name (its newest enabled version) or an Olocus id.
   */
  private async resolve(key: KeyRef, signal?: AbortSignal): Promise<HsmKeyHandle> {
    this.ready();
    assertSameInstance(key, this.instanceId);
    const wanted = typeof key === 'string' ? key : key.ref;
    if (typeof wanted !== 'string') throw new HsmError('InvalidArgument', 'key must be a key id, a Cloud KMS key name or a handle returned by the backend', { details: { field: 'key' } });
    const cached = this.resolved.get(wanted);
    if (cached && cached.freshUntil > Date.now()) return cached.handle;
    throwIfAborted(signal);

    const versionMatch = VERSION_NAME.exec(wanted);
    if (versionMatch) {
      this.assertInKeyRing(versionMatch[2]!, wanted);
      const cryptoKeyName = versionMatch[1]!;
      const [[cryptoKey], [version]] = await Promise.all([
        this.call(`read key ${cryptoKeyName}`, 'KeyNotFound', (o) => this.kms.getCryptoKey({ name: cryptoKeyName }, o), { keyId: wanted }),
        this.call(`read key version ${wanted}`, 'KeyNotFound', (o) => this.kms.getCryptoKeyVersion({ name: wanted }, o), { keyId: wanted }),
      ]);
      const handle = this.toHandle(cryptoKey, version);
      this.remember(handle);
      return handle;
    }
    if (typeof key !== 'string') {
      throw new HsmError('InvalidArgument', `the handle's ref ${JSON.stringify(wanted.slice(0, 200))} is not a Cloud KMS CryptoKeyVersion name`, { details: { field: 'key.ref' } });
    }
    let cryptoKeyName: string;
    const keyMatch = CRYPTO_KEY_NAME.exec(wanted);
    if (keyMatch) {
      this.assertInKeyRing(keyMatch[1]!, wanted);
      cryptoKeyName = wanted;
    } else {
      assertValidKeyId(wanted, 'key');
      cryptoKeyName = `${this.keyRingName}/cryptoKeys/${NAME_CODECS.gcpCryptoKey.encode(wanted)}`;
    }
    const [[cryptoKey], versions] = await Promise.all([
      this.call(`read key ${cryptoKeyName}`, 'KeyNotFound', (o) => this.kms.getCryptoKey({ name: cryptoKeyName }, o), { keyId: wanted }),
      this.listVersions(cryptoKeyName, wanted),
    ]);
    if (String(cryptoKey.purpose) !== 'ASYMMETRIC_SIGN') {
      throw new HsmError('UnsupportedAlgorithm', `Cloud KMS key ${cryptoKeyName} has purpose ${String(cryptoKey.purpose)}, not ASYMMETRIC_SIGN: the library signs only with asymmetric signing keys`, {
        details: { keyId: wanted },
      });
    }
    const version = pickVersion(cryptoKey, versions);
    if (!version) throw new HsmError('KeyNotFound', `Cloud KMS key ${cryptoKeyName} has no versions`, { details: { keyId: wanted } });
    const handle = this.toHandle(cryptoKey, version);
    this.remember(handle, wanted);
    return handle;
  }

  private assertInKeyRing(keyRingName: string, wanted: string): void {
    if (keyRingName !== this.keyRingName) {
      throw new HsmError('InvalidArgument', `${JSON.stringify(wanted.slice(0, 300))} is not in this backend's key ring ${this.keyRingName}`, {
        details: { field: 'key', keyRing: this.keyRingName },
      });
    }
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    const handle = await this.resolve(key);
    // a copy: callers must not be able to edit the cached entry
    return {
      ...handle,
      usages: [...handle.usages],
      metadata: { ...handle.metadata },
      ...(handle.labels ? { labels: { ...handle.labels } } : {}),
    };
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    const handle = await this.resolve(key);
    assertNotGone(handle);
    return { algorithm: handle.algorithm, spki: await this.publicKeyOf(handle) };
  }

  private async exportReference(key: KeyRef, options: { signal?: AbortSignal } = {}): Promise<ExportedKey> {
    throwIfAborted(options.signal);
    const handle = await this.resolve(key, options.signal);
    assertNotGone(handle);
    return {
      method: 'reference-only',
      id: handle.id,
      algorithm: handle.algorithm,
      usages: [...handle.usages],
      publicKeySpki: new Uint8Array(await this.publicKeyOf(handle, options.signal)),
      parameters: {
        provider: 'gcp-kms',
        keyRing: this.keyRingName,
        cryptoKey: handle.metadata.cryptoKey ?? '',
        cryptoKeyVersion: handle.ref,
        gcpAlgorithm: handle.metadata.gcpAlgorithm ?? '',
        protectionLevel: handle.metadata.protectionLevel ?? '',
        versionState: handle.metadata.versionState ?? '',
        durability: GCP_DURABILITY,
      },
    };
  }

  /** The version's public key, checked with `pemCrc32c` and `name`, cached for good (a version's key never changes). */
  private async publicKeyOf(handle: HsmKeyHandle, signal?: AbortSignal): Promise<Uint8Array> {
    const known = this.publicKeys.get(handle.ref);
    if (known) return known;
    for (let attempt = 1; ; attempt++) {
      const [response] = await this.call(`read public key of ${handle.ref}`, 'KeyNotFound', (o) => this.kms.getPublicKey({ name: handle.ref }, o), {
        keyId: handle.id,
        ...(signal ? { signal } : {}),
      });
      const problem = checkPublicKey(response, handle.ref);
      if (problem === undefined) {
        const spki = new Uint8Array(createPublicKey(String(response.pem)).export({ format: 'der', type: 'spki' }));
        const answered = contractAlgorithm(String(response.algorithm ?? ''));
        if (answered !== handle.algorithm) {
          throw new HsmError('IntegrityError', `Cloud KMS answered the public key of ${handle.ref} with algorithm ${String(response.algorithm)}, not ${handle.algorithm}`, { details: { keyId: handle.id } });
        }
        this.publicKeys.set(handle.ref, spki);
        return spki;
      }
      this.integrityFailures++;
      if (attempt >= 2) {
        throw new HsmError('IntegrityError', `Cloud KMS's answer with the public key of ${handle.ref} failed its integrity check twice (${problem}); it was not used`, {
          details: { keyId: handle.id, check: problem },
        });
      }
    }
  }

  async sign(key: KeyRef, data: Uint8Array, options: SignOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    const handle = await this.resolve(key, options.signal);
    assertUsable(handle, 'sign');
    const info = algorithmInfo(handle.algorithm);
    if (info.family === 'EdDSA') {
      assertMessageSize({ maxMessageBytes: { Ed25519: ED25519_MAX_MESSAGE_BYTES } }, handle.algorithm, data.length);
      return this.signRemote(handle, { data }, options.signal);
    }
    const digest = createHash(nodeHashName(info.hash!)).update(data).digest();
    return this.signRemote(handle, { digest }, options.signal);
  }

  async signStream(key: KeyRef, chunks: AsyncIterable<Uint8Array>, options: SignOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    const handle = await this.resolve(key, options.signal);
    assertUsable(handle, 'sign');
    const info = algorithmInfo(handle.algorithm);
    if (info.family === 'EdDSA') throw new HsmError('InvalidArgument', 'Ed25519 signs a whole message; it cannot be streamed', { details: { field: 'data' } });
    const hash = createHash(nodeHashName(info.hash!));
    for await (const chunk of chunks) hash.update(chunk);
    return this.signRemote(handle, { digest: hash.digest() }, options.signal);
  }

  /**
   * One AsymmetricSign with CRC32C both ways. An answer that fails a check (the service did not
   * verify our checksum, answered for another version, or the signature's checksum differs) is
   * never returned: it is asked once more, then IntegrityError.
   */
  private async signRemote(handle: HsmKeyHandle, payload: { data: Uint8Array } | { digest: Uint8Array }, signal?: AbortSignal): Promise<Uint8Array> {
    const name = handle.ref;
    const request: IAsymmetricSignRequest =
      'data' in payload
        ? { name, data: payload.data, dataCrc32c: { value: crc32c(payload.data) } }
        : { name, digest: { [digestField(handle.algorithm)]: payload.digest }, digestCrc32c: { value: crc32c(payload.digest) } };
    const byData = 'data' in payload;
    for (let attempt = 1; ; attempt++) {
      const [response] = await this.call(`sign with ${name}`, 'SigningFailed', (o) => this.kms.asymmetricSign(request, o), { keyId: handle.id, ...(signal ? { signal } : {}) });
      const problem = checkSignResponse(response, name, byData);
      if (problem === undefined) return this.toContractSignature(handle, response.signature as Uint8Array);
      this.integrityFailures++;
      if (attempt >= 2) {
        throw new HsmError('IntegrityError', `Cloud KMS's answer to sign with ${name} failed its integrity check twice (${problem}); no signature was returned`, {
          details: { keyId: handle.id, check: problem },
        });
      }
    }
  }

  private toContractSignature(handle: HsmKeyHandle, signature: Uint8Array): Uint8Array {
    const info = algorithmInfo(handle.algorithm);
    if (info.family === 'ECDSA') {
      try {
        return ecdsaDerToRaw(signature, ecdsaComponentBytes(handle.algorithm));
      } catch (error) {
        throw new HsmError('SigningFailed', `Cloud KMS returned a malformed ECDSA signature for ${handle.ref}`, { cause: error, details: { keyId: handle.id } });
      }
    }
    if (signature.length !== info.signatureBytes) {
      throw new HsmError('SigningFailed', `Cloud KMS returned a ${signature.length}-byte signature for ${handle.ref}; ${handle.algorithm} signatures are ${info.signatureBytes} bytes`, {
        details: { keyId: handle.id },
      });
    }
    return new Uint8Array(signature);
  }

  async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options: SignOptions = {}): Promise<boolean> {
    throwIfAborted(options.signal);
    const handle = await this.resolve(key, options.signal);
    assertUsable(handle, 'verify');
    return verifyLocally(handle.algorithm, await this.publicKeyOf(handle, options.signal), data, signature);
  }

  async listKeys(options?: ListKeysOptions): Promise<KeyPage> {
    this.ready();
    const { prefix, limit, cursor } = normalizeListOptions(options);
    const position = decodeCursor(cursor);
    let pageToken = position.pageToken;
    let after = position.after;
    const chosen: ICryptoKey[] = [];
    let nextCursor: string | undefined;
    const matches = (k: ICryptoKey) => String(k.purpose) === 'ASYMMETRIC_SIGN' && this.idOf(String(k.name)).startsWith(prefix);
    outer: for (;;) {
      const token = pageToken;
      const [page, , response] = await this.call(
        `list keys of ${this.keyRingName}`,
        'Internal',
        (o) => this.kms.listCryptoKeys({ parent: this.keyRingName, pageSize: 1000, pageToken: token }, { ...o, autoPaginate: false }),
      );
      let items = page;
      if (after !== undefined) {
        const index = items.findIndex((k) => k.name === after);
        if (index >= 0) items = items.slice(index + 1);
        after = undefined;
      }
      const nextToken = response?.nextPageToken ?? '';
      for (let i = 0; i < items.length; i++) {
        const item = items[i]!;
        if (!matches(item)) continue;
        if (chosen.length === limit) {
          // another match follows on this page: resume right after the last key returned
          nextCursor = encodeCursor({ pageToken: token, after: String(chosen[chosen.length - 1]!.name) });
          break outer;
        }
        chosen.push(item);
      }
      if (!nextToken) break;
      if (chosen.length === limit) {
        nextCursor = encodeCursor({ pageToken: nextToken });
        break;
      }
      pageToken = nextToken;
    }
    const keys = await Promise.all(
      chosen.map(async (cryptoKey) => {
        const version = pickVersion(cryptoKey, await this.listVersions(String(cryptoKey.name)));
        if (!version || !contractAlgorithm(String(version.algorithm ?? ''))) return undefined;
        return this.toHandle(cryptoKey, version);
      }),
    );
    const listed = keys.filter((k): k is HsmKeyHandle => k !== undefined);
    return nextCursor ? { keys: listed, nextCursor } : { keys: listed };
  }

  /**
   * Scheduled destruction (Cloud KMS never deletes a CryptoKey). A handle or a version name
   * destroys that version; an id or CryptoKey name every version still able to sign, so the
   * key as a whole signs no more.
   */
  async destroyKey(key: KeyRef): Promise<void> {
    const handle = await this.resolve(key);
    assertNotGone(handle);
    const names = [handle.ref];
    if (typeof key === 'string' && !VERSION_NAME.test(key)) {
      const versions = await this.listVersions(handle.metadata.cryptoKey!, handle.id);
      for (const v of versions) {
        const state = String(v.state);
        if (v.name !== handle.ref && (state === 'ENABLED' || state === 'DISABLED')) names.push(String(v.name));
      }
    }
    for (const name of names) {
      await this.call(`destroy key version ${name}`, 'Internal', (o) => this.kms.destroyCryptoKeyVersion({ name }, o), { keyId: handle.id, idempotent: false });
    }
    this.forget(handle);
  }

  // ---------------------------------------------------------------------------------------------
  // calls

  /**
   * One Cloud KMS call under the concurrency limit, with the client's own retries off so that
   * one policy applies: RESOURCE_EXHAUSTED, UNAVAILABLE and (for idempotent calls)
   * DEADLINE_EXCEEDED are retried with exponential backoff and full jitter while the retry
   * budget lasts; a call gives up at most retryBudgetMs + requestTimeoutMs after it started.
   */
  private async call<T>(
    operation: string,
    fallback: HsmErrorCode,
    fn: (options: GaxCallOptions) => Promise<T>,
    context: { keyId?: string; signal?: AbortSignal; idempotent?: boolean; retry?: boolean } = {},
  ): Promise<T> {
    const budgetEnd = Date.now() + (context.retry === false ? 0 : this.options.retryBudgetMs);
    for (let attempt = 0; ; attempt++) {
      this.ready();
      throwIfAborted(context.signal);
      await this.limiter.acquire(context.signal);
      let failure: unknown;
      try {
        return await fn({ timeout: this.options.requestTimeoutMs, retry: null });
      } catch (error) {
        failure = error;
      } finally {
        this.limiter.release();
      }
      if (this.state === 'closed') throw new HsmError('Closed', `the Cloud KMS backend was closed during ${operation}`, { cause: failure });
      const code = grpcCode(failure);
      const retryable = code !== undefined && RETRYABLE_CODES.has(code) && (context.idempotent !== false || code !== 4 /* DEADLINE_EXCEEDED */);
      if (retryable) {
        const ceiling = Math.min(2000, 100 * 2 ** attempt);
        const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
        if (Date.now() + delay < budgetEnd) {
          this.retries++;
          await sleep(delay);
          continue;
        }
      }
      throw mapGcpError(failure, { operation, fallback, env: this.env, ...(context.keyId ? { keyId: context.keyId } : {}) });
    }
  }
}

/**
 * The version a CryptoKey name stands for: its primary when it has an enabled one (Cloud KMS
 * sets a primary only on symmetric keys, but emulators and future keys may), else the newest
 * enabled version; without one the newest of all, so that its state shows.
 */
function pickVersion(cryptoKey: ICryptoKey, versions: ICryptoKeyVersion[]): ICryptoKeyVersion | undefined {
  const primary = cryptoKey.primary?.name ? versions.find((v) => v.name === cryptoKey.primary!.name && String(v.state) === 'ENABLED') : undefined;
  return primary ?? versions.find((v) => String(v.state) === 'ENABLED') ?? versions[0];
}

function assertNotGone(handle: HsmKeyHandle): void {
  const state = handle.state ?? 'enabled';
  if (state === 'destroyed') throw new HsmError('KeyNotFound', `key ${handle.id} (${handle.ref}) was destroyed`, { details: { keyId: handle.id, state } });
  if (state !== 'enabled') throw new HsmError('KeyDisabled', `key ${handle.id} (${handle.ref}) is ${state}`, { details: { keyId: handle.id, state } });
}

/** What is wrong with a sign response, or undefined when every check passes. */
export function checkSignResponse(response: IAsymmetricSignResponse, name: string, byData: boolean): string | undefined {
  if (response.name !== name) return `answered for ${JSON.stringify(String(response.name ?? ''))}, not ${name}`;
  if (byData ? response.verifiedDataCrc32c !== true : response.verifiedDigestCrc32c !== true) {
    return byData ? 'the service did not confirm verifiedDataCrc32c' : 'the service did not confirm verifiedDigestCrc32c';
  }
  const signature = response.signature;
  if (!(signature instanceof Uint8Array) || signature.length === 0) return 'the answer holds no signature';
  const expected = int64Value(response.signatureCrc32c);
  if (expected === undefined) return 'the answer holds no signatureCrc32c';
  if (crc32c(signature) !== expected) return 'signatureCrc32c does not match the signature';
  return undefined;
}

export function checkPublicKey(response: IPublicKey, name: string): string | undefined {
  if (response.name !== name) return `answered for ${JSON.stringify(String(response.name ?? ''))}, not ${name}`;
  if (typeof response.pem !== 'string' || response.pem.length === 0) return 'the answer holds no PEM';
  const expected = int64Value(response.pemCrc32c);
  if (expected === undefined) return 'the answer holds no pemCrc32c';
  if (crc32c(response.pem) !== expected) return 'pemCrc32c does not match the PEM';
  return undefined;
}

/** The caller's labels: those stored as they are, and those encoded in olocus-labels-N. */
function callerLabels(raw: Record<string, string>): Record<string, string> {
  const labels = Object.fromEntries(Object.entries(raw).filter(([k]) => !k.startsWith(RESERVED_LABEL_PREFIX)));
  let hex = '';
  for (let i = 0; raw[`${LABELS.encodedLabels}-${i}`] !== undefined; i++) hex += raw[`${LABELS.encodedLabels}-${i}`];
  if (hex.length > 0) {
    try {
      const decoded = JSON.parse(Buffer.from(hex, 'hex').toString('utf8')) as unknown;
      if (typeof decoded === 'object' && decoded !== null) {
        for (const [k, v] of Object.entries(decoded)) if (typeof v === 'string') labels[k] = v;
      }
    } catch {
      // labels edited outside the library: keep what is readable
    }
  }
  return labels;
}

function parseUsages(value: string | undefined): KeyUsage[] {
  if (value === undefined) return ['sign', 'verify'];
  const parts = value.split('_').filter((p): p is KeyUsage => p === 'sign' || p === 'verify');
  return parts.length > 0 ? parts : ['verify'];
}

function versionNumber(name: string | null | undefined): number {
  const match = /\/cryptoKeyVersions\/(\d+)$/.exec(String(name ?? ''));
  return match ? Number(match[1]) : -1;
}

function timestampToDate(timestamp: protos.google.protobuf.ITimestamp | null | undefined): Date | undefined {
  if (!timestamp || timestamp.seconds === null || timestamp.seconds === undefined) return undefined;
  const seconds = Number(String(timestamp.seconds));
  if (!Number.isFinite(seconds) || seconds <= 0) return undefined;
  return new Date(seconds * 1000 + Math.floor((timestamp.nanos ?? 0) / 1e6));
}

interface Cursor {
  pageToken: string;
  after?: string;
}

function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify(cursor.after === undefined ? { p: cursor.pageToken } : { p: cursor.pageToken, a: cursor.after })).toString('base64url');
}

function decodeCursor(cursor: string | undefined): Cursor {
  if (cursor === undefined) return { pageToken: '' };
  try {
    const parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { p?: unknown; a?: unknown };
    if (typeof parsed.p !== 'string' || (parsed.a !== undefined && typeof parsed.a !== 'string')) throw new Error('shape');
    return parsed.a === undefined ? { pageToken: parsed.p } : { pageToken: parsed.p, after: parsed.a };
  } catch {
    throw new HsmError('InvalidArgument', 'cursor must be the nextCursor of a previous listKeys page of this backend', { details: { field: 'cursor' } });
  }
}

export { KEY_RING_NAME, CRYPTO_KEY_NAME, VERSION_NAME };
