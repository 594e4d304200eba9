import { SEVERITIES } from '../rules/types.js';
import { escapeMarkdown as md } from './escape.js';
import { formatDuration, formatNumber as n, formatValue } from './format.js';
import { approvedModeText, evidenceText } from './format.js';
import type { ComplianceReport, MetricCounts, ReportFinding } from './types.js';

const METRIC_COLUMNS: [keyof MetricCounts, string][] = [
  ['operations', 'Operations'],
  ['signs', 'Signs'],
  ['verifies', 'Verifies'],
  ['keyGenerations', 'Key generations'],
  ['keyAccesses', 'Key accesses'],
  ['failures', 'Failures'],
  ['lookupMisses', 'Lookups of absent keys'],
  ['securityViolations', 'Security violations'],
];

function table(header: string[], rows: unknown[][]): string {
  const lines = [`| ${header.map(md).join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`];
  for (const r of rows) lines.push(`| ${r.map((c) => (c === undefined || c === null || c === '' ? '—' : md(formatValue(c)))).join(' | ')} |`);
  return lines.join('\n');
}

function findingsTable(list: readonly ReportFinding[], empty: string): string {
  if (list.length === 0) return `_${empty}_`;
  return table(
    ['Severity', 'Rule', 'Key', 'Time', 'Finding', 'Remediation'],
    list.map((f) => [f.severity, f.ruleId, f.keyId, f.time, f.message, f.remediation]),
  );
}

