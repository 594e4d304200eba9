import type { HsmBackend } from '@olocus/hsm-core';
import { ActivityAggregator, feedFromMetrics, type ActivityAggregatorOptions, type ActivitySource } from './activity.js';
import { AlertManager, type AlertManagerOptions } from './alerts.js';
import { HealthMonitor, type HealthMonitorOptions } from './health.js';
import { HsmMetrics, type HsmMetricsOptions } from './metrics.js';

export interface MonitoringOptions {
  backend: HsmBackend;
  health?: Omit<HealthMonitorOptions, 'backend'>;
  metrics?: HsmMetricsOptions;
  /** When given, an AlertManager watching the monitor and the metrics. */
  alerts?: AlertManagerOptions;
  /**
   * Where the installation's activity is read (the audit log every process appends to, through
   * an adapter). Its auth.failure records also feed the security check. Without it the status
   * page shows this process's own operations.
   */
  activity?: ActivitySource | (Omit<ActivityAggregatorOptions, 'source'> & { source: ActivitySource });
}

export interface Monitoring {
  /** Give this to the application: every call is counted and timed. */
  backend: HsmBackend;
  metrics: HsmMetrics;
  monitor: HealthMonitor;
  alerts?: AlertManager;
  /** Aggregates of the activity source (or of this process's operations): give it to `startMonitorServer`. */
  activity: ActivityAggregator;
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
  const unsubscribe: Array<() => void> = [];
  const given = options.activity;
  let activity: ActivityAggregator;
  let loginFailures: ((since: number) => Promise<number>) | undefined;
  if (given) {
    const aggregatorOptions = 'read' in given ? { source: given } : given;
    activity = new ActivityAggregator({ ...aggregatorOptions, ...(options.health?.now ? { now: options.health.now } : {}) });
    loginFailures = async (since) => {
      await activity.refresh();
      return activity.loginFailuresSince(since);
    };
  } else {
    activity = new ActivityAggregator(options.health?.now ? { now: options.health.now } : {});
    unsubscribe.push(feedFromMetrics(activity, metrics));
  }
  const monitor = new HealthMonitor({ ...options.health, backend: options.backend, ...(loginFailures ? { loginFailures } : {}) });
  unsubscribe.push(metrics.onError((error) => monitor.observeError(error)));
  unsubscribe.push(monitor.onReport((report) => metrics.recordHealth(report)));
  let alerts: AlertManager | undefined;
  if (options.alerts) {
    alerts = new AlertManager(options.alerts);
    unsubscribe.push(alerts.watch({ monitor, metrics, activity }));
  }
  const out: Monitoring = {
    backend,
    metrics,
    monitor,
    activity,
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
