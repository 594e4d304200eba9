import { HsmError } from '@olocus/hsm-core';

/**
 * `olocus-hsm init --backend azure-keyvault`: the flags and the backend section they make. Kept
 * free of Azure imports so the CLI loads @olocus/hsm-backend-azure only when a config names it.
 */
export { azureInitFlags } from './init-flags.js';

const SERVICE_VERSIONS = ['7.2', '7.3', '7.4', '7.5', '7.6', '2025-07-01'];

function invalid(flag: string, message: string): HsmError {
  return new HsmError('InvalidArgument', `${flag} ${message}`, { details: { field: flag } });
}

function integer(flags: Record<string, unknown>, name: string, flag: string, min: number, max: number): number | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  const value = typeof raw === 'number' ? raw : Number(String(raw));
  if (!Number.isInteger(value) || value < min || value > max) throw invalid(flag, `must be an integer from ${min} to ${max}`);
  return value;
}

function text(flags: Record<string, unknown>, name: string, flag: string): string | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || raw.trim() === '') throw invalid(flag, 'must not be empty');
  return raw.trim();
}

/** Validates the init flags and builds `backend: { type: 'azure-keyvault', options }` (no secrets). */
export function azureBackendConfig(flags: Record<string, unknown>): { type: string; options: Record<string, unknown> } {
  const vaultUrl = text(flags, 'vaultUrl', '--vault-url');
  if (!vaultUrl) throw invalid('--vault-url', 'is required for --backend azure-keyvault (https://NAME.vault.azure.net or https://NAME.managedhsm.azure.net)');
  let url: URL;
  try {
    url = new URL(vaultUrl);
  } catch {
    throw invalid('--vault-url', `is not a URL: ${JSON.stringify(vaultUrl.slice(0, 200))}`);
  }
  if (url.protocol !== 'https:' || (url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username || url.password) {
    throw invalid('--vault-url', 'must be an https URL with no path, e.g. https://NAME.vault.azure.net');
  }
  const options: Record<string, unknown> = { vaultUrl: `https://${url.host.toLowerCase()}` };
  if (flags.hsm !== undefined) options.hsm = Boolean(flags.hsm);
  const serviceVersion = text(flags, 'serviceVersion', '--service-version');
  if (serviceVersion !== undefined) {
    if (!SERVICE_VERSIONS.includes(serviceVersion)) throw invalid('--service-version', `must be one of ${SERVICE_VERSIONS.join(', ')}`);
    options.serviceVersion = serviceVersion;
  }
  const maxConcurrency = integer(flags, 'maxConcurrency', '--max-concurrency', 1, 1024);
  if (maxConcurrency !== undefined) options.maxConcurrency = maxConcurrency;
  const requestTimeoutMs = integer(flags, 'requestTimeoutMs', '--request-timeout-ms', 100, 600_000);
  if (requestTimeoutMs !== undefined) options.requestTimeoutMs = requestTimeoutMs;
  if (flags.purgeOnDestroy !== undefined) options.purgeOnDestroy = Boolean(flags.purgeOnDestroy);

  const tenantId = text(flags, 'tenantId', '--tenant-id');
  const clientId = text(flags, 'clientId', '--client-id');
  const secretEnv = text(flags, 'clientSecretEnv', '--client-secret-env');
  const secretFile = text(flags, 'clientSecretFile', '--client-secret-file');
  const anyPrincipal = tenantId ?? clientId ?? secretEnv ?? secretFile;
  if (anyPrincipal !== undefined) {
    if (!tenantId || !clientId) throw invalid(tenantId ? '--client-id' : '--tenant-id', 'is required with a service principal (--tenant-id, --client-id and --client-secret-env or --client-secret-file)');
    if ((secretEnv === undefined) === (secretFile === undefined)) throw invalid('--client-secret-env', 'or --client-secret-file (exactly one) names where the service principal secret is read from');
    if (secretEnv !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(secretEnv)) throw invalid('--client-secret-env', 'must be an environment variable name');
    options.credential = { tenantId, clientId, clientSecret: secretEnv !== undefined ? { env: secretEnv } : { file: secretFile } };
  }
  return { type: 'azure-keyvault', options };
}
