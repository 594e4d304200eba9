import type { BackendMetrics, HsmBackend } from '@olocus/hsm-core';

/**
 * What monitoring reads from a backend's optional `metrics()` (core's declared `BackendMetrics`),
 * with every field checked: a third-party backend's numbers are not believed blindly.
 */
export type BackendMetricsView = BackendMetrics;

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** Reads and validates `backend.metrics()`; undefined when absent or when it throws. */
export function readBackendMetrics(backend: HsmBackend | undefined): BackendMetricsView | undefined {
  if (!backend || typeof backend.metrics !== 'function') return undefined;
  let raw: BackendMetrics;
  try {
    raw = backend.metrics();
  } catch {
    return undefined;
  }
  if (!raw || typeof raw !== 'object') return undefined;
  const view: BackendMetricsView = {};
  const p = raw.pool;
  if (p && typeof p === 'object') {
    const size = num(p.size);
    const inUse = num(p.inUse);
    const waiting = num(p.waiting);
    const max = num(p.max);
    if (size !== undefined && inUse !== undefined && waiting !== undefined && max !== undefined) {
      const pool: NonNullable<BackendMetrics['pool']> = { size, inUse, waiting, max };
      for (const k of ['created', 'evicted', 'recycled', 'timeouts'] as const) {
        const v = num(p[k]);
        if (v !== undefined) pool[k] = v;
      }
      view.pool = pool;
    }
  }
  if (typeof raw.circuitOpen === 'boolean') view.circuitOpen = raw.circuitOpen;
  for (const k of ['circuitOpens', 'recoveries', 'loginFailures'] as const) {
    const v = num(raw[k]);
    if (v !== undefined) view[k] = v;
  }
  return view;
}
