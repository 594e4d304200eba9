import { HsmError, isHsmError, type FipsStandard, type FipsStatus, type HsmBackend, type HsmInfo, type KeyAlgorithm } from '@olocus/hsm-core';
import { readBackendMetrics, type BackendMetricsView } from './backend-metrics.js';
import { PeriodicRunner } from './periodic.js';

export type HealthLevel = 'Healthy' | 'Degraded' | 'Critical';
export type CheckName = 'connectivity' | 'performance' | 'capacity' | 'security' | 'fips';

export interface CheckResult {
  name: CheckName;
  status: HealthLevel;
  message: string;
  /** The number the status was decided on (ms for performance, utilisation for capacity...). */
  metric?: number;
  /** What `metric` measures. */
  unit?: string;
  /** How long the check itself took, ms. */
  durationMs: number;
  /**
   * Something an operator should act on that does not make the backend unhealthy, e.g. a module
   * that is not FIPS validated (the status stays Healthy, so readiness and exit codes are not
   * affected; the status page shows the check as a warning).
   */
  warning?: string;
  /** Non-secret facts the check read (for fips: standard, level, evidence, certificate). */
  details?: Record<string, string | number | boolean>;
}

export interface HealthReport {
  status: HealthLevel;
  checks: CheckResult[];
  /** When the run started. */
  timestamp: Date;
  durationMs: number;
}

export interface HealthThresholds {
  /** Canary signature at or under this is Healthy. Default 100. */
  healthyMs: number;
  /** Canary signature at or under this is Degraded, above it Critical. Default 500. */
  warningMs: number;
  /** Pool utilisation (inUse / max) at or above this is Degraded. Default 0.8. */
  poolUtilisationDegraded: number;
  /** Callers waiting for a session at or above this many is Degraded. Default 1. */
  poolWaitingDegraded: number;
  /** Callers waiting at or above this many times the pool size is Critical. Default 2. */
  poolWaitingCriticalFactor: number;
  /** Login failures in the window at or above this are Degraded. Default 1. */
  loginFailuresDegraded: number;
  /** Login failures in the window at or above this are Critical. Default 3. */
  loginFailuresCritical: number;
}

export interface FipsRequirement {
  /** The standard the backend must declare ('FIPS 140-2' accepts 140-3 too). */
  standard: Exclude<FipsStandard, 'none' | 'unknown'>;
  /** Minimum security level. Default 1. */
  minLevel?: number;
  /** Also require the module to report its approved mode. Default false. */
  approvedMode?: boolean;
}

export interface HealthMonitorOptions {
  backend: HsmBackend;
  /** The designated canary key's id; never an application key. Default `olocus-health-canary`. */
  healthKeyId?: string;
  /** Algorithm of the canary when it must be created. Default: ECDSA_P256 when the backend can, else its first algorithm. */
  healthKeyAlgorithm?: KeyAlgorithm;
  thresholds?: Partial<HealthThresholds>;
  /** A check that takes longer is Critical ("timed out"). Default 5000. */
  checkTimeoutMs?: number;
  /** Period of the background checks started by `start()`. Default 30000. */
  intervalMs?: number;
  /** Login failures are counted over this window. Default 300000 (5 min). */
  loginFailureWindowMs?: number;
  /** When set, the FIPS check is Critical unless the backend meets it; otherwise it only reports. */
  fips?: FipsRequirement;
  /**
   * Login failures seen by other processes since a time (ms since epoch), e.g. auth.failure
   * records of the shared audit log (`ActivityAggregator.loginFailuresSince`). The security check
   * counts the larger of this and the failures this monitor saw itself (the audit log holds this
   * process's failures too, so the two are not added).
   */
  loginFailures?: (since: number) => number | Promise<number>;
  /** Clock (ms since epoch), injectable for tests. Default Date.now. */
  now?: () => number;
}

export type ReportListener = (report: HealthReport, previous: HealthReport | undefined) => void;

