import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { ClientSecretCredential, DefaultAzureCredential, type TokenCredential } from '@azure/identity';
import {
  CryptographyClient,
  KeyClient,
  parseKeyVaultKeyIdentifier,
  type JsonWebKey as AzureJwk,
  type KeyClientOptions,
  type KeyProperties,
  type KeyVaultKey,
  type SignatureAlgorithm,
} from '@azure/keyvault-keys';
import {
  HsmError,
  NAME_CODECS,
  algorithmInfo,
  assertAlgorithmSupported,
  assertSameInstance,
  assertUsable,
  isHsmError,
  isKeyAlgorithm,
  nodeHashName,
  normalizeKeySpec,
  normalizeListOptions,
  throwIfAborted,
  verifyLocally,
  type BackendContext,
  type BackendMetrics,
  type Capabilities,
  type ExportedKey,
  type FipsStatus,
  type HealthStatus,
  type HsmBackend,
  type HsmInfo,
  type HsmKeyHandle,
  type KeyAlgorithm,
  type KeyBackupCapability,
  type KeyPage,
  type KeyRef,
  type KeySpec,
  type KeyUsage,
  type ListKeysOptions,
  type PublicKeyInfo,
  type SignOptions,
} from '@olocus/hsm-core';
import { mapAzureError } from './errors.js';
import { isManagedHsmUrl, parseAzureOptions, type AzureBackendOptions, type AzureBackendOptionsInput } from './options.js';

export const AZURE_BACKEND_TYPE = 'azure-keyvault';

/** Tags the library writes on the keys it makes (Azure allows 15 tags per key). */
export const TAGS = {
  id: 'olocus-id',
  algorithm: 'olocus-alg',
  /** Exact expiry in ms: Key Vault keeps `exp` in whole seconds. */
  expiresAt: 'olocus-expires',
  labelPrefix: 'olocus-label.',
} as const;
const MAX_AZURE_TAGS = 15;

export const SUPPORTED_ALGORITHMS: readonly KeyAlgorithm[] = [
  'ECDSA_P256',
  'ECDSA_P384',
  'ECDSA_P521',
  'RSA_2048',
  'RSA_3072',
  'RSA_4096',
  'RSA_PSS_2048',
  'RSA_PSS_3072',
  'RSA_PSS_4096',
];

const codec = NAME_CODECS.azureKeyVault;
const AZURE_NAME = /^[0-9A-Za-z-]{1,127}$/;

export interface AzureBackendInit {
  context?: BackendContext;
  /** A ready credential (tests, applications with their own identity setup); overrides `options.credential`. */
  credential?: TokenCredential;
  /** Extra pipeline options for both clients (a custom httpClient, proxy settings...). */
  clientOptions?: Omit<KeyClientOptions, 'serviceVersion' | 'retryOptions' | 'disableChallengeResourceVerification'>;
}

interface ResolvedKey {
  key: KeyVaultKey;
  handle: HsmKeyHandle;
  spki: Uint8Array;
  fetchedAt: number;
}

/** Limits requests in flight; waiting callers queue in order. */
class Semaphore {
  private active = 0;
  private readonly queue: Array<() => void> = [];
  constructor(readonly max: number) {}
  get inUse(): number {
    return this.active;
  }
  get waiting(): number {
    return this.queue.length;
  }
  async acquire(): Promise<void> {
    if (this.active < this.max) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.queue.push(resolve));
  }
  release(): void {
    const next = this.queue.shift();
    if (next) next();
    else this.active--;
  }
}

function signatureAlgorithm(algorithm: KeyAlgorithm): SignatureAlgorithm {
  const info = algorithmInfo(algorithm);
  const bits = info.hash === 'SHA-256' ? '256' : info.hash === 'SHA-384' ? '384' : '512';
  if (info.family === 'ECDSA') return `ES${bits}` as SignatureAlgorithm;
  return `${info.padding === 'PSS' ? 'PS' : 'RS'}${bits}` as SignatureAlgorithm;
}

const b64url = (bytes: Uint8Array | undefined): string | undefined => (bytes ? Buffer.from(bytes).toString('base64url') : undefined);

/** SubjectPublicKeyInfo DER from the JWK the vault returns. */
function spkiFromJwk(jwk: AzureJwk): Uint8Array {
  const kty = String(jwk.kty ?? '');
  const nodeJwk = kty.startsWith('EC')
    ? { kty: 'EC', crv: jwk.crv, x: b64url(jwk.x), y: b64url(jwk.y) }
    : { kty: 'RSA', n: b64url(jwk.n), e: b64url(jwk.e) };
  return new Uint8Array(createPublicKey({ key: nodeJwk as import('node:crypto').JsonWebKey, format: 'jwk' }).export({ format: 'der', type: 'spki' }));
}

