import type { HsmBackend } from '@olocus/hsm-core';
import { AlertManager, type AlertManagerOptions } from './alerts.js';
import { HealthMonitor, type HealthMonitorOptions } from './health.js';
import { HsmMetrics, type HsmMetricsOptions } from './metrics.js';

export interface MonitoringOptions {
  backend: HsmBackend;
  health?: Omit<HealthMonitorOptions, 'backend'>;
  metrics?: HsmMetricsOptions;
  /** When given, an AlertManager watching the monitor and the metrics. */
  alerts?: AlertManagerOptions;
}

export interface Monitoring {
  /** Give this to the application: every call is counted and timed. */
  backend: HsmBackend;
  metrics: HsmMetrics;
  monitor: HealthMonitor;
  alerts?: AlertManager;
  /** Stops the monitor and the alert watch. */
  stop(): Promise<void>;
}

/**
 * Wires the parts together: the application's calls go through `instrument()`, errors they
 * see feed the security check (LoginFailed, PinLocked), each health report updates the health
 * gauges and is evaluated by the alert rules. The monitor itself uses the raw backend so its
 * canary signatures are not counted as application operations.
 */
export function createMonitoring(options: MonitoringOptions): Monitoring {
  const metrics = new HsmMetrics(options.metrics);
  const backend = instrument(options.backend, metrics);
  const monitor = new HealthMonitor({ ...options.health, backend: options.backend });
  const unsubscribe: Array<() => void> = [];
  unsubscribe.push(metrics.onError((error) => monitor.observeError(error)));
  unsubscribe.push(monitor.onReport((report) => metrics.recordHealth(report)));
  let alerts: AlertManager | undefined;
  if (options.alerts) {
    alerts = new AlertManager(options.alerts);
    unsubscribe.push(alerts.watch({ monitor, metrics }));
  }
  const out: Monitoring = {
    backend,
    metrics,
    monitor,
    async stop() {
      await monitor.stop();
      for (const u of unsubscribe) u();
    },
  };
  if (alerts) out.alerts = alerts;
  return out;
}

function instrument(backend: HsmBackend, metrics: HsmMetrics): HsmBackend {
  return metrics.instrument(backend);
}