const RANK: Record<HealthLevel, number> = { Healthy: 0, Degraded: 1, Critical: 2 };
export const HEALTH_LEVEL_VALUE = RANK;

export function worst(levels: Iterable<HealthLevel>): HealthLevel {
  let out: HealthLevel = 'Healthy';
  for (const l of levels) if (RANK[l] > RANK[out]) out = l;
  return out;
}

/** PKCS#11 CK_TOKEN_INFO flags the security check reads from `info().details.tokenFlags`. */
export const TOKEN_FLAGS = {
  userPinCountLow: 0x10000,
  userPinFinalTry: 0x20000,
  userPinLocked: 0x40000,
  userPinToBeChanged: 0x80000,
  soPinCountLow: 0x100000,
  soPinFinalTry: 0x200000,
  soPinLocked: 0x400000,
  soPinToBeChanged: 0x800000,
} as const;

type TokenFlag = keyof typeof TOKEN_FLAGS;
const FLAG_LEVEL: Record<TokenFlag, HealthLevel> = {
  userPinLocked: 'Critical',
  userPinFinalTry: 'Critical',
  userPinCountLow: 'Degraded',
  userPinToBeChanged: 'Degraded',
  soPinLocked: 'Degraded',
  soPinFinalTry: 'Degraded',
  soPinCountLow: 'Degraded',
  soPinToBeChanged: 'Degraded',
};

const CANARY_DATA = new TextEncoder().encode('olocus-health-canary');
const DEFAULT_CANARY_ID = 'olocus-health-canary';
/** The audit record's `purpose` of canary signatures, so that activity views can leave them out. */
export const CANARY_PURPOSE = 'health-canary';

class CheckTimeout extends Error {}

/**
 * Runs the five health checks against one backend, on demand (`performHealthCheck()`) or on an
 * interval in the background (`start()` / `stop()`, unref'd timers, one run at a time).
 */
export class HealthMonitor {
  readonly backend: HsmBackend;
  readonly healthKeyId: string;
  readonly thresholds: HealthThresholds;
  readonly checkTimeoutMs: number;
  readonly intervalMs: number;
  private readonly loop: PeriodicRunner;
  readonly loginFailureWindowMs: number;
  private readonly now: () => number;
  private readonly fips: FipsRequirement | undefined;
  private readonly canaryAlgorithm: KeyAlgorithm | undefined;
  private readonly externalLoginFailures: HealthMonitorOptions['loginFailures'];
  private canary: Promise<void> | undefined;
  private loginFailures: number[] = [];
  private pinLockedSeen = false;
  private latest: HealthReport | undefined;
  private readonly listeners = new Set<ReportListener>();
  private running: Promise<HealthReport> | undefined;
  /** Number of times this monitor created the canary key (0 or 1 unless someone deleted it). */
  canaryCreations = 0;

  constructor(options: HealthMonitorOptions) {
    if (!options || typeof options.backend !== 'object') throw new HsmError('InvalidArgument', 'backend is required', { details: { field: 'backend' } });
    this.backend = options.backend;
    this.healthKeyId = options.healthKeyId ?? DEFAULT_CANARY_ID;
    this.thresholds = {
      healthyMs: 100,
      warningMs: 500,
      poolUtilisationDegraded: 0.8,
      poolWaitingDegraded: 1,
      poolWaitingCriticalFactor: 2,
      loginFailuresDegraded: 1,
      loginFailuresCritical: 3,
      ...options.thresholds,
    };
    if (!(this.thresholds.healthyMs > 0 && this.thresholds.warningMs >= this.thresholds.healthyMs)) {
      throw new HsmError('InvalidArgument', 'thresholds: need 0 < healthyMs <= warningMs', { details: { field: 'thresholds' } });
    }
    this.checkTimeoutMs = positive(options.checkTimeoutMs ?? 5_000, 'checkTimeoutMs');
    this.intervalMs = positive(options.intervalMs ?? 30_000, 'intervalMs');
    this.loop = new PeriodicRunner(() => this.performHealthCheck(), this.intervalMs);
    this.loginFailureWindowMs = positive(options.loginFailureWindowMs ?? 300_000, 'loginFailureWindowMs');
    this.now = options.now ?? Date.now;
    this.fips = options.fips;
    this.canaryAlgorithm = options.healthKeyAlgorithm;
    this.externalLoginFailures = options.loginFailures;
  }