/** The algorithm a vault key can sign with; RSA padding is ours to choose, so it comes from the tag. */
function algorithmOfJwk(jwk: AzureJwk, tagged: string | undefined): KeyAlgorithm | undefined {
  const kty = String(jwk.kty ?? '');
  let fromKey: KeyAlgorithm | undefined;
  if (kty.startsWith('EC')) {
    fromKey = jwk.crv === 'P-256' ? 'ECDSA_P256' : jwk.crv === 'P-384' ? 'ECDSA_P384' : jwk.crv === 'P-521' ? 'ECDSA_P521' : undefined;
  } else if (kty.startsWith('RSA') && jwk.n) {
    let n = jwk.n;
    while (n.length > 0 && n[0] === 0) n = n.subarray(1);
    const bits = n.length * 8;
    fromKey = bits === 2048 ? 'RSA_2048' : bits === 3072 ? 'RSA_3072' : bits === 4096 ? 'RSA_4096' : undefined;
  }
  if (!fromKey) return undefined;
  // the tag is believed only where the key material agrees with it
  if (tagged && isKeyAlgorithm(tagged) && algorithmInfo(tagged).family === algorithmInfo(fromKey).family) {
    const t = algorithmInfo(tagged);
    const k = algorithmInfo(fromKey);
    if (t.curve === k.curve && t.modulusBits === k.modulusBits) return tagged;
  }
  return fromKey;
}

/** The Olocus id of a vault key: its tag when the name is the encoding of it, else the name itself. */
function idOf(name: string, tags: Record<string, string> | undefined): { id: string; managed: boolean } {
  const tagged = tags?.[TAGS.id];
  if (tagged !== undefined && codec.decode(name) === tagged) return { id: tagged, managed: true };
  return { id: name, managed: false };
}

function labelsOf(tags: Record<string, string> | undefined): Record<string, string> | undefined {
  if (!tags) return undefined;
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(tags)) if (k.startsWith(TAGS.labelPrefix)) labels[k.slice(TAGS.labelPrefix.length)] = v;
  return Object.keys(labels).length > 0 ? labels : undefined;
}

function usagesOf(ops: readonly string[] | undefined): KeyUsage[] {
  if (!ops) return ['sign', 'verify'];
  const usages: KeyUsage[] = [];
  if (ops.includes('sign')) usages.push('sign');
  if (ops.includes('verify')) usages.push('verify');
  return usages;
}

function expiryOf(properties: KeyProperties): Date | undefined {
  const exact = properties.tags?.[TAGS.expiresAt];
  const vault = properties.expiresOn;
  if (exact && vault) {
    const parsed = new Date(exact);
    // trust the exact tag only within the second the vault rounds to
    if (!Number.isNaN(parsed.getTime()) && Math.abs(parsed.getTime() - vault.getTime()) < 1000) return parsed;
  }
  return vault;
}

/**
 * Olocus HSM on Azure Key Vault (Standard/Premium) and Managed HSM. Keys are made and used by
 * the vault; messages are hashed here and the digest signed there. Verification is local with
 * the public key. A handle's `ref` is the versioned key id, so it keeps naming one key version.
 */
/** `ExportedKey.parameters.format` of an Azure Key Vault backup. */
export const AZURE_BACKUP_FORMAT = 'azure-keyvault-backup/v1';
/** Where an Azure backup blob can be restored (Microsoft's rule for Key Vault key backups). */
export const AZURE_RESTORE_SCOPE =
  'restorable only into a Key Vault (or, for Managed HSM blobs, a Managed HSM) in the same Azure geography and the same subscription as the vault it came from; the blob is encrypted by the service and cannot be read or used outside Azure';

export class AzureKeyVaultBackend implements HsmBackend {
  readonly type = AZURE_BACKEND_TYPE;
  readonly instanceId: string;
  readonly options: AzureBackendOptions;
  private readonly vaultUrl: string;
  private readonly managedHsm: boolean;
  private readonly init: AzureBackendInit;
  private state: 'new' | 'ready' | 'closed' = 'new';
  private keyClient?: KeyClient;
  private credential?: TokenCredential;
  private credentialType = 'DefaultAzureCredential';
  private secrets: string[] = [];
  private readonly gate: Semaphore;
  /** Resolved keys by versioned id and by "name:" + lower-case name (latest version). */
  private readonly cache = new Map<string, ResolvedKey>();
  /** One CryptographyClient per key version, made once. */
  private readonly cryptoClients = new Map<string, { name: string; client: CryptographyClient }>();
  private timeouts = 0;

