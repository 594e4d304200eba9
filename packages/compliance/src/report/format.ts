import { FIPS_EVIDENCE_TEXT, type FipsEvidenceBasis } from '../rules/inputs.js';

/**
 * Numbers as people read them in reports: counts with thousands separators, fractions rounded
 * to what a reader can use ("2.38 ms", never "2.3763809999999808 ms"). Fixed to en-US digit
 * grouping so a report's bytes do not depend on the machine's locale.
 */
const GROUPED = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
const GROUPED_1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
const GROUPED_0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** A count or a value: grouped thousands, at most two decimals. */
export function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  return GROUPED.format(n);
}

/** A duration in milliseconds: "0.42 ms", "2.38 ms", "12.4 ms", "380 ms", "3.04 s", "2.5 min". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return `${ms} ms`;
  if (ms < 10) return `${GROUPED.format(ms)} ms`;
  if (ms < 100) return `${GROUPED_1.format(ms)} ms`;
  if (ms < 1000) return `${GROUPED_0.format(ms)} ms`;
  if (ms < 60_000) return `${GROUPED.format(ms / 1000)} s`;
  return `${GROUPED_1.format(ms / 60_000)} min`;
}

/** A value for a table cell: numbers formatted, booleans as yes/no, the rest as text. */
export function formatValue(value: unknown): string {
  if (typeof value === 'number') return formatNumber(value);
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  return String(value);
}

/** Rounds a measured quantity kept in JSON to two decimals (sub-10 µs digits are noise). */
export function round2(n: number): number {
  return Math.round(n * 100) / 100;
}

/** A module's evidence basis in words: "attested (the operator's statement ...)", never presented as measured. */
export function evidenceText(evidence: FipsEvidenceBasis | undefined): string {
  return FIPS_EVIDENCE_TEXT[evidence ?? 'none'];
}

/** Approved mode with how it is known: "yes (attested)", "yes (measured)", "no". */
export function approvedModeText(approvedMode: boolean, evidence: FipsEvidenceBasis | undefined): string {
  if (!approvedMode) return 'no';
  const basis = evidence ?? 'none';
  return `yes (${basis === 'none' ? 'no evidence stated' : basis})`;
}