  /** The last completed report, if any. */
  get lastReport(): HealthReport | undefined {
    return this.latest;
  }

  get isRunning(): boolean {
    return this.loop.isRunning;
  }

  /** Called with every completed report (and the one before it). Returns an unsubscribe function. */
  onReport(listener: ReportListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Feeds an error seen elsewhere (the instrumented backend, the application) to the security
   * check: LoginFailed is counted in the window, PinLocked makes the check Critical.
   */
  observeError(error: unknown): void {
    if (isHsmError(error, 'LoginFailed')) this.loginFailures.push(this.now());
    else if (isHsmError(error, 'PinLocked')) this.pinLockedSeen = true;
  }

  /** Runs every check once (joins a run already in progress). */
  performHealthCheck(): Promise<HealthReport> {
    if (!this.running) {
      this.running = this.run().finally(() => {
        this.running = undefined;
      });
    }
    return this.running;
  }

  /** Runs a check now and then every `intervalMs` in the background. Idempotent. */
  start(): void {
    this.loop.start();
  }

  /** Stops the background checks and waits for a run in progress. */
  async stop(): Promise<void> {
    this.loop.stop();
    await this.running?.catch(() => undefined);
  }

  private async run(): Promise<HealthReport> {
    const timestamp = new Date(this.now());
    const started = performance.now();
    let info: HsmInfo | undefined;
    const connectivity = await this.timed('connectivity', async () => {
      info = await this.backend.info();
      return { status: 'Healthy', message: `reachable: ${info.description}` };
    });
    const rest = await Promise.all([
      this.timed('performance', () => this.performance()),
      this.timed('capacity', async () => this.capacity()),
      this.timed('security', () => this.security(info)),
      this.timed('fips', () => this.fipsCheck()),
    ]);
    const checks = [connectivity, ...rest];
    const report: HealthReport = { status: worst(checks.map((c) => c.status)), checks, timestamp, durationMs: performance.now() - started };
    const previous = this.latest;
    this.latest = report;
    for (const listener of this.listeners) {
      try {
        listener(report, previous);
      } catch {
        // a listener's failure must not stop the monitor
      }
    }
    return report;
  }

  private async timed(name: CheckName, body: () => Promise<Omit<CheckResult, 'name' | 'durationMs'>>): Promise<CheckResult> {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CheckTimeout()), this.checkTimeoutMs);
        timer.unref();
      });
      const result = await Promise.race([body(), timeout]);
      return { name, ...result, durationMs: performance.now() - started };
    } catch (error) {
      this.observeError(error);
      const message =
        error instanceof CheckTimeout ? `timed out after ${this.checkTimeoutMs} ms` : isHsmError(error) ? `${error.code}: ${error.message}` : `failed: ${String((error as Error)?.message ?? error)}`;
      return { name, status: 'Critical', message, durationMs: performance.now() - started };
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** Finds the canary key, creating it on first use; a failed attempt is retried on the next run. */
  private ensureCanary(): Promise<void> {
    if (!this.canary) {
      this.canary = (async () => {
        try {
          await this.backend.getKey(this.healthKeyId);
          return;
        } catch (error) {
          if (!isHsmError(error, 'KeyNotFound')) throw error;
        }
        const algorithm = this.canaryAlgorithm ?? pickAlgorithm((await this.backend.capabilities()).algorithms);
        try {
          await this.backend.generateKeyPair({ id: this.healthKeyId, algorithm, labels: { purpose: 'olocus-health-canary' } });
          this.canaryCreations++;
        } catch (error) {
          // another node (or a concurrent run) created it first
          if (!isHsmError(error, 'KeyAlreadyExists')) throw error;
        }
      })();
      this.canary.catch(() => {
        this.canary = undefined;
      });
    }
    return this.canary;
  }

  private async performance(): Promise<Omit<CheckResult, 'name' | 'durationMs'>> {
    await this.ensureCanary();
    const started = performance.now();
    await this.backend.sign(this.healthKeyId, CANARY_DATA, { purpose: CANARY_PURPOSE });
    const ms = performance.now() - started;
    const { healthyMs, warningMs } = this.thresholds;
    const status: HealthLevel = ms <= healthyMs ? 'Healthy' : ms <= warningMs ? 'Degraded' : 'Critical';
    return { status, message: `canary signature in ${ms.toFixed(1)} ms (healthy <= ${healthyMs} ms, warning <= ${warningMs} ms)`, metric: ms, unit: 'ms' };
  }

  private capacity(): Omit<CheckResult, 'name' | 'durationMs'> {
    const view: BackendMetricsView | undefined = readBackendMetrics(this.backend);
    if (!view?.pool) return { status: 'Healthy', message: 'the backend exposes no session-pool metrics' };
    const { inUse, waiting, max, size } = view.pool;
    const utilisation = max > 0 ? inUse / max : 0;
    const t = this.thresholds;
    let status: HealthLevel = 'Healthy';
    if (utilisation >= t.poolUtilisationDegraded || waiting >= t.poolWaitingDegraded) status = 'Degraded';
    if (max > 0 && waiting >= t.poolWaitingCriticalFactor * max) status = 'Critical';
    return {
      status,
      message: `sessions ${inUse} in use of ${max} (${size} open), ${waiting} waiting`,
      metric: utilisation,
      unit: 'ratio',
    };
  }

  private async security(info: HsmInfo | undefined): Promise<Omit<CheckResult, 'name' | 'durationMs'>> {
    const cutoff = this.now() - this.loginFailureWindowMs;
    while (this.loginFailures.length > 0 && this.loginFailures[0]! < cutoff) this.loginFailures.shift();
    const own = this.loginFailures.length;
    const external = this.externalLoginFailures ? await this.externalLoginFailures(cutoff) : undefined;
    const failures = Math.max(own, external ?? 0);
    const t = this.thresholds;
    const levels: HealthLevel[] = [];
    const notes: string[] = [];
    if (failures >= t.loginFailuresCritical) levels.push('Critical');
    else if (failures >= t.loginFailuresDegraded) levels.push('Degraded');
    notes.push(`${failures} login failure(s) in the last ${Math.round(this.loginFailureWindowMs / 1000)} s${external !== undefined ? ' (all processes, from the audit log)' : ''}`);
    if (this.pinLockedSeen) {
      levels.push('Critical');
      notes.push('a PinLocked error was observed');
    }
    for (const flag of tokenFlags(info?.details)) {
      levels.push(FLAG_LEVEL[flag]);
      notes.push(`token flag ${flag}`);
    }
    return { status: worst(levels), message: notes.join('; '), metric: failures, unit: 'login failures' };
  }

  private async fipsCheck(): Promise<Omit<CheckResult, 'name' | 'durationMs'>> {
    const fips = await this.backend.fipsStatus();
    const { described, warning, details } = assessFips(fips);
    const base = { metric: fips.level, unit: 'level', details, ...(warning ? { warning } : {}) };
    if (!this.fips) return { status: 'Healthy', message: described, ...base };
    const need = this.fips;
    const standardOk = fips.standard === need.standard || (need.standard === 'FIPS 140-2' && fips.standard === 'FIPS 140-3');
    const problems: string[] = [];
    if (!standardOk) problems.push(`requires ${need.standard}`);
    if (fips.level < (need.minLevel ?? 1)) problems.push(`requires level >= ${need.minLevel ?? 1}`);
    if (need.approvedMode && !fips.approvedMode) problems.push('requires approved mode');
    if (fips.certificateStatus === 'revoked') problems.push('certificate revoked');
    return {
      status: problems.length > 0 ? 'Critical' : 'Healthy',
      message: problems.length > 0 ? `${described}: ${problems.join(', ')}` : described,
      ...base,
    };
  }
}

