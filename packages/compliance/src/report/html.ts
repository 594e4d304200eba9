import { SEVERITIES } from '../rules/types.js';
import { escapeHtml as esc } from './escape.js';
import { approvedModeText, evidenceText, formatDuration, formatNumber as n } from './format.js';
import { barChart } from './svg.js';
import type { ComplianceReport, ReportFinding } from './types.js';

const CSS = `
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dde5;--bg:#fff;--crit:#8b0000;--high:#c0392b;--med:#d68910;--low:#2e86c1;--info:#5b6475;--ok:#1e8449}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0 auto;max-width:1200px;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;width:100%;margin:8px 0}th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f6f9}
td.num{text-align:right;font-variant-numeric:tabular-nums}.muted{color:var(--muted)}
.status{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;color:#fff}.status.compliant{background:var(--ok)}.status.needs-attention{background:var(--med)}.status.non-compliant{background:var(--high)}
.sev{font-weight:600}.sev-CRIT{color:var(--crit)}.sev-HIGH{color:var(--high)}.sev-MED{color:var(--med)}.sev-LOW{color:var(--low)}.sev-INFO{color:var(--info)}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}.card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:150px}.card .v{font-size:24px;font-weight:700}.card .k{color:var(--muted);font-size:12px}
.chart{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px;margin:8px 8px 8px 0}.chart .axis{stroke:#8a93a5;stroke-width:1}.chart .tick{font-size:10px;fill:var(--muted)}.chart .chart-title{font-size:12px;font-weight:600;fill:var(--fg)}
pre{background:#f4f6f9;padding:8px;overflow:auto;font-size:12px}details{margin:8px 0}
`;

function findingsTable(id: string, list: readonly ReportFinding[], empty: string): string {
  if (list.length === 0) return `<p id="${id}" class="muted">${esc(empty)}</p>`;
  const rows = list
    .map(
      (f) =>
        `<tr data-rule="${esc(f.ruleId)}"><td class="sev sev-${esc(f.severity)}">${esc(f.severity)}</td><td>${esc(f.ruleId)}</td><td>${f.keyId !== undefined ? esc(f.keyId) : '—'}</td><td>${f.time !== undefined ? esc(f.time) : '—'}</td><td>${esc(f.message)}</td><td>${esc(f.remediation)}</td></tr>`,
    )
    .join('\n');
  return `<table id="${id}"><thead><tr><th>Severity</th><th>Rule</th><th>Key</th><th>Time</th><th>Finding</th><th>Remediation</th></tr></thead><tbody>\n${rows}\n</tbody></table>`;
}