  /**
   * Backup (method `provider-blob`): the vault's own protected backup of the key (`backupKey`), which
   * only a vault of the same Azure geography and subscription can restore (`restoreKeyBackup`).
   * See the README, "Backup".
   */
  readonly backup: KeyBackupCapability = {
    method: 'provider-blob',
    exportKey: (key, options) => this.exportForBackup(key, options),
    importKey: (exported, options) => this.importFromBackup(exported, options),
  };

  constructor(options: AzureBackendOptionsInput | AzureBackendOptions, init: AzureBackendInit = {}) {
    this.options = parseAzureOptions(options);
    this.init = init;
    const url = new URL(this.options.vaultUrl);
    this.vaultUrl = `https://${url.host.toLowerCase()}`;
    this.managedHsm = isManagedHsmUrl(this.vaultUrl);
    this.instanceId = `azure-keyvault:${this.vaultUrl}`;
    this.gate = new Semaphore(this.options.maxConcurrency);
  }

  private get hsmKeys(): boolean {
    return this.managedHsm || this.options.hsm;
  }

  async initialize(): Promise<void> {
    if (this.state === 'closed') throw new HsmError('Closed', 'the Azure Key Vault backend is closed');
    if (this.state === 'ready') return;
    this.credential = await this.makeCredential();
    this.keyClient = new KeyClient(this.vaultUrl, this.credential, this.clientOptions());
    this.state = 'ready';
  }

  private clientOptions(): KeyClientOptions {
    return {
      ...(this.init.clientOptions ?? {}),
      ...(this.options.serviceVersion ? { serviceVersion: this.options.serviceVersion } : {}),
      disableChallengeResourceVerification: this.options.disableChallengeResourceVerification,
      retryOptions: { maxRetries: this.options.maxRetries, retryDelayInMs: this.options.retryDelayMs, maxRetryDelayInMs: this.options.requestTimeoutMs },
    };
  }

  private async makeCredential(): Promise<TokenCredential> {
    if (this.init.credential) {
      this.credentialType = this.init.credential.constructor?.name || 'TokenCredential';
      return this.init.credential;
    }
    const cred = this.options.credential;
    if ('tenantId' in cred) {
      const read = this.init.context?.readSecret ?? (async () => {
        throw new HsmError('InvalidConfiguration', 'backend.options.credential.clientSecret: no secret reader in this context');
      });
      const secret = await read(cred.clientSecret, 'backend.options.credential.clientSecret');
      this.secrets.push(secret);
      this.credentialType = 'ClientSecretCredential';
      return new ClientSecretCredential(cred.tenantId, cred.clientId, secret, cred.authorityHost ? { authorityHost: cred.authorityHost } : {});
    }
    this.credentialType = 'DefaultAzureCredential';
    return new DefaultAzureCredential();
  }

  async close(): Promise<void> {
    this.state = 'closed';
    this.cache.clear();
    this.cryptoClients.clear();
    this.secrets = [];
  }

  private ready(): KeyClient {
    if (this.state === 'closed') throw new HsmError('Closed', 'the Azure Key Vault backend is closed');
    if (this.state !== 'ready' || !this.keyClient) throw new HsmError('NotInitialized', 'call initialize() before using the Azure Key Vault backend');
    return this.keyClient;
  }

