export {
  assessFips,
  HealthMonitor,
  TOKEN_FLAGS,
  tokenFlags,
  worst,
  type CheckName,
  type CheckResult,
  type FipsRequirement,
  type HealthLevel,
  type HealthMonitorOptions,
  type HealthReport,
  type HealthThresholds,
  type ReportListener,
} from './health.js';
export { HsmMetrics, instrument, OPERATIONS, type OperationListener, type ErrorListener, type HsmMetricsOptions, type MetricsSnapshot, type Operation, type OperationStats } from './metrics.js';
export { readBackendMetrics, type BackendMetricsView } from './backend-metrics.js';
export {
  AlertManager,
  callbackSink,
  logSink,
  webhookSink,
  type Alert,
  type AlertManagerOptions,
  type AlertRules,
  type AlertSeverity,
  type AlertSink,
  type AlertState,
  type WebhookSinkOptions,
} from './alerts.js';
export { startMonitorServer, parseListen, type MonitorServer, type MonitorServerOptions } from './server.js';
export { renderStatusPage, escapeHtml, STATUS_PAGE_CSP } from './status-page.js';
export { buildStatusView, type DisplayLevel, type StatusCheckView, type StatusKeyView, type StatusView, type StatusViewInput } from './status-view.js';
export {
  ActivityAggregator,
  feedFromMetrics,
  OPERATION_TYPES,
  type ActivityAggregatorOptions,
  type ActivityPoint,
  type ActivityQuery,
  type ActivityRecord,
  type ActivitySource,
  type ActivityView,
  type LoginFailureRecord,
} from './activity.js';
export { createMonitoring, type Monitoring, type MonitoringOptions } from './monitoring.js';
export {
  alertsFromRotation,
  CryptoperiodWatch,
  registryKeyCounts,
  registryKeyList,
  registryInventory,
  type KeyInventoryItem,
  type KeyInventoryProvider,
  type CryptoperiodCheckResult,
  type CryptoperiodWatchOptions,
  type KeyLifecycleInfo,
  type KeyListProvider,
  type KeyRegistryLike,
  type LifecycleEvent,
  type LifecycleEventSource,
  type RegistryVersion,
} from './lifecycle.js';
