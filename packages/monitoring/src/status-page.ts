import type { HealthLevel, HealthReport } from './health.js';
import type { MetricsSnapshot } from './metrics.js';

const COLOR: Record<HealthLevel, string> = { Healthy: '#1a7f37', Degraded: '#9a6700', Critical: '#cf222e' };

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The `/status` page: plain HTML with inline CSS and SVG, no script, no external asset. */
export function renderStatusPage(input: { report: HealthReport; snapshot: MetricsSnapshot; title: string; keyCounts?: Record<string, number> | undefined }): string {
  const { report, snapshot, title } = input;
  const keyCounts = input.keyCounts ?? snapshot.keyCounts;
  const keys = keyCounts
    ? `<h2>Keys</h2>\n<p>Key versions by state: <span id="keys-total">${Object.values(keyCounts).reduce((a, b) => a + b, 0)}</span> in all.</p>` +
      `<table id="key-states"><tr><th>state</th><th>versions</th></tr>${Object.entries(keyCounts)
        .sort((a, b) => a[0].localeCompare(b[0]))
        .map(([state, n]) => `<tr data-state="${escapeHtml(state)}"><td>${escapeHtml(state)}</td><td class="n">${n}</td></tr>`)
        .join('')}</table>`
    : '';
  const checks = report.checks
    .map(
      (c) =>
        `<tr data-check="${escapeHtml(c.name)}"><td>${escapeHtml(c.name)}</td><td class="s" style="color:${COLOR[c.status]}">${c.status}</td><td>${escapeHtml(c.message)}</td>` +
        `<td>${c.metric === undefined ? '' : escapeHtml(`${fmt(c.metric)}${c.unit ? ` ${c.unit}` : ''}`)}</td><td>${fmt(c.durationMs)} ms</td></tr>`,
    )
    .join('');
  const ops = [...snapshot.operations]
    .sort((a, b) => a.operation.localeCompare(b.operation) || a.algorithm.localeCompare(b.algorithm))
    .map(
      (o) =>
        `<tr data-operation="${escapeHtml(o.operation)}" data-algorithm="${escapeHtml(o.algorithm)}"><td>${escapeHtml(o.operation)}</td><td>${escapeHtml(o.algorithm)}</td>` +
        `<td class="n success">${o.success}</td><td class="n failure">${o.failure}</td><td class="n">${fmt(o.meanMs)}</td><td class="n">${fmt(o.maxMs)}</td></tr>`,
    )
    .join('');
  const errors = snapshot.errors.map((e) => `<tr><td>${escapeHtml(e.operation)}</td><td>${escapeHtml(e.code)}</td><td class="n">${e.count}</td></tr>`).join('');
  const pool = snapshot.pool
    ? `<p id="pool">Session pool: ${snapshot.pool.inUse} in use of ${snapshot.pool.max} (${snapshot.pool.size} open), ${snapshot.pool.waiting} waiting${snapshot.circuitOpen ? ' — <strong>circuit open</strong>' : ''}</p>`
    : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="10"><title>${escapeHtml(title)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1f2328}
h1{font-size:20px}h2{font-size:16px;margin-top:24px}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
#overall{font-size:18px;font-weight:600}
</style></head><body>
<h1>${escapeHtml(title)}</h1>
<p id="overall">Overall: <span id="overall-status" style="color:${COLOR[report.status]}">${report.status}</span></p>
<p>Checked ${escapeHtml(report.timestamp.toISOString())} in ${fmt(report.durationMs)} ms · up ${fmt(snapshot.uptimeSeconds)} s</p>
<h2>Checks</h2>
<table id="checks"><tr><th>check</th><th>status</th><th>message</th><th>metric</th><th>took</th></tr>${checks}</table>
<h2>Operations</h2>
<p>Total: <span id="total-success">${snapshot.totals.success}</span> succeeded, <span id="total-failure">${snapshot.totals.failure}</span> failed; ${snapshot.keyGenerations} key(s) generated.</p>
<table id="operations"><tr><th>operation</th><th>algorithm</th><th>success</th><th>failure</th><th>mean ms</th><th>max ms</th></tr>${ops}</table>
${errors ? `<h2>Errors</h2><table id="errors"><tr><th>operation</th><th>code</th><th>count</th></tr>${errors}</table>` : ''}
${pool}
${keys}
<h2>Recent latency</h2>
${latencyChart(snapshot.recentLatencies)}
</body></html>
`;
}

function latencyChart(points: MetricsSnapshot['recentLatencies']): string {
  const w = 640;
  const h = 180;
  const pad = 32;
  if (points.length === 0) return `<svg id="latency-chart" role="img" aria-label="no operations yet" width="${w}" height="40"><text x="0" y="24">no operations yet</text></svg>`;
  const max = Math.max(...points.map((p) => p.ms), 0.001);
  const step = points.length > 1 ? (w - pad - 8) / (points.length - 1) : 0;
  const xy = points.map((p, i) => `${(pad + i * step).toFixed(1)},${(h - pad - (p.ms / max) * (h - 2 * pad)).toFixed(1)}`);
  return (
    `<svg id="latency-chart" role="img" aria-label="latency of the last ${points.length} operations, max ${fmt(max)} ms" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" xmlns="http://www.w3.org/2000/svg">` +
    `<line x1="${pad}" y1="${h - pad}" x2="${w - 8}" y2="${h - pad}" stroke="#8c959f"/><line x1="${pad}" y1="${pad}" x2="${pad}" y2="${h - pad}" stroke="#8c959f"/>` +
    `<text x="2" y="${pad + 4}" font-size="10">${fmt(max)} ms</text><text x="2" y="${h - pad + 4}" font-size="10">0</text>` +
    `<text x="${pad}" y="${h - 8}" font-size="10">last ${points.length} operations (oldest left)</text>` +
    `<polyline fill="none" stroke="#0969da" stroke-width="1.5" points="${xy.join(' ')}"/></svg>`
  );
}

function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  return Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 1 ? n.toFixed(2) : n.toFixed(3);
}