function kv(rows: [string, string | number | undefined][]): string {
  return `<table class="kv"><tbody>${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v === undefined || v === '' ? '—' : esc(typeof v === 'number' ? n(v) : v)}</td></tr>`).join('')}</tbody></table>`;
}

/**
 * The report as one self-contained HTML page: inline CSS and inline SVG charts, no script, no
 * external resource (a Content-Security-Policy meta tag forbids them), every value escaped.
 * Summary first: framework, period, overall status, scores, violations by severity.
 */
export function renderHtml(report: ComplianceReport): string {
  const m = report.metadata;
  const s = report.summary;
  const t = report.metrics.totals;
  const a = report.auditIntegrity;
  const inv = report.inventory;
  const b: string[] = [];
  b.push('<!DOCTYPE html>');
  b.push('<html lang="en"><head><meta charset="utf-8">');
  b.push(`<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">`);
  b.push('<meta name="viewport" content="width=device-width, initial-scale=1">');
  b.push(`<title>Compliance report: ${esc(m.frameworkName)}</title>`);
  b.push(`<style>${CSS}</style></head><body>`);

  // ---- summary
  b.push(`<header id="summary"><h1>Compliance report: ${esc(m.frameworkName)}</h1>`);
  b.push(
    kv([
      ['Framework', `${m.framework}${m.level !== undefined ? ` (security level ${m.level})` : ''}`],
      ['Period', `${m.period.from} to ${m.period.to} (end excluded)`],
      ['Generated', m.generatedAt],
      ['Tool', `${m.tool.name} ${m.tool.version}`],
      ['Inventory', m.inventorySource],
    ]),
  );
  b.push(`<p>Overall status: <span id="overall-status" class="status ${esc(s.status)}">${esc(s.status)}</span></p>`);
  b.push('<div class="cards" id="scores">');
  for (const k of ['availability', 'integrity', 'confidentiality'] as const) {
    b.push(`<div class="card" title="${esc(report.scores[k].formula)}"><div class="v" id="score-${k}">${esc(n(report.scores[k].value))}</div><div class="k">${k} score (of 100)</div></div>`);
  }
  b.push('</div>');
  b.push('<div class="cards" id="counts">');
  b.push(`<div class="card"><div class="v" id="violations-count">${n(s.violations)}</div><div class="k">violations</div></div>`);
  for (const sev of SEVERITIES) b.push(`<div class="card"><div class="v sev sev-${sev}" id="violations-${sev}">${n(s.violationsBySeverity[sev])}</div><div class="k">${sev} violations</div></div>`);
  b.push(`<div class="card"><div class="v" id="warnings-count">${n(s.warnings)}</div><div class="k">warnings</div></div>`);
  b.push(`<div class="card"><div class="v" id="passes-count">${n(s.passes)}</div><div class="k">rules passed (of ${n(s.rulesEvaluated)})</div></div>`);
  b.push('</div></header>');

  // ---- metrics and charts
  b.push('<section id="metrics"><h2>Operations</h2>');
  b.push('<div class="cards">');
  const cards: [string, string, number][] = [
    ['metric-signs', 'signatures', t.signs],
    ['metric-verifies', 'verifications', t.verifies],
    ['metric-key-generations', 'key generations', t.keyGenerations],
    ['metric-key-accesses', 'key accesses', t.keyAccesses],
    ['metric-failures', 'failures', t.failures],
    ['metric-lookup-misses', 'lookups of absent keys', t.lookupMisses],
    ['metric-security-violations', 'security violations', t.securityViolations],
  ];
  for (const [id, label, value] of cards) b.push(`<div class="card"><div class="v" id="${id}">${n(value)}</div><div class="k">${esc(label)}</div></div>`);
  b.push('</div>');
  b.push(`<p class="muted">${n(report.metrics.records)} audit records in the period; ${n(t.operations)} key operations.</p>`);
  const days = report.metrics.perDay;
  b.push(barChart({ id: 'chart-operations', title: 'Key operations per day (UTC)', points: days.map((d) => ({ label: d.date, value: d.operations })), color: '#2e86c1' }));
  b.push(barChart({ id: 'chart-failures', title: 'Failures per day (UTC)', points: days.map((d) => ({ label: d.date, value: d.failures })), color: '#c0392b' }));
  b.push('</section>');

  // ---- findings
  b.push(`<section id="violations-section"><h2>Violations (${report.violations.length})</h2>${findingsTable('violations', report.violations, 'No violations.')}</section>`);
  b.push(`<section id="warnings-section"><h2>Warnings (${report.warnings.length})</h2>${findingsTable('warnings', report.warnings, 'No warnings.')}</section>`);
  b.push(`<section id="notices-section"><h2>Notices (${report.notices.length})</h2>${findingsTable('notices', report.notices, 'No notices.')}</section>`);
  b.push('<section id="recommendations"><h2>Recommendations</h2>');
  if (report.recommendations.length === 0) b.push('<p class="muted">None.</p>');
  else {
    b.push('<ol>');
    for (const r of report.recommendations) b.push(`<li><span class="sev sev-${esc(r.severity)}">${esc(r.severity)}</span> ${esc(r.text)} <span class="muted">(${esc(r.ruleIds.join(', '))}; ${n(r.findings)} finding${r.findings === 1 ? '' : 's'})</span></li>`);
    b.push('</ol>');
  }
  b.push('</section>');

  // ---- modules
  b.push('<section id="modules"><h2>HSM modules</h2>');
  if (report.modules.length === 0) b.push('<p class="muted">No module facts were given.</p>');
  else {
    b.push('<table><thead><tr><th>Backend</th><th>Description</th><th>Manufacturer / model</th><th>Firmware</th><th>FIPS</th><th>Level</th><th>Approved mode</th><th>Certificate</th><th>Evidence</th><th>Hardware-backed</th><th>Notes</th></tr></thead><tbody>');
    for (const x of report.modules) {
      b.push(
        `<tr data-backend="${esc(x.backend)}"><td>${esc(x.backend)}</td><td>${esc(x.description)}</td><td>${esc([x.manufacturer, x.model].filter(Boolean).join(' ') || '—')}</td><td>${esc(x.firmwareVersion ?? '—')}</td><td>${esc(x.fips.standard)}</td><td class="num">${x.fips.level}</td><td>${esc(approvedModeText(x.fips.approvedMode, x.fips.evidence))}</td><td>${x.fips.certificate ? `#${esc(x.fips.certificate)} (${esc(x.fips.certificateStatus ?? 'unknown')})` : '—'}</td><td data-evidence="${esc(x.fips.evidence ?? 'none')}">${esc(evidenceText(x.fips.evidence))}</td><td>${x.hardwareBacked ? 'yes' : 'no'}</td><td>${esc(x.fips.notes)}${(x.fips.findings ?? []).map((f) => `<br><strong>Contradiction:</strong> ${esc(f)}`).join('')}</td></tr>`,
      );
    }
    b.push('</tbody></table>');
  }
  b.push('</section>');

  // ---- audit integrity
  b.push('<section id="audit-integrity"><h2>Audit integrity</h2>');
  b.push(`<p>Hash chain: <strong id="audit-chain-status">${a.ok ? 'verified' : 'FAILED'}</strong></p>`);
  b.push(
    kv([
      ['Message', a.message],
      ['Problem', a.problem ? `${a.problem}${a.firstBadSeq !== undefined ? ` at seq ${a.firstBadSeq}` : ''}` : undefined],
      ['Records / checkpoints', `${n(a.records)} / ${n(a.checkpoints)}`],
      ['Checkpoints signed', a.checkpointsSigned ? `yes${a.checkpointKeyId ? ` (${a.checkpointKeyId}${a.checkpointBackend ? ` on ${a.checkpointBackend}` : ''})` : ''}` : 'no'],
      ['Checkpoint key sha256', a.checkpointPublicKeySha256],
      ['Fail closed', a.failClosed ? 'yes' : 'no'],
      ['Alerts configured', a.alertsConfigured ? 'yes' : 'no'],
      ['Retention', `${n(a.retentionDays)} days (${n(a.hotDays)} immediately available)`],
      ['Oldest record', a.oldestRecord],
      ['Verification time', formatDuration(a.durationMs)],
    ]),
  );
  b.push('</section>');

  // ---- scores' formulas
  b.push('<section id="score-formulas"><h2>How the scores are computed</h2><table><thead><tr><th>Score</th><th>Value</th><th>Formula</th><th>Inputs</th></tr></thead><tbody>');
  for (const k of ['availability', 'integrity', 'confidentiality'] as const) {
    const sc = report.scores[k];
    b.push(`<tr><td>${k}</td><td class="num">${esc(n(sc.value))}</td><td>${esc(sc.formula)}</td><td>${esc(Object.entries(sc.inputs).map(([name, v]) => `${name}=${typeof v === 'number' ? n(v) : v}`).join(', '))}</td></tr>`);
  }
  b.push('</tbody></table></section>');

  // ---- inventory
  b.push(`<section id="inventory"><h2>Key inventory</h2><p>${n(inv.logicalKeys)} logical keys, ${n(inv.versions)} versions <span class="muted">(source: ${esc(inv.source)})</span></p>`);
  for (const [title, map] of [
    ['By state', inv.byState],
    ['By algorithm', inv.byAlgorithm],
    ['By backend', inv.byBackend],
  ] as const) {
    b.push(`<h3>${title}</h3><table><tbody>${Object.entries(map).map(([k, v]) => `<tr><th>${esc(k)}</th><td class="num">${n(v)}</td></tr>`).join('') || '<tr><td class="muted">none</td></tr>'}</tbody></table>`);
  }
  b.push('</section>');

  if (report.commonCriteria) {
    b.push('<section id="common-criteria"><h2>Common Criteria key table</h2><table><thead><tr><th>Key</th><th>State</th><th>Algorithm</th><th>Size (bits)</th><th>Standard</th><th>Destruction method</th><th>Lifecycle (registry)</th><th>Audited events in period</th></tr></thead><tbody>');
    for (const k of report.commonCriteria.keys) {
      const lifecycle = k.lifecycle.map((l) => `${l.time ?? '(no time)'} ${l.from ?? 'new'}→${l.to} by ${l.actor ?? '(no actor)'}`);
      const events = k.auditedEvents.map((e) => `${e.time} ${e.type} ${e.outcome} by ${e.actor}`);
      if (k.auditedEventsOmitted > 0) events.push(`… ${n(k.auditedEventsOmitted)} more`);
      b.push(
        `<tr data-key="${esc(k.keyId)}"><td>${esc(k.keyId)}</td><td>${esc(k.state)}</td><td>${esc(k.algorithm)}</td><td class="num">${k.sizeBits !== undefined ? n(k.sizeBits) : '—'}</td><td>${esc(k.standard)}</td><td>${esc(k.destructionMethod)}</td><td>${lifecycle.map(esc).join('<br>') || '—'}</td><td>${events.map(esc).join('<br>') || '—'}</td></tr>`,
      );
    }
    b.push('</tbody></table></section>');
  }

  // ---- passes, not applicable, rules, config
  b.push(`<section id="passes"><h2>Passed rules (${report.passes.length})</h2>`);
  b.push(report.passes.length === 0 ? '<p class="muted">None.</p>' : `<table><thead><tr><th>Rule</th><th>Title</th><th>Result</th></tr></thead><tbody>${report.passes.map((p) => `<tr><td>${esc(p.ruleId)}</td><td>${esc(p.title)}</td><td>${esc(p.message)}</td></tr>`).join('')}</tbody></table>`);
  b.push('</section>');
  b.push(`<section id="not-applicable"><h2>Not applicable (${report.notApplicable.length})</h2>`);
  b.push(report.notApplicable.length === 0 ? '<p class="muted">None.</p>' : `<table><thead><tr><th>Rule</th><th>Title</th><th>Why</th></tr></thead><tbody>${report.notApplicable.map((p) => `<tr><td>${esc(p.ruleId)}</td><td>${esc(p.title)}</td><td>${esc(p.message)}</td></tr>`).join('')}</tbody></table>`);
  b.push('</section>');
  b.push(`<section id="rules"><h2>Rules evaluated (${m.rules.length})</h2><table><thead><tr><th>Rule</th><th>Title</th><th>Severity now</th><th>Category</th><th>Source</th></tr></thead><tbody>`);
  for (const r of m.rules) b.push(`<tr><td>${esc(r.id)}</td><td>${esc(r.title)}</td><td class="sev sev-${esc(r.severity)}">${esc(r.severity)}</td><td>${esc(r.category)}</td><td>${esc(r.source)}</td></tr>`);
  b.push('</tbody></table></section>');
  b.push(`<section id="configuration"><h2>Configuration</h2><details><summary>Dates, thresholds and policy facts used</summary><pre>${esc(JSON.stringify(m.config, null, 2))}</pre></details></section>`);
  b.push(`<footer class="muted"><p>Generated by ${esc(m.tool.name)} ${esc(m.tool.version)} at ${esc(m.generatedAt)}.</p></footer>`);
  b.push('</body></html>');
  return `${b.join('\n')}\n`;
}
