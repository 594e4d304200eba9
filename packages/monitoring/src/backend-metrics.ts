import type { HsmBackend, PoolMetrics } from '@olocus/hsm-core';

/**
 * What monitoring reads from a backend's optional `metrics()` method (duck-typed: the
 * `HsmBackend` contract does not declare it). backend-pkcs11 returns `{ pool, circuitOpen,
 * circuitOpens, recoveries, ... }`; a backend may also return pool fields at the top level.
 */
export interface BackendMetricsView {
  pool?: Pick<PoolMetrics, 'size' | 'inUse' | 'waiting' | 'max'> & Partial<Pick<PoolMetrics, 'created' | 'evicted' | 'recycled' | 'timeouts'>>;
  circuitOpen?: boolean;
  circuitOpens?: number;
  recoveries?: number;
}

type WithMetrics = { metrics?: unknown };

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** Reads and normalises `backend.metrics()`; undefined when absent or when it throws. */
export function readBackendMetrics(backend: HsmBackend | undefined): BackendMetricsView | undefined {
  const fn = (backend as WithMetrics | undefined)?.metrics;
  if (typeof fn !== 'function') return undefined;
  let raw: unknown;
  try {
    raw = fn.call(backend);
  } catch {
    return undefined;
  }
  if (!raw || typeof raw !== 'object') return undefined;
  const r = raw as Record<string, unknown>;
  const poolSource = (r.pool && typeof r.pool === 'object' ? r.pool : r) as Record<string, unknown>;
  const view: BackendMetricsView = {};
  const size = num(poolSource.size);
  const inUse = num(poolSource.inUse);
  const waiting = num(poolSource.waiting);
  const max = num(poolSource.max);
  if (size !== undefined && inUse !== undefined && waiting !== undefined && max !== undefined) {
    view.pool = { size, inUse, waiting, max };
    for (const k of ['created', 'evicted', 'recycled', 'timeouts'] as const) {
      const v = num(poolSource[k]);
      if (v !== undefined) view.pool[k] = v;
    }
  }
  if (typeof r.circuitOpen === 'boolean') view.circuitOpen = r.circuitOpen;
  const opens = num(r.circuitOpens);
  if (opens !== undefined) view.circuitOpens = opens;
  const rec = num(r.recoveries);
  if (rec !== undefined) view.recoveries = rec;
  return view;
}
