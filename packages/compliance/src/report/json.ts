import type { ComplianceReport } from './types.js';

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/**
 * The report as JSON: keys sorted at every level (so the same report always gives the same
 * bytes, whatever order it was built in), two-space indent, a final newline. It validates
 * against schema/report.schema.json.
 */
export function renderJson(report: ComplianceReport): string {
  return `${JSON.stringify(sortKeys(report), null, 2)}\n`;
}
