import { HsmError } from '@olocus/hsm-core';

/**
 * `olocus-hsm init --backend aws-kms | aws-cloudhsm`: the flags and the backend section they make.
 * Free of AWS imports, so the CLI loads @olocus/hsm-backend-aws only when a config names it.
 * `--module`, `--token-label` and `--pin-file` are the existing PKCS#11 flags; aws-cloudhsm reads
 * them too. Credentials never go in the config: the SDK's default chain finds them.
 */
export { awsInitFlags } from './init-flags.js';

const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;

function invalid(flag: string, message: string): HsmError {
  return new HsmError('InvalidArgument', `${flag} ${message}`, { details: { field: flag } });
}

function text(flags: Record<string, unknown>, name: string, flag: string): string | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || raw.trim() === '') throw invalid(flag, 'must not be empty');
  return raw.trim();
}

function integer(flags: Record<string, unknown>, name: string, flag: string, min: number, max: number): number | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  const value = typeof raw === 'number' ? raw : Number(String(raw));
  if (!Number.isInteger(value) || value < min || value > max) throw invalid(flag, `must be an integer from ${min} to ${max}`);
  return value;
}

function common(flags: Record<string, unknown>, backend: string): Record<string, unknown> {
  const region = text(flags, 'region', '--region');
  if (!region) throw invalid('--region', `is required for --backend ${backend} (e.g. --region eu-west-1)`);
  if (!REGION.test(region)) throw invalid('--region', `must be an AWS region such as eu-west-1 (got ${JSON.stringify(region.slice(0, 60))})`);
  const options: Record<string, unknown> = { region };
  const endpoint = text(flags, 'endpoint', '--endpoint');
  if (endpoint !== undefined) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw invalid('--endpoint', `is not a URL: ${JSON.stringify(endpoint.slice(0, 200))}`);
    }
    if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username || url.password) throw invalid('--endpoint', 'must be an http(s) URL without credentials');
    options.endpoint = url.toString().replace(/\/$/, '');
  }
  const profile = text(flags, 'profile', '--profile');
  if (profile !== undefined) options.profile = profile;
  const requestTimeoutMs = integer(flags, 'requestTimeoutMs', '--request-timeout-ms', 100, 120_000);
  if (requestTimeoutMs !== undefined) options.requestTimeoutMs = requestTimeoutMs;
  return options;
}

/** Validates the init flags and builds `backend: { type: 'aws-kms' | 'aws-cloudhsm', options }` (no secrets). */
export function awsBackendConfig(flags: Record<string, unknown>): { type: string; options: Record<string, unknown> } {
  const backend = flags.backend === undefined ? 'aws-kms' : String(flags.backend);
  if (backend !== 'aws-kms' && backend !== 'aws-cloudhsm') throw invalid('--backend', `must be aws-kms or aws-cloudhsm here (got ${JSON.stringify(backend)})`);
  const options = common(flags, backend);
  if (backend === 'aws-kms') {
    for (const [name, flag] of [['clusterId', '--cluster-id'], ['module', '--module'], ['pinEnv', '--pin-env']] as const) {
      if (flags[name] !== undefined) throw invalid(flag, 'applies to --backend aws-cloudhsm, not aws-kms');
    }
    const accountId = text(flags, 'accountId', '--account-id');
    if (accountId !== undefined) {
      if (!/^\d{12}$/.test(accountId)) throw invalid('--account-id', 'must be a 12-digit AWS account id');
      options.accountId = accountId;
    }
    const aliasPrefix = text(flags, 'aliasPrefix', '--alias-prefix');
    if (aliasPrefix !== undefined) {
      if (!/^[A-Za-z0-9/_-]{1,64}\/$/.test(aliasPrefix) || aliasPrefix.startsWith('aws/')) throw invalid('--alias-prefix', "must be letters, digits, '/', '_' or '-', end with '/' and not start with 'aws/'");
      options.aliasPrefix = aliasPrefix;
    }
    const maxConcurrency = integer(flags, 'maxConcurrency', '--max-concurrency', 1, 1024);
    if (maxConcurrency !== undefined) options.maxConcurrency = maxConcurrency;
    const window = integer(flags, 'deletionWindowDays', '--deletion-window-days', 7, 30);
    if (window !== undefined) options.deletionWindowDays = window;
    return { type: 'aws-kms', options };
  }
  for (const [name, flag] of [['accountId', '--account-id'], ['aliasPrefix', '--alias-prefix'], ['deletionWindowDays', '--deletion-window-days']] as const) {
    if (flags[name] !== undefined) throw invalid(flag, 'applies to --backend aws-kms, not aws-cloudhsm');
  }
  const clusterId = text(flags, 'clusterId', '--cluster-id');
  if (!clusterId) throw invalid('--cluster-id', 'is required for --backend aws-cloudhsm (e.g. --cluster-id cluster-abcdefghijk)');
  if (!/^[A-Za-z0-9-]{1,64}$/.test(clusterId)) throw invalid('--cluster-id', 'must be a CloudHSM cluster id such as cluster-abcdefghijk');
  options.clusterId = clusterId;
  const pkcs11: Record<string, unknown> = {};
  const module = text(flags, 'module', '--module');
  if (!module) throw invalid('--module', 'is required for --backend aws-cloudhsm: the CloudHSM PKCS#11 library, e.g. /opt/cloudhsm/lib/libcloudhsm_pkcs11.so');
  if (!module.startsWith('/')) throw invalid('--module', 'must be an absolute path to the PKCS#11 library');
  pkcs11.libraryPath = module;
  const tokenLabel = text(flags, 'tokenLabel', '--token-label');
  if (tokenLabel !== undefined) pkcs11.tokenLabel = tokenLabel;
  const pinEnv = text(flags, 'pinEnv', '--pin-env');
  const pinFile = text(flags, 'pinFile', '--pin-file');
  if (pinEnv !== undefined && pinFile !== undefined) throw invalid('--pin-env', 'and --pin-file are alternatives: give one');
  if (pinEnv !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(pinEnv)) throw invalid('--pin-env', 'must be an environment variable name (the PIN itself never goes on the command line)');
  pkcs11.pin = pinFile !== undefined ? { file: pinFile } : { env: pinEnv ?? 'OLOCUS_HSM_PIN' };
  options.pkcs11 = pkcs11;
  return { type: 'aws-cloudhsm', options };
}