  /**
   * Runs one vault call under the concurrency gate and the whole-operation deadline
   * (retries and Retry-After waits included), mapping every failure to an HsmError.
   */
  private async call<T>(action: string, keyId: string | undefined, signal: AbortSignal | undefined, fn: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    throwIfAborted(signal);
    // one timer per call, cleared when the call settles (AbortSignal.timeout would keep a timer
    // alive for the whole timeout after every call, thousands at a time under load)
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error(`no answer within requestTimeoutMs (${this.options.requestTimeoutMs} ms)`));
    }, this.options.requestTimeoutMs);
    const forward = () => controller.abort(signal?.reason);
    signal?.addEventListener('abort', forward, { once: true });
    await this.gate.acquire();
    try {
      return await fn(controller.signal);
    } catch (error) {
      if (timedOut) this.timeouts++;
      throw mapAzureError(error, {
        action,
        ...(keyId !== undefined ? { keyId } : {}),
        credentialType: this.credentialType,
        timeoutMs: this.options.requestTimeoutMs,
        timedOut,
        secrets: this.secrets,
      });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', forward);
      this.gate.release();
    }
  }

  async info(): Promise<HsmInfo> {
    this.ready();
    const kind = this.managedHsm ? 'Azure Key Vault Managed HSM' : `Azure Key Vault (${this.options.hsm ? 'Premium, HSM-protected keys' : 'software-protected keys'})`;
    return {
      backend: this.type,
      description: `${kind} ${this.vaultUrl}`,
      manufacturer: 'Microsoft',
      model: this.managedHsm ? 'Managed HSM' : 'Key Vault',
      details: { vaultUrl: this.vaultUrl, hsm: this.hsmKeys, managedHsm: this.managedHsm, serviceVersion: this.options.serviceVersion ?? 'SDK default' },
    };
  }

  async capabilities(): Promise<Capabilities> {
    this.ready();
    return {
      algorithms: [...SUPPORTED_ALGORITHMS],
      persistentKeys: true,
      hardwareBacked: this.hsmKeys,
      remoteVerify: false,
      maxConcurrency: this.options.maxConcurrency,
    };
  }

  async fipsStatus(): Promise<FipsStatus> {
    this.ready();
    if (this.managedHsm) {
      return {
        standard: 'FIPS 140-3',
        level: 3,
        approvedMode: true,
        evidence: 'provider-claim',
        eddsaValidated: false,
        notes: 'Microsoft documents Managed HSM pools as FIPS 140-3 Level 3 validated HSMs; this is the provider\'s claim, which the client cannot check.',
      };
    }
    if (this.options.hsm) {
      return {
        standard: 'FIPS 140-3',
        level: 3,
        approvedMode: true,
        evidence: 'provider-claim',
        eddsaValidated: false,
        notes: 'Microsoft documents HSM-protected keys (EC-HSM, RSA-HSM) in Key Vault Premium as kept in FIPS 140-3 Level 3 validated HSMs; this is the provider\'s claim, which the client cannot check. Keys on an older HSM platform (see the key\'s hsmPlatform in its metadata) were FIPS 140-2 Level 2; keys made outside the library without -HSM are software keys.',
      };
    }
    return {
      standard: 'none',
      level: 0,
      approvedMode: false,
      evidence: 'none',
      notes: 'software-protected keys (Key Vault Standard, or hsm: false): no HSM boundary is claimed. Set hsm: true on a Premium vault, or use a Managed HSM, for HSM-protected keys.',
    };
  }

  metrics(): BackendMetrics {
    return { pool: { size: this.gate.max, inUse: this.gate.inUse, waiting: this.gate.waiting, max: this.gate.max, timeouts: this.timeouts } };
  }

  async healthCheck(): Promise<HealthStatus> {
    const client = this.ready();
    const started = performance.now();
    try {
      await this.call('health check (list keys)', undefined, undefined, async (abortSignal) => {
        const pages = client.listPropertiesOfKeys({ abortSignal }).byPage({ maxPageSize: 1 });
        await pages.next();
      });
      return { healthy: true, latencyMs: performance.now() - started, message: `vault ${this.vaultUrl} answered`, details: { vaultUrl: this.vaultUrl } };
    } catch (error) {
      const e = error as HsmError;
      return { healthy: false, latencyMs: performance.now() - started, message: `${e.code}: ${e.message}`, details: { vaultUrl: this.vaultUrl, code: e.code } };
    }
  }

  // ---- keys ---------------------------------------------------------------------------------

  async generateKeyPair(spec: KeySpec): Promise<HsmKeyHandle> {
    const client = this.ready();
    const normalized = normalizeKeySpec(spec);
    if (normalized.algorithm === 'Ed25519') {
      throw new HsmError('UnsupportedAlgorithm', 'Azure Key Vault and Managed HSM have no Ed25519 keys; use ECDSA_P256 or an RSA algorithm, or another backend for Ed25519', {
        details: { field: 'algorithm', algorithm: 'Ed25519' },
      });
    }
    assertAlgorithmSupported(normalized.algorithm, SUPPORTED_ALGORITHMS, 'Azure Key Vault');
    const name = codec.encode(normalized.id);
    const tags: Record<string, string> = { [TAGS.id]: normalized.id, [TAGS.algorithm]: normalized.algorithm };
    if (normalized.expiresAt) tags[TAGS.expiresAt] = normalized.expiresAt.toISOString();
    for (const [k, v] of Object.entries(normalized.labels ?? {})) tags[`${TAGS.labelPrefix}${k}`] = v;
    if (Object.keys(tags).length > MAX_AZURE_TAGS) {
      throw new HsmError('InvalidArgument', `labels: Azure keeps at most ${MAX_AZURE_TAGS} tags per key and the library uses ${Object.keys(tags).length - Object.keys(normalized.labels ?? {}).length}; give at most ${MAX_AZURE_TAGS - (Object.keys(tags).length - Object.keys(normalized.labels ?? {}).length)} labels`, {
        details: { field: 'labels' },
      });
    }
    // createKey on an existing name adds a version: refuse instead, so an id names one key
    const existing = await this.fetchKey(name, undefined, normalized.id, undefined).catch((error: unknown) => {
      if (isHsmError(error, 'KeyNotFound')) return undefined;
      // a disabled key still holds the name
      if (isHsmError(error, 'KeyDisabled')) return true;
      throw error;
    });
    if (existing) throw new HsmError('KeyAlreadyExists', `key ${normalized.id} already exists in ${this.vaultUrl} (as ${name})`, { details: { keyId: normalized.id } });

    const info = algorithmInfo(normalized.algorithm);
    // Key Vault keeps `exp` in whole seconds: round up, the exact instant is in the tag and enforced here
    const expiresOn = normalized.expiresAt ? new Date(Math.ceil(normalized.expiresAt.getTime() / 1000) * 1000) : undefined;
    const keyOps = normalized.usages.map((u) => u) as Array<'sign' | 'verify'>;
    const common = { keyOps, tags, hsm: this.hsmKeys, ...(expiresOn ? { expiresOn } : {}) };
    const key = await this.call(`create key ${normalized.id}`, normalized.id, undefined, (abortSignal) =>
      info.family === 'ECDSA'
        ? client.createEcKey(name, { ...common, curve: info.curve as 'P-256' | 'P-384' | 'P-521', abortSignal })
        : client.createRsaKey(name, { ...common, keySize: info.modulusBits!, abortSignal }),
    );
    return { ...this.remember(key).handle };
  }

  /** GET a key (latest or one version) and cache it. */
  private async fetchKey(name: string, version: string | undefined, keyId: string, signal: AbortSignal | undefined): Promise<ResolvedKey> {
    const client = this.ready();
    const key = await this.call(`read key ${keyId}`, keyId, signal, (abortSignal) => client.getKey(name, { abortSignal, ...(version ? { version } : {}) }));
    return this.remember(key);
  }

  private remember(key: KeyVaultKey): ResolvedKey {
    const handle = this.handleOf(key);
    const resolved: ResolvedKey = { key, handle, spki: spkiFromJwk(key.key!), fetchedAt: Date.now() };
    const name = key.name.toLowerCase();
    // a bound on memory for processes that touch very many keys: they are simply read again
    if (this.cache.size > 30_000) this.cache.clear();
    if (this.cryptoClients.size > 10_000) this.cryptoClients.clear();
    this.cache.set(`ref:${key.id!}`, resolved);
    this.cache.set(`v:${name}/${key.properties.version ?? ''}`, resolved);
    this.cache.set(`name:${name}`, resolved);
    return resolved;
  }

  private handleOf(key: KeyVaultKey): HsmKeyHandle {
    const props = key.properties;
    const { id, managed } = idOf(key.name, props.tags);
    const algorithm = algorithmOfJwk(key.key ?? {}, managed ? props.tags?.[TAGS.algorithm] : undefined);
    if (!algorithm) {
      throw new HsmError('UnsupportedAlgorithm', `key ${key.name} in ${this.vaultUrl} is ${String(key.keyType)} ${key.key?.crv ?? ''}: not an algorithm of the library (EC P-256/P-384/P-521, RSA 2048/3072/4096)`, {
        details: { keyId: key.name },
      });
    }
    const expiresAt = expiryOf(props);
    const labels = managed ? labelsOf(props.tags) : undefined;
    return {
      id,
      ref: key.id!,
      algorithm,
      usages: usagesOf(key.keyOperations),
      ...(props.createdOn ? { createdAt: props.createdOn } : {}),
      ...(expiresAt ? { expiresAt } : {}),
      backend: this.type,
      instance: this.instanceId,
      state: props.enabled === false ? 'disabled' : 'enabled',
      ...(labels ? { labels } : {}),
      metadata: {
        vaultUrl: this.vaultUrl,
        name: key.name,
        version: props.version ?? '',
        keyType: String(key.keyType ?? ''),
        protection: String(key.keyType ?? '').endsWith('-HSM') ? 'hsm' : 'software',
        managedByOlocus: String(managed),
        // which HSM generation holds the key (Microsoft: older Premium platforms are FIPS 140-2 level 2)
        ...(props.hsmPlatform ? { hsmPlatform: props.hsmPlatform } : {}),
      },
    };
  }

  /** Where a key reference points: a name and, for refs and versioned ids, a version. */
  private targetsOf(key: KeyRef): Array<{ name: string; version?: string; label: string }> {
    assertSameInstance(key, this.instanceId);
    const text = typeof key === 'string' ? key : key.ref;
    if (typeof key !== 'string' || /^https:\/\//i.test(text)) {
      let parsed: { vaultUrl: string; name: string; version?: string };
      try {
        parsed = parseKeyVaultKeyIdentifier(text);
      } catch {
        throw new HsmError('InvalidArgument', `key reference ${JSON.stringify(text.slice(0, 200))} is not a Key Vault key id (https://VAULT/keys/NAME[/VERSION])`, { details: { field: 'key' } });
      }
      if (`https://${new URL(parsed.vaultUrl).host.toLowerCase()}` !== this.vaultUrl) {
        throw new HsmError('InvalidArgument', `key id ${JSON.stringify(text.slice(0, 200))} belongs to another vault than ${this.vaultUrl}`, { details: { field: 'key' } });
      }
      return [{ name: parsed.name, ...(parsed.version ? { version: parsed.version } : {}), label: text }];
    }
    const targets: Array<{ name: string; label: string }> = [];
    let encoded: string | undefined;
    try {
      encoded = codec.encode(text);
      targets.push({ name: encoded, label: text });
    } catch {
      // not an Olocus id: maybe the name of a key made outside the library
    }
    if (AZURE_NAME.test(text) && text.toLowerCase() !== encoded?.toLowerCase()) targets.push({ name: text, label: text });
    if (targets.length === 0) throw new HsmError('KeyNotFound', `no key ${JSON.stringify(text.slice(0, 200))} in ${this.vaultUrl}`, { details: { keyId: text.slice(0, 200) } });
    return targets;
  }

  /** Resolves a reference to an active key, from the cache while it is fresh. */
  private async resolve(key: KeyRef, signal?: AbortSignal): Promise<ResolvedKey> {
    this.ready();
    const now = Date.now();
    if (typeof key !== 'string') {
      assertSameInstance(key, this.instanceId);
      // the hot path: a handle names its versioned key id
      const hit = this.cache.get(`ref:${key.ref}`);
      if (hit && now - hit.fetchedAt < this.options.keyCacheTtlMs) return hit;
    }
    const targets = this.targetsOf(key);
    let lastError: unknown;
    for (const target of targets) {
      const cached = this.cache.get(target.version ? `v:${target.name.toLowerCase()}/${target.version}` : `name:${target.name.toLowerCase()}`);
      if (cached && now - cached.fetchedAt < this.options.keyCacheTtlMs) return cached;
      try {
        return await this.fetchKey(target.name, target.version, target.label, signal);
      } catch (error) {
        lastError = error;
        if ((error as HsmError).code !== 'KeyNotFound') throw error;
      }
    }
    const label = typeof key === 'string' ? key : key.ref;
    throw new HsmError('KeyNotFound', `no key ${JSON.stringify(label.slice(0, 200))} in ${this.vaultUrl}`, { cause: lastError, details: { keyId: label.slice(0, 200) } });
  }

  private evict(name: string): void {
    const lower = name.toLowerCase();
    for (const [k, v] of this.cache) if (v.key.name.toLowerCase() === lower) this.cache.delete(k);
    for (const [k, v] of this.cryptoClients) if (v.name.toLowerCase() === lower) this.cryptoClients.delete(k);
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    try {
      return { ...(await this.resolve(key)).handle };
    } catch (error) {
      if ((error as HsmError).code !== 'KeyNotFound') throw error;
      // a soft-deleted key still shows, with its state, until it is purged
      const deleted = await this.findDeleted(key);
      if (deleted) return deleted;
      throw error;
    }
  }

  private async findDeleted(key: KeyRef): Promise<HsmKeyHandle | undefined> {
    const client = this.ready();
    for (const target of this.targetsOf(key)) {
      try {
        const deleted = await this.call(`read deleted key ${target.label}`, target.label, undefined, (abortSignal) => client.getDeletedKey(target.name, { abortSignal }));
        if (target.version && deleted.properties.version !== target.version) continue;
        return { ...this.handleOf(deleted), state: 'pending-deletion' };
      } catch (error) {
        if ((error as HsmError).code !== 'KeyNotFound') throw error;
      }
    }
    return undefined;
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    const resolved = await this.resolve(key);
    return { algorithm: resolved.handle.algorithm, spki: resolved.spki };
  }

  async sign(key: KeyRef, data: Uint8Array, options: SignOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    const resolved = await this.resolve(key, options.signal);
    assertUsable(resolved.handle, 'sign');
    const digest = createHash(nodeHashName(algorithmInfo(resolved.handle.algorithm).hash!)).update(data).digest();
    return this.signDigest(resolved, digest, options.signal);
  }

  async signStream(key: KeyRef, chunks: AsyncIterable<Uint8Array>, options: SignOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    const resolved = await this.resolve(key, options.signal);
    assertUsable(resolved.handle, 'sign');
    const hash = createHash(nodeHashName(algorithmInfo(resolved.handle.algorithm).hash!));
    for await (const chunk of chunks) hash.update(chunk);
    return this.signDigest(resolved, hash.digest(), options.signal);
  }

  private cryptoClientFor(resolved: ResolvedKey): CryptographyClient {
    const id = resolved.key.id!;
    const known = this.cryptoClients.get(id);
    if (known) return known.client;
    // built from the key we hold, so the SDK does not fetch it again
    const client = new CryptographyClient(resolved.key, this.credential!, this.clientOptions());
    this.cryptoClients.set(id, { name: resolved.key.name, client });
    return client;
  }

  private async signDigest(resolved: ResolvedKey, digest: Uint8Array, signal?: AbortSignal): Promise<Uint8Array> {
    const { handle } = resolved;
    const client = this.cryptoClientFor(resolved);
    const result = await this.call(`sign with key ${handle.id}`, handle.id, signal, (abortSignal) => client.sign(signatureAlgorithm(handle.algorithm), digest, { abortSignal }));
    const signature = new Uint8Array(result.result);
    const expected = algorithmInfo(handle.algorithm).signatureBytes;
    if (signature.length !== expected) {
      throw new HsmError('SigningFailed', `sign with key ${handle.id}: the vault returned ${signature.length} bytes, expected ${expected} for ${handle.algorithm}`, {
        details: { keyId: handle.id },
      });
    }
    return signature;
  }

  async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options: SignOptions = {}): Promise<boolean> {
    throwIfAborted(options.signal);
    const resolved = await this.resolve(key, options.signal);
    assertUsable(resolved.handle, 'verify');
    return verifyLocally(resolved.handle.algorithm, resolved.spki, data, signature);
  }

  async listKeys(options?: ListKeysOptions): Promise<KeyPage> {
    const client = this.ready();
    const { prefix, limit, cursor } = normalizeListOptions(options);
    // The vault lists in its own order and filters nothing: walk all pages, keep the library's
    // keys (and, with listForeignKeys, the others under their names).
    const names = await this.call('list keys', undefined, undefined, async (abortSignal) => {
      const found: Array<{ id: string; name: string }> = [];
      for await (const props of client.listPropertiesOfKeys({ abortSignal })) {
        const { id, managed } = idOf(props.name, props.tags);
        if ((!managed && !this.options.listForeignKeys) || !id.startsWith(prefix) || (cursor !== undefined && id <= cursor)) continue;
        found.push({ id, name: props.name });
      }
      return found;
    });
    names.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const page = names.slice(0, limit);
    // the list gives no versioned id nor key material: read each key of the page
    const keys = await Promise.all(
      page.map((entry) =>
        this.fetchKey(entry.name, undefined, entry.id, undefined).then(
          (resolved) => ({ ...resolved.handle }),
          (error: unknown) => {
            // deleted between the list and the read, or a foreign algorithm: not listed
            if (isHsmError(error, 'KeyNotFound') || isHsmError(error, 'UnsupportedAlgorithm')) return undefined;
            throw error;
          },
        ),
      ),
    );
    const listed = keys.filter((k): k is HsmKeyHandle => k !== undefined);
    return names.length > limit ? { keys: listed, nextCursor: page[page.length - 1]!.id } : { keys: listed };
  }

  /**
   * The vault's protected backup of a key (all its versions): an opaque blob only a vault of the
   * same Azure geography and subscription can restore. Not part of the backend contract.
   */
  async backupKey(key: KeyRef): Promise<Uint8Array> {
    const client = this.ready();
    const resolved = await this.resolve(key);
    const blob = await this.call(`back up key ${resolved.handle.id}`, resolved.handle.id, undefined, (abortSignal) => client.backupKey(resolved.key.name, { abortSignal }));
    if (!blob || blob.length === 0) throw new HsmError('Internal', `back up key ${resolved.handle.id}: the vault returned no backup`, { details: { keyId: resolved.handle.id } });
    return blob;
  }

  private async exportForBackup(key: KeyRef, options: { signal?: AbortSignal } = {}): Promise<ExportedKey> {
    throwIfAborted(options.signal);
    const resolved = await this.resolve(key, options.signal);
    const blob = await this.backupKey(resolved.handle.ref);
    const { handle } = resolved;
    return {
      method: 'provider-blob',
      id: handle.id,
      algorithm: handle.algorithm,
      usages: [...handle.usages],
      publicKeySpki: new Uint8Array(resolved.spki),
      blob,
      parameters: {
        format: AZURE_BACKUP_FORMAT,
        provider: 'azure-keyvault',
        vaultUrl: this.vaultUrl,
        name: resolved.key.name,
        keyId: handle.ref,
        version: handle.metadata.version ?? '',
        keyType: handle.metadata.keyType ?? '',
        protection: handle.metadata.protection ?? '',
        // all versions of the key are in the blob, not only the one exported
        contents: 'every version of the key, its tags and attributes, encrypted by the service',
        restoreScope: AZURE_RESTORE_SCOPE,
      },
    };
  }

  private async importFromBackup(exported: ExportedKey, options: { id?: string; signal?: AbortSignal } = {}): Promise<HsmKeyHandle> {
    this.ready();
    throwIfAborted(options.signal);
    if (!exported || typeof exported !== 'object') throw new HsmError('InvalidArgument', 'exported must be an ExportedKey', { details: { field: 'exported' } });
    if (exported.method !== 'provider-blob' || exported.parameters?.provider !== 'azure-keyvault') {
      throw new HsmError('InvalidArgument', `a '${String(exported.method)}' export${exported.parameters?.provider ? ` of ${exported.parameters.provider}` : ''} cannot be restored into Azure Key Vault; it restores its own backupKey blobs (method 'provider-blob', provider 'azure-keyvault')`, {
        details: { field: 'exported.method' },
      });
    }
    if (!(exported.blob instanceof Uint8Array) || exported.blob.length === 0) throw new HsmError('InvalidArgument', 'a provider-blob export needs its blob', { details: { field: 'exported.blob' } });
    if (options.id !== undefined && options.id !== exported.id) {
      throw new HsmError('InvalidArgument', `Azure restores a key under the name inside its backup blob (${exported.id}); it cannot restore it as ${options.id}`, { details: { field: 'id' } });
    }
    let restored: HsmKeyHandle;
    try {
      restored = await this.restoreKey(exported.blob);
    } catch (error) {
      if (isHsmError(error, 'InvalidArgument')) {
        throw new HsmError('IntegrityError', `the vault refused the backup blob of ${exported.id}: it is altered, or was made in another Azure geography or subscription (${AZURE_RESTORE_SCOPE}) — ${error.message}`, {
          cause: error,
          details: { keyId: exported.id, vaultUrl: this.vaultUrl },
        });
      }
      throw error;
    }
    const spki = Buffer.from((await this.getPublicKey(restored.ref)).spki);
    let proved = restored.id === exported.id && restored.algorithm === exported.algorithm && spki.equals(Buffer.from(exported.publicKeySpki ?? []));
    if (proved) {
      // the vault signs a fresh challenge with the restored key; the exported public key must verify it
      const challenge = randomBytes(32);
      proved = verifyLocally(exported.algorithm, exported.publicKeySpki, challenge, await this.sign(restored.ref, challenge));
    }
    if (!proved) {
      // the restored key is not the exported one (a swapped blob): it must not stay under that name
      await this.destroyKey(restored.ref).catch(() => undefined);
      throw new HsmError('IntegrityError', `the key restored from the blob of ${exported.id} is ${restored.id} with another public key than the export names; it was deleted again`, {
        details: { keyId: exported.id, restored: restored.id },
      });
    }
    return restored;
  }

  /** Restores a backup made by `backupKey`; the name must be free (purged) in this vault. */
  async restoreKey(backup: Uint8Array): Promise<HsmKeyHandle> {
    const client = this.ready();
    if (!(backup instanceof Uint8Array) || backup.length === 0) throw new HsmError('InvalidArgument', 'backup must be the non-empty bytes backupKey returned', { details: { field: 'backup' } });
    const key = await this.call('restore key backup', undefined, undefined, (abortSignal) => client.restoreKeyBackup(backup, { abortSignal }));
    this.evict(key.name);
    return { ...this.remember(key).handle };
  }

  async destroyKey(key: KeyRef): Promise<void> {
    const client = this.ready();
    const resolved = await this.resolve(key);
    const name = resolved.key.name;
    const id = resolved.handle.id;
    this.evict(name);
    await this.call(`delete key ${id}`, id, undefined, async (abortSignal) => {
      const poller = await client.beginDeleteKey(name, { abortSignal, intervalInMs: 200 });
      await poller.pollUntilDone({ abortSignal });
    });
    if (this.options.purgeOnDestroy) {
      await this.call(`purge key ${id}`, id, undefined, (abortSignal) => client.purgeDeletedKey(name, { abortSignal }));
    }
    this.evict(name);
  }
}