/** The report as GitHub-flavoured Markdown (every value escaped), summary first. */
export function renderMarkdown(report: ComplianceReport): string {
  const m = report.metadata;
  const s = report.summary;
  const out: string[] = [];
  out.push(`# Compliance report: ${md(m.frameworkName)}`);
  out.push('');
  out.push(
    table(
      ['Item', 'Value'],
      [
        ['Framework', `${m.framework}${m.level !== undefined ? ` (security level ${m.level})` : ''}`],
        ['Period', `${m.period.from} to ${m.period.to} (end excluded)`],
        ['Generated', m.generatedAt],
        ['Tool', `${m.tool.name} ${m.tool.version}`],
        ['Inventory', m.inventorySource],
        ['Overall status', s.status],
        ['Violations', s.violations],
        ['Warnings', s.warnings],
        ['Notices', s.notices],
        ['Rules evaluated / violated / passed', `${n(s.rulesEvaluated)} / ${n(s.rulesViolated)} / ${n(s.passes)}`],
      ],
    ),
  );
  out.push('', '## Violations by severity', '');
  out.push(table([...SEVERITIES], [SEVERITIES.map((x) => s.violationsBySeverity[x])]));
  out.push('', '## Scores', '');
  out.push(
    table(
      ['Score', 'Value', 'How it is computed'],
      (['availability', 'integrity', 'confidentiality'] as const).map((k) => [k, `${n(report.scores[k].value)} / 100`, report.scores[k].formula]),
    ),
  );
  out.push('', '## Operations', '');
  out.push(`${n(report.metrics.records)} audit records in the period.`, '');
  out.push(table(['Total', ...METRIC_COLUMNS.map(([, h]) => h)], [['all days', ...METRIC_COLUMNS.map(([k]) => report.metrics.totals[k])]]));
  const active = report.metrics.perDay.filter((d) => METRIC_COLUMNS.some(([k]) => d[k] > 0));
  out.push('', `### Per day (${active.length} of ${report.metrics.perDay.length} days had activity; quiet days omitted)`, '');
  out.push(active.length === 0 ? '_No activity._' : table(['Date', ...METRIC_COLUMNS.map(([, h]) => h)], active.map((d) => [d.date, ...METRIC_COLUMNS.map(([k]) => d[k])])));
  out.push('', `## Violations (${report.violations.length})`, '', findingsTable(report.violations, 'No violations.'));
  out.push('', `## Warnings (${report.warnings.length})`, '', findingsTable(report.warnings, 'No warnings.'));
  out.push('', `## Notices (${report.notices.length})`, '', findingsTable(report.notices, 'No notices.'));
  out.push('', '## Recommendations', '');
  if (report.recommendations.length === 0) out.push('_None._');
  for (const [i, r] of report.recommendations.entries()) out.push(`${i + 1}. **${r.severity}** ${md(r.text)} (${r.ruleIds.map(md).join(', ')}; ${n(r.findings)} finding${r.findings === 1 ? '' : 's'})`);
  out.push('', '## HSM modules', '');
  out.push(
    report.modules.length === 0
      ? '_No module facts were given._'
      : table(
          ['Backend', 'Description', 'Manufacturer / model', 'Firmware', 'FIPS', 'Level', 'Approved mode', 'Certificate', 'Evidence', 'Hardware-backed'],
          report.modules.map((x) => [
            x.backend,
            x.description,
            [x.manufacturer, x.model].filter(Boolean).join(' '),
            x.firmwareVersion,
            x.fips.standard,
            String(x.fips.level),
            approvedModeText(x.fips.approvedMode, x.fips.evidence),
            x.fips.certificate ? `#${x.fips.certificate} (${x.fips.certificateStatus ?? 'unknown'})` : '',
            evidenceText(x.fips.evidence),
            x.hardwareBacked ? 'yes' : 'no',
          ]),
        ),
  );
  const moduleFindings = report.modules.flatMap((x) => (x.fips.findings ?? []).map((f) => `${x.backend}: ${f}`));
  if (moduleFindings.length > 0) out.push('', '**Contradictions in module facts:**', '', ...moduleFindings.map((f) => `- ${md(f)}`));
  const a = report.auditIntegrity;
  out.push('', '## Audit integrity', '');
  out.push(
    table(
      ['Item', 'Value'],
      [
        ['Hash chain', a.ok ? 'verified' : `FAILED${a.problem ? ` (${a.problem}${a.firstBadSeq !== undefined ? ` at seq ${a.firstBadSeq}` : ''})` : ''}`],
        ['Message', a.message],
        ['Records / checkpoints', `${n(a.records)} / ${n(a.checkpoints)}`],
        ['Checkpoints signed', a.checkpointsSigned ? `yes${a.checkpointKeyId ? ` (${a.checkpointKeyId})` : ''}` : 'no'],
        ['Checkpoint key sha256', a.checkpointPublicKeySha256],
        ['Fail closed', a.failClosed ? 'yes' : 'no'],
        ['Alerts configured', a.alertsConfigured ? 'yes' : 'no'],
        ['Retention', `${n(a.retentionDays)} days (${n(a.hotDays)} immediately available)`],
        ['Oldest record', a.oldestRecord],
        ['Verification time', formatDuration(a.durationMs)],
      ],
    ),
  );
  const inv = report.inventory;
  out.push('', '## Key inventory', '');
  out.push(`${n(inv.logicalKeys)} logical keys, ${n(inv.versions)} versions (source: ${md(inv.source)}).`, '');
  out.push(table(['State', 'Versions'], Object.entries(inv.byState)));
  out.push('');
  out.push(table(['Algorithm', 'Versions'], Object.entries(inv.byAlgorithm)));
  out.push('');
  out.push(table(['Backend', 'Versions'], Object.entries(inv.byBackend)));
  if (report.commonCriteria) {
    out.push('', '## Common Criteria key table', '');
    out.push(
      table(
        ['Key', 'State', 'Algorithm', 'Size (bits)', 'Standard', 'Destruction method', 'Lifecycle (registry)', 'Audited events in period'],
        report.commonCriteria.keys.map((k) => [
          k.keyId,
          k.state,
          k.algorithm,
          k.sizeBits !== undefined ? k.sizeBits : '',
          k.standard,
          k.destructionMethod,
          k.lifecycle.map((l) => `${l.time ?? '(no time)'} ${l.from ?? 'new'}→${l.to} by ${l.actor ?? '(no actor)'}`).join('; '),
          k.auditedEvents.map((e) => `${e.time} ${e.type} ${e.outcome} by ${e.actor}`).join('; ') + (k.auditedEventsOmitted > 0 ? `; … ${n(k.auditedEventsOmitted)} more` : ''),
        ]),
      ),
    );
  }
  out.push('', `## Passed rules (${report.passes.length})`, '');
  out.push(report.passes.length === 0 ? '_None._' : table(['Rule', 'Title', 'Result'], report.passes.map((p) => [p.ruleId, p.title, p.message])));
  out.push('', `## Not applicable (${report.notApplicable.length})`, '');
  out.push(report.notApplicable.length === 0 ? '_None._' : table(['Rule', 'Title', 'Why'], report.notApplicable.map((p) => [p.ruleId, p.title, p.message])));
  out.push('', '## Rules evaluated', '');
  out.push(table(['Rule', 'Title', 'Severity now', 'Category', 'Source'], m.rules.map((r) => [r.id, r.title, r.severity, r.category, r.source])));
  out.push('', '## Configuration', '', '```json', JSON.stringify(m.config, null, 2).replace(/```/g, '`\u200b``'), '```', '');
  return out.join('\n');
}
