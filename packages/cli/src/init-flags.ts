/**
 * The `init` flags of the cloud backends, as data only: main.ts registers them on the command
 * tree at start-up, which must not load core or any backend (bin.js stays light). The builders
 * that validate them live in init-aws.ts, init-azure.ts and init-gcp.ts.
 */

export interface InitFlag {
  flags: string;
  description: string;
}

/** Backend types `init` sets up from flags besides software and pkcs11, each from its own package. */
export const CLOUD_INIT_BACKENDS = ['aws-kms', 'aws-cloudhsm', 'azure-keyvault', 'gcp-kms'] as const;
export type CloudInitBackend = (typeof CLOUD_INIT_BACKENDS)[number];

export const awsInitFlags: InitFlag[] = [
  { flags: '--region <region>', description: 'aws-kms / aws-cloudhsm: AWS region, e.g. eu-west-1' },
  { flags: '--endpoint <url>', description: 'aws-kms / aws-cloudhsm: another API endpoint (VPC or FIPS endpoint)' },
  { flags: '--profile <name>', description: 'aws-kms / aws-cloudhsm: shared-config profile (credentials come from the SDK default chain, never the config)' },
  { flags: '--account-id <id>', description: 'aws-kms: the 12-digit account (default: read from alias ARNs)' },
  { flags: '--alias-prefix <prefix>', description: "aws-kms: aliases are alias/<prefix><id> (default 'olocus/')" },
  { flags: '--max-concurrency <n>', description: 'aws-kms: requests in flight at once (default 64)' },
  { flags: '--request-timeout-ms <ms>', description: 'aws-kms / aws-cloudhsm: bound on one HTTP attempt (default 5000)' },
  { flags: '--deletion-window-days <days>', description: 'aws-kms: ScheduleKeyDeletion window, 7-30 (default 30)' },
  { flags: '--cluster-id <id>', description: 'aws-cloudhsm: the CloudHSM cluster (cluster-...)' },
  { flags: '--pin-env <VAR>', description: 'aws-cloudhsm: environment variable holding the crypto user as user:password (default OLOCUS_HSM_PIN)' },
];

export const azureInitFlags: InitFlag[] = [
  { flags: '--vault-url <url>', description: 'Key Vault (https://NAME.vault.azure.net) or Managed HSM (https://NAME.managedhsm.azure.net) URL' },
  { flags: '--hsm', description: 'create HSM-protected keys (EC-HSM/RSA-HSM; Key Vault Premium). A Managed HSM always does' },
  { flags: '--service-version <version>', description: 'Key Vault API version (7.2-7.6 or 2025-07-01; default: the SDK\'s newest)' },
  { flags: '--max-concurrency <n>', description: 'requests to the vault in flight at once (default 64)' },
  { flags: '--request-timeout-ms <ms>', description: 'bound on one operation, retries and Retry-After waits included (default 30000)' },
  { flags: '--purge-on-destroy', description: 'purge keys after the soft delete when they are destroyed (default: soft delete only)' },
  { flags: '--tenant-id <id>', description: 'service principal tenant (default: DefaultAzureCredential: environment, workload or managed identity, Azure CLI)' },
  { flags: '--client-id <id>', description: 'service principal application (client) id' },
  { flags: '--client-secret-env <VAR>', description: 'environment variable holding the service principal secret (never the secret itself)' },
  { flags: '--client-secret-file <path>', description: 'file holding the service principal secret' },
];

export const gcpInitFlags: InitFlag[] = [
  { flags: '--project <id>', description: 'gcp-kms: Google Cloud project that holds the key ring' },
  { flags: '--location <location>', description: 'gcp-kms: Cloud KMS location, e.g. us-east1, europe-west1 or global' },
  { flags: '--key-ring <id>', description: 'gcp-kms: key ring id (not its full name)' },
  { flags: '--protection-level <level>', description: 'gcp-kms: HSM (default, Cloud HSM) or SOFTWARE' },
  { flags: '--create-key-ring', description: 'gcp-kms: create the key ring when it is missing (key rings cannot be deleted)' },
  { flags: '--destroy-scheduled-duration <duration>', description: 'gcp-kms: how long a destroyed key version stays recoverable, e.g. 30d or 48h (24h-120d; Cloud KMS default 30d)' },
  { flags: '--api-endpoint <host>', description: 'gcp-kms: another API host (a regional or private endpoint)' },
  { flags: '--emulator <host:port>', description: 'gcp-kms: a Cloud KMS emulator on this machine (plaintext gRPC, no credentials; loopback only)' },
  { flags: '--max-concurrency <n>', description: 'gcp-kms: requests in flight at once (default 64)' },
  { flags: '--request-timeout-ms <ms>', description: 'gcp-kms: deadline of one attempt of one call (default 10000)' },
];

/** The cloud flags once each (several backends share --max-concurrency and --request-timeout-ms), with the backends that take them. */
export interface MergedInitFlag extends InitFlag {
  /** The long flag as typed, e.g. `--key-ring`. */
  long: string;
  /** The option name commander gives it, e.g. `keyRing`. */
  attribute: string;
  backends: CloudInitBackend[];
}

const OWNERS: readonly (readonly [InitFlag[], readonly CloudInitBackend[]])[] = [
  [awsInitFlags, ['aws-kms', 'aws-cloudhsm']],
  [azureInitFlags, ['azure-keyvault']],
  [gcpInitFlags, ['gcp-kms']],
];

/** Descriptions of flags that more than one cloud takes (each package documents its own default). */
const SHARED_DESCRIPTIONS: Record<string, string> = {
  '--max-concurrency': 'aws-kms, azure-keyvault, gcp-kms: requests in flight at once (default 64)',
  '--request-timeout-ms': 'aws-kms / aws-cloudhsm (default 5000), azure-keyvault (30000), gcp-kms (10000): bound on one request attempt',
};

export function mergedCloudInitFlags(): MergedInitFlag[] {
  const byLong = new Map<string, MergedInitFlag>();
  for (const [flags, backends] of OWNERS) {
    for (const f of flags) {
      const long = f.flags.split(' ')[0]!;
      const seen = byLong.get(long);
      if (seen) {
        for (const b of backends) if (!seen.backends.includes(b)) seen.backends.push(b);
        seen.description = SHARED_DESCRIPTIONS[long] ?? `${seen.description}; ${f.description}`;
        continue;
      }
      const attribute = long.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
      const description = /^(aws|azure|gcp)-/.test(f.description) ? f.description : `${backends.join(' / ')}: ${f.description}`;
      byLong.set(long, { flags: f.flags, description, long, attribute, backends: [...backends] });
    }
  }
  return [...byLong.values()];
}
