import { HsmError } from '@olocus/hsm-core';

/**
 * `olocus-hsm init --backend gcp-kms`: the flags and the backend section they make. Free of
 * Google imports, so the CLI loads @olocus/hsm-backend-gcp only when a config names it.
 * Credentials never go in the config: Application Default Credentials find them
 * (GOOGLE_APPLICATION_CREDENTIALS, gcloud, workload identity, the metadata server).
 */
export { gcpInitFlags } from './init-flags.js';

const PROJECT = /^(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$/;
const LOCATION = /^[a-z0-9-]{1,63}$/;
const KEY_RING = /^[a-zA-Z0-9_-]{1,63}$/;
const HOST = /^[A-Za-z0-9.-]{1,253}$/;
const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3})$/;

function invalid(flag: string, message: string): HsmError {
  return new HsmError('InvalidArgument', `${flag} ${message}`, { details: { field: flag } });
}

const shown = (value: string) => JSON.stringify(value.slice(0, 80));

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

/** Validates the init flags and builds `backend: { type: 'gcp-kms', options }` (no secrets). */
export function gcpBackendConfig(flags: Record<string, unknown>): { type: string; options: Record<string, unknown> } {
  if (flags.backend !== undefined && flags.backend !== 'gcp-kms') throw invalid('--backend', `must be gcp-kms here (got ${shown(String(flags.backend))})`);
  const projectId = text(flags, 'project', '--project');
  if (!projectId) throw invalid('--project', 'is required for --backend gcp-kms (the Google Cloud project id, e.g. --project my-project)');
  if (!PROJECT.test(projectId)) throw invalid('--project', `must be a Google Cloud project id: 6-30 lower-case letters, digits and hyphens (got ${shown(projectId)})`);
  const location = text(flags, 'location', '--location');
  if (!location) throw invalid('--location', 'is required for --backend gcp-kms (e.g. --location us-east1)');
  if (!LOCATION.test(location)) throw invalid('--location', `must be a Cloud KMS location such as us-east1 or global (got ${shown(location)})`);
  const keyRing = text(flags, 'keyRing', '--key-ring');
  if (!keyRing) throw invalid('--key-ring', 'is required for --backend gcp-kms (the key ring id, e.g. --key-ring olocus)');
  if (!KEY_RING.test(keyRing)) throw invalid('--key-ring', `must be a key ring id: 1-63 letters, digits, "_" or "-" (got ${shown(keyRing)})`);
  const options: Record<string, unknown> = { projectId, location, keyRing };

  const level = text(flags, 'protectionLevel', '--protection-level');
  if (level !== undefined) {
    const upper = level.toUpperCase();
    if (upper !== 'HSM' && upper !== 'SOFTWARE') throw invalid('--protection-level', `must be HSM or SOFTWARE (got ${shown(level)})`);
    options.protectionLevel = upper;
  }
  if (flags.createKeyRing !== undefined) {
    if (typeof flags.createKeyRing !== 'boolean') throw invalid('--create-key-ring', 'takes no value');
    if (flags.createKeyRing) options.createKeyRing = true;
  }
  const duration = text(flags, 'destroyScheduledDuration', '--destroy-scheduled-duration');
  if (duration !== undefined) {
    const match = /^(\d+)(s|h|d)$/.exec(duration);
    const seconds = match ? Number(match[1]) * (match[2] === 'd' ? 86400 : match[2] === 'h' ? 3600 : 1) : NaN;
    if (!(seconds >= 86400 && seconds <= 120 * 86400)) throw invalid('--destroy-scheduled-duration', `must be from 24h to 120d, written like 30d, 48h or 86400s (got ${shown(duration)})`);
    options.destroyScheduledDuration = duration;
  }
  const apiEndpoint = text(flags, 'apiEndpoint', '--api-endpoint');
  const emulator = text(flags, 'emulator', '--emulator');
  if (apiEndpoint !== undefined && emulator !== undefined) throw invalid('--emulator', 'cannot be combined with --api-endpoint');
  if (apiEndpoint !== undefined) {
    if (!HOST.test(apiEndpoint)) throw invalid('--api-endpoint', `must be a host name without scheme, port or path (got ${shown(apiEndpoint)})`);
    options.apiEndpoint = apiEndpoint;
  }
  if (emulator !== undefined) {
    const match = /^([^:]+):(\d{1,5})$/.exec(emulator);
    const port = match ? Number(match[2]) : NaN;
    if (!match || !LOOPBACK.test(match[1]!) || !(port >= 1 && port <= 65535)) {
      throw invalid('--emulator', `must be a loopback host:port such as 127.0.0.1:9090 (calls go in plaintext without credentials) (got ${shown(emulator)})`);
    }
    Object.assign(options, { apiEndpoint: match[1], port, insecure: true });
  }
  const maxConcurrency = integer(flags, 'maxConcurrency', '--max-concurrency', 1, 1024);
  if (maxConcurrency !== undefined) options.maxConcurrency = maxConcurrency;
  const requestTimeoutMs = integer(flags, 'requestTimeoutMs', '--request-timeout-ms', 100, 600_000);
  if (requestTimeoutMs !== undefined) options.requestTimeoutMs = requestTimeoutMs;
  return { type: 'gcp-kms', options };
}