/**
 * What a FIPS status means to an operator. A warning when the module is not validated, its level
 * could not be established, the claim rests only on the operator's attestation (or on nothing),
 * the certificate is not active, or the backend found contradictions. A cloud provider's
 * documented validation (`provider-claim`) is the best a client can know and is not a warning.
 */
export function assessFips(fips: FipsStatus): { described: string; warning?: string; details: Record<string, string | number | boolean> } {
  const evidence = fips.evidence ?? 'none';
  const details: Record<string, string | number | boolean> = { standard: fips.standard, level: fips.level, approvedMode: fips.approvedMode, evidence };
  if (fips.certificate) details.certificate = fips.certificate;
  if (fips.certificateStatus) details.certificateStatus = fips.certificateStatus;
  const findings = (fips.findings ?? []).filter((f) => typeof f === 'string' && f !== '');
  if (findings.length > 0) details.findings = findings.join('; ');
  const evidenceText: Record<string, string> = { measured: 'measured on the device', attested: "attested in the operator's config only", 'provider-claim': "per the provider's documentation", none: 'no evidence' };
  const described =
    fips.standard === 'none'
      ? 'not FIPS validated (no FIPS 140 certificate)'
      : fips.standard === 'unknown' || fips.level === 0
        ? 'FIPS validation unknown: the level could not be established'
        : `${fips.standard} level ${fips.level}${fips.approvedMode ? ', approved mode' : ''}${fips.certificate ? `, certificate #${fips.certificate}` : ''} (${evidenceText[evidence] ?? evidence})`;
  const reasons: string[] = [];
  if (fips.standard === 'none') reasons.push('the module is not FIPS validated');
  else if (fips.standard === 'unknown' || fips.level === 0) reasons.push('the FIPS level is unknown');
  else if (evidence === 'attested') reasons.push('the FIPS level is only attested in the config, not measured');
  else if (evidence === 'none') reasons.push('the FIPS claim has no evidence');
  if (fips.certificateStatus === 'revoked' || fips.certificateStatus === 'historical') reasons.push(`the certificate is ${fips.certificateStatus}`);
  for (const f of findings) reasons.push(f);
  return reasons.length > 0 ? { described, warning: reasons.join('; '), details } : { described, details };
}

/** Token flags of concern, from `tokenFlags` (a CK_FLAGS number) or boolean details of the same names. */
export function tokenFlags(details: HsmInfo['details']): TokenFlag[] {
  if (!details) return [];
  const raw = details.tokenFlags;
  const bits = typeof raw === 'number' ? raw : 0;
  const out: TokenFlag[] = [];
  for (const [name, bit] of Object.entries(TOKEN_FLAGS) as Array<[TokenFlag, number]>) {
    if ((bits & bit) !== 0 || details[name] === true) out.push(name);
  }
  return out;
}

function pickAlgorithm(algorithms: KeyAlgorithm[]): KeyAlgorithm {
  const preferred: KeyAlgorithm = 'ECDSA_P256' as KeyAlgorithm;
  if (algorithms.includes(preferred)) return preferred;
  const first = algorithms[0];
  if (!first) throw new HsmError('UnsupportedAlgorithm', 'the backend reports no algorithms for the health canary key');
  return first;
}

function positive(value: number, field: string): number {
  if (!Number.isFinite(value) || value <= 0) throw new HsmError('InvalidArgument', `${field} must be a positive number`, { details: { field } });
  return value;
}
