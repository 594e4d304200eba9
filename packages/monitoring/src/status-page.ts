import { createHash } from 'node:crypto';
import type { ActivityPoint } from './activity.js';
import type { Alert } from './alerts.js';
import type { DisplayLevel, StatusKeyView, StatusView } from './status-view.js';

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/*
 * One stylesheet, allowed by its hash in the Content-Security-Policy: the page has no script,
 * no style attribute, no external asset. Colours are set by class (SVG by presentation attributes).
 */
const STYLE = `
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--ok:#1a7f37;--okbg:#dafbe1;--warn:#9a6700;--warnbg:#fff8c5;--crit:#cf222e;--critbg:#ffebe9;--blue:#0969da;--orange:#bc4c00}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:var(--fg);background:var(--bg)}
main{max-width:1240px;margin:0 auto;padding:20px 24px 32px}
header{display:flex;align-items:center;justify-content:space-between;gap:16px;margin-bottom:16px}
h1{font-size:22px;margin:0}
h2{font-size:15px;margin:0 0 10px}
.sub{color:var(--muted);font-size:12px;margin-top:2px}
.pill{display:inline-block;padding:2px 10px;border-radius:999px;font-weight:600;font-size:13px;white-space:nowrap}
.pill.big{font-size:18px;padding:6px 18px}
.Healthy{color:var(--ok)}.pill.Healthy{background:var(--okbg)}
.Warning,.Degraded{color:var(--warn)}.pill.Warning,.pill.Degraded{background:var(--warnbg)}
.Critical{color:var(--crit)}.pill.Critical{background:var(--critbg)}
.banner{border:1px solid;border-radius:6px;padding:10px 14px;margin-bottom:14px}
.banner.warn{border-color:#d4a72c;background:var(--warnbg)}
.banner.crit{border-color:#ff8182;background:var(--critbg)}
.tiles{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin-bottom:14px}
.tile,.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.tile .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.tile .value{font-size:26px;font-weight:600;font-variant-numeric:tabular-nums;margin-top:2px}
.tile .hint{color:var(--muted);font-size:12px}
.tile .value.pair{font-size:21px;white-space:nowrap;padding-top:4px}
.tile.bad .value{color:var(--crit)}.tile.warn .value{color:var(--warn)}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:12px;margin-bottom:14px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:12px;margin-bottom:14px}
.card{margin-bottom:14px}.charts .card,.grid2 .card{margin-bottom:0}
svg.chart{width:100%;height:auto;display:block}
.legend{font-size:12px;color:var(--muted);margin-top:4px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 10px;vertical-align:-1px}
.sw.ok{background:#4ac26b}.sw.fail{background:var(--crit)}.sw.p50{background:var(--blue)}.sw.p99{background:var(--orange)}
table{border-collapse:collapse;width:100%}
th,td{padding:6px 8px;text-align:left;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;background:#fafbfc}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.muted{color:var(--muted)}.small{font-size:12px}
.late{color:var(--crit);font-weight:600}.soon{color:var(--warn);font-weight:600}
.chips>span{display:inline-block;background:var(--bg);border:1px solid var(--line);border-radius:999px;padding:1px 9px;margin:0 6px 6px 0;font-size:12px}
.state{font-weight:600}.state.Active,.state.enabled{color:var(--ok)}.state.Compromised,.state.Revoked{color:var(--crit)}.state.Suspended,.state.PendingDestruction,.state.disabled,.state.pending-deletion{color:var(--warn)}.state.Superseded,.state.Archived,.state.Destroyed,.state.destroyed{color:var(--muted)}
footer{color:var(--muted);font-size:12px;margin-top:8px}
@media (max-width:1000px){.tiles{grid-template-columns:repeat(3,1fr)}.charts,.grid2{grid-template-columns:1fr}}
`;

/** The page's own policy (also in a meta element, so a saved copy keeps it): nothing but its stylesheet. */
const PAGE_CSP = `default-src 'none'; style-src 'sha256-${createHash('sha256').update(STYLE).digest('base64')}'; img-src 'none'; base-uri 'none'; form-action 'none'`;
/** The Content-Security-Policy header of `/status` (frame-ancestors only works as a header). */
export const STATUS_PAGE_CSP = `${PAGE_CSP}; frame-ancestors 'none'`;

const DISPLAY: Record<DisplayLevel, string> = { Healthy: 'Healthy', Warning: 'Warning', Degraded: 'Degraded', Critical: 'Critical' };

/** The `/status` page: one self-contained HTML document (inline CSS allowed by hash, inline SVG, no script). */
export function renderStatusPage(view: StatusView): string {
  const a = view.activity;
  const ops = a.totals.success + a.totals.failure;
  const failRate = ops > 0 ? a.totals.failure / ops : 0;
  const firing = view.alerts?.firing ?? [];
  const critFiring = firing.filter((x) => x.severity === 'critical').length;
  const windowText = minutesText(a.windowMs);
  const shortWindow = duration(a.windowMs).replace(/^60 min$/, '1 h');
  const banners: string[] = [];
  if (view.fips.display !== 'Healthy') {
    const evidence = view.fips.details?.evidence;
    banners.push(
      `<div class="banner ${view.fips.display === 'Critical' ? 'crit' : 'warn'}" id="fips-warning" role="alert"><strong>FIPS ${escapeHtml(DISPLAY[view.fips.display].toLowerCase())}:</strong> ` +
        `${escapeHtml(sentence(view.fips.warning ?? view.fips.summary))}${evidence ? ` <span class="muted">(evidence: ${escapeHtml(evidence)})</span>` : ''} ` +
        `${view.fips.details?.standard === 'none' ? 'Keys here do not meet a FIPS 140 requirement: use a validated module where a framework asks for one.' : 'Confirm the module and its certificate before relying on it as FIPS 140 evidence.'}</div>`,
    );
  }
  if (a.readError) banners.push(`<div class="banner crit" id="activity-error"><strong>Activity could not be read:</strong> ${escapeHtml(a.readError)} — figures below are from the last successful read.</div>`);
  if (view.keys?.error) banners.push(`<div class="banner crit" id="keys-error"><strong>Key inventory could not be read:</strong> ${escapeHtml(view.keys.error)}</div>`);

  const tiles = [
    tile('tile-operations', `Operations · ${shortWindow}`, fmtInt(ops), `${fmtNum(a.totals.perMinute)} per minute`),
    tile('tile-failures', `Failures · ${shortWindow}`, fmtInt(a.totals.failure), ops > 0 ? `${(failRate * 100).toFixed(failRate > 0 && failRate < 0.001 ? 3 : 1)} % of operations` : 'no operations', a.totals.failure > 0 ? 'bad' : ''),
    tile('tile-latency', `${latencyLabel(a.latencyTypes)} p50 / p99`, a.latency.p50Ms === undefined ? '—' : `${fmtMs(a.latency.p50Ms)} / ${fmtMs(a.latency.p99Ms!)}`, a.latency.count > 0 ? `ms over ${fmtInt(a.latency.count)} operations` : 'no operations'),
    tile('tile-logins', `Login failures · ${shortWindow}`, fmtInt(a.loginFailures.count), a.loginFailures.recent[0] ? `last ${relative(a.loginFailures.recent[0].time, view.generatedAt)}` : 'none recorded', a.loginFailures.count > 0 ? 'bad' : ''),
    tile('tile-alerts', 'Alerts firing', view.alerts ? fmtInt(firing.length) : '—', view.alerts ? (critFiring > 0 ? `${critFiring} critical` : firing.length > 0 ? 'warnings only' : 'all quiet') : 'no alert manager', critFiring > 0 ? 'bad' : firing.length > 0 ? 'warn' : ''),
    tile('tile-fips', 'FIPS 140', fipsHeadline(view), view.fips.summary, view.fips.display === 'Critical' ? 'bad' : view.fips.display === 'Warning' ? 'warn' : ''),
  ].join('');

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${escapeHtml(PAGE_CSP)}">
<meta http-equiv="refresh" content="${view.refreshSeconds}"><title>${escapeHtml(view.title)}</title>
<style>${STYLE}</style></head><body><main>
<header><div><h1>${escapeHtml(view.title)}</h1>
<div class="sub">${a.connected ? 'Every process, from' : 'View of'} <span id="activity-source">${escapeHtml(a.source)}</span> · generated ${escapeHtml(clock(view.generatedAt))} UTC · refreshes every ${view.refreshSeconds} s · <span class="mono">/status.json</span></div></div>
<div>Health <span id="overall-status" class="pill big ${view.health.status}">${view.health.status}</span></div></header>
${banners.join('\n')}
<section class="tiles">${tiles}</section>
<section class="charts">
<div class="card"><h2>Operations per minute · ${windowText}</h2>${rateChart(a.series)}<div class="legend"><span class="sw ok"></span>succeeded<span class="sw fail"></span>failed</div></div>
<div class="card"><h2>${escapeHtml(latencyLabel(a.latencyTypes))} latency per minute (ms)</h2>${latencyChart(a.series)}<div class="legend"><span class="sw p50"></span>p50<span class="sw p99"></span>p99</div></div>
</section>
${alertsCard(view)}
${keysCard(view)}
<section class="grid2">
<div class="card"><h2>Health checks</h2>${checksTable(view)}<p class="small muted">Checked ${escapeHtml(clock(view.health.timestamp))} UTC in ${fmtMs(view.health.durationMs)} ms.</p></div>
<div class="card"><h2>Operations by type · ${windowText}</h2>${operationsTable(view)}</div>
</section>
<section class="grid2">
<div class="card"><h2>Processes · ${windowText}</h2>${processesTable(view)}</div>
<div class="card"><h2>Login failures</h2>${loginsTable(view)}</div>
</section>
<section class="grid2">
<div class="card"><h2>Errors · ${windowText}</h2>${errorsTable(view)}</div>
<div class="card"><h2>This monitor process</h2>${processCard(view)}</div>
</section>
<footer>Olocus HSM monitoring · ${
    a.connected
      ? `figures for the installation come from ${escapeHtml(a.source)}, read up to record ${a.lastSeq}${a.lastReadAt ? ` at ${escapeHtml(clock(a.lastReadAt))} UTC` : ''}`
      : 'figures are this process\'s own operations: connect the audit log (createMonitoring({ activity })) to see every process'
  } · window ${escapeHtml(clock(a.from))}–${escapeHtml(clock(a.to))} UTC.</footer>
</main></body></html>
`;
}

function tile(id: string, label: string, value: string, hint: string, cls = ''): string {
  // Two figures in one tile (p50 / p99) get a smaller size so they stay on one line.
  return `<div class="tile ${cls}" id="${id}"><div class="label">${escapeHtml(label)}</div><div class="value${value.includes(' / ') ? ' pair' : ''}">${escapeHtml(value)}</div><div class="hint">${escapeHtml(hint)}</div></div>`;
}

function fipsHeadline(view: StatusView): string {
  const d = view.fips.details;
  if (d && typeof d.standard === 'string' && d.standard !== 'none' && d.standard !== 'unknown' && typeof d.level === 'number' && d.level > 0) return `L${d.level} ${DISPLAY[view.fips.display] === 'Healthy' ? '✓' : '⚠'}`;
  return view.fips.display === 'Healthy' ? 'OK' : `⚠ ${DISPLAY[view.fips.display]}`;
}

function latencyLabel(types: string[]): string {
  const names = types.map((t) => t.replace(/^key\./, ''));
  const text = names.join(', ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// ------------------------------------------------------------------ charts

const W = 600;
const H = 210;
const PAD = { l: 44, r: 12, t: 12, b: 28 };

/** An axis maximum of four equal, round steps (1, 2, 2.5 or 5 × 10^k each) at or above `v`. */
function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const raw = v / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * p) return 4 * m * p;
  return 40 * p;
}

function axes(series: ActivityPoint[], max: number): string {
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  let out = '';
  for (let i = 0; i <= 4; i++) {
    const y = PAD.t + plotH - (i / 4) * plotH;
    const value = (max * i) / 4;
    out += `<line x1="${PAD.l}" y1="${y.toFixed(1)}" x2="${W - PAD.r}" y2="${y.toFixed(1)}" stroke="${i === 0 ? '#8c959f' : '#eaeef2'}"/>`;
    out += `<text x="${PAD.l - 6}" y="${(y + 4).toFixed(1)}" font-size="11" fill="#59636e" text-anchor="end">${escapeHtml(fmtAxis(value))}</text>`;
  }
  const n = series.length;
  const step = Math.max(1, Math.round(n / 4));
  for (let i = 0; i < n - step / 2; i += step) {
    const x = PAD.l + ((i + 0.5) / n) * plotW;
    out += `<text x="${x.toFixed(1)}" y="${H - 8}" font-size="11" fill="#59636e" text-anchor="middle">${escapeHtml(clock(series[i]!.start).slice(11, 16))}</text>`;
  }
  if (n > 0) out += `<text x="${W - PAD.r}" y="${H - 8}" font-size="11" fill="#59636e" text-anchor="end">now</text>`;
  return out;
}

function rateChart(series: ActivityPoint[]): string {
  const n = series.length;
  const peak = Math.max(0, ...series.map((p) => p.success + p.failure));
  const total = series.reduce((s, p) => s + p.success + p.failure, 0);
  const max = niceMax(peak);
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  const bw = plotW / Math.max(1, n);
  let bars = '';
  series.forEach((p, i) => {
    const count = p.success + p.failure;
    if (count === 0) return;
    const x = PAD.l + i * bw + bw * 0.12;
    const w = Math.max(1, bw * 0.76);
    const hOk = (p.success / max) * plotH;
    const hFail = (p.failure / max) * plotH;
    const base = PAD.t + plotH;
    const label = `${clock(p.start).slice(11, 16)} UTC: ${p.success} succeeded, ${p.failure} failed`;
    bars += `<g class="point" data-start="${p.start}" data-success="${p.success}" data-failure="${p.failure}"><title>${escapeHtml(label)}</title>`;
    if (p.success > 0) bars += `<rect x="${x.toFixed(1)}" y="${(base - hOk).toFixed(1)}" width="${w.toFixed(1)}" height="${Math.max(1, hOk).toFixed(1)}" fill="#4ac26b"/>`;
    if (p.failure > 0) bars += `<rect x="${x.toFixed(1)}" y="${(base - hOk - Math.max(1, hFail)).toFixed(1)}" width="${w.toFixed(1)}" height="${Math.max(1, hFail).toFixed(1)}" fill="#cf222e"/>`;
    bars += '</g>';
  });
  const empty = total === 0 ? `<text x="${PAD.l + plotW / 2}" y="${PAD.t + plotH / 2}" font-size="13" fill="#59636e" text-anchor="middle">no operations in this window</text>` : '';
  return (
    `<svg id="rate-chart" class="chart" role="img" aria-label="operations per minute, ${total} in the window, peak ${peak} per minute" viewBox="0 0 ${W} ${H}" xmlns="http://www.w3.org/2000/svg">` +
    axes(series, max) +
    bars +
    empty +
    '</svg>'
  );
}

function latencyChart(series: ActivityPoint[]): string {
  const n = series.length;
  const withData = series.map((p, i) => ({ p, i })).filter(({ p }) => p.p50Ms !== undefined);
  const peak = Math.max(0, ...withData.map(({ p }) => p.p99Ms ?? p.p50Ms ?? 0));
  const max = niceMax(peak);
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  const x = (i: number) => PAD.l + ((i + 0.5) / Math.max(1, n)) * plotW;
  const y = (ms: number) => PAD.t + plotH - (Math.min(ms, max) / max) * plotH;
  const line = (field: 'p50Ms' | 'p99Ms', color: string, id: string) => {
    // A minute without operations breaks the line rather than being drawn as zero.
    const runs: string[][] = [];
    let run: string[] = [];
    let prev = -2;
    for (const { p, i } of withData) {
      const v = p[field];
      if (v === undefined) continue;
      if (i !== prev + 1 && run.length > 0) {
        runs.push(run);
        run = [];
      }
      run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      prev = i;
    }
    if (run.length > 0) runs.push(run);
    return `<g id="${id}">${runs.map((r) => (r.length > 1 ? `<polyline fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round" points="${r.join(' ')}"/>` : '')).join('')}</g>`;
  };
  let dots = '';
  for (const { p, i } of withData) {
    const label = `${clock(p.start).slice(11, 16)} UTC: p50 ${fmtMs(p.p50Ms!)} ms, p99 ${fmtMs(p.p99Ms ?? p.p50Ms!)} ms`;
    dots +=
      `<g class="point" data-start="${p.start}" data-p50="${p.p50Ms}" data-p99="${p.p99Ms ?? p.p50Ms}"><title>${escapeHtml(label)}</title>` +
      `<circle cx="${x(i).toFixed(1)}" cy="${y(p.p99Ms ?? p.p50Ms!).toFixed(1)}" r="2.6" fill="#bc4c00"/><circle cx="${x(i).toFixed(1)}" cy="${y(p.p50Ms!).toFixed(1)}" r="2.6" fill="#0969da"/></g>`;
  }
  const empty = withData.length === 0 ? `<text x="${PAD.l + plotW / 2}" y="${PAD.t + plotH / 2}" font-size="13" fill="#59636e" text-anchor="middle">no timed operations in this window</text>` : '';
  return (
    `<svg id="latency-chart" class="chart" role="img" aria-label="latency per minute, p50 and p99, peak ${fmtMs(peak)} ms" viewBox="0 0 ${W} ${H}" xmlns="http://www.w3.org/2000/svg">` +
    axes(series, max) +
    line('p99Ms', '#bc4c00', 'latency-p99') +
    line('p50Ms', '#0969da', 'latency-p50') +
    dots +
    empty +
    '</svg>'
  );
}

// ------------------------------------------------------------------ tables

function alertRow(x: Alert, now: string): string {
  const cls = x.state === 'resolved' ? 'Healthy' : x.severity === 'critical' ? 'Critical' : 'Warning';
  const since = x.state === 'resolved' ? (x.resolvedAt ?? x.firedAt) : x.firedAt;
  return (
    `<tr data-alert="${escapeHtml(x.key)}" data-state="${x.state}"><td><span class="pill ${cls}">${x.state === 'resolved' ? 'resolved' : `firing · ${escapeHtml(x.severity)}`}</span></td>` +
    `<td class="mono">${escapeHtml(x.key)}</td><td>${escapeHtml(x.summary)}</td><td class="small">${escapeHtml(clock(since))} UTC<br><span class="muted">${escapeHtml(relative(since, now))}</span></td></tr>`
  );
}

function alertsCard(view: StatusView): string {
  if (!view.alerts) return '';
  const { firing, resolved } = view.alerts;
  const rows = [...firing.sort((a, b) => (a.severity === b.severity ? a.firedAt.localeCompare(b.firedAt) : a.severity === 'critical' ? -1 : 1)), ...resolved.slice(0, 10)].map((x) => alertRow(x, view.generatedAt)).join('');
  return `<section class="card" id="alerts"><h2>Alerts · ${firing.length} firing, ${resolved.length} resolved recently</h2>${
    rows ? `<table><tr><th>state</th><th>alert</th><th>summary</th><th>since</th></tr>${rows}</table>` : '<p class="muted">No alert has fired since this monitor started.</p>'
  }</section>`;
}

function dateCell(at: string | undefined, now: string, attention: boolean): string {
  if (!at) return '<td class="muted">—</td>';
  const past = at <= now;
  const cls = attention ? (past ? 'late' : 'soon') : '';
  return `<td class="small"><span class="${cls}">${escapeHtml(at.slice(0, 10))}</span><br><span class="muted">${escapeHtml(relative(at, now))}</span></td>`;
}

function keysCard(view: StatusView): string {
  if (!view.keys) return '';
  const { counts, items } = view.keys;
  const total = Object.values(counts).reduce((s, n) => s + n, 0);
  const chips = Object.entries(counts)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([state, n]) => `<span data-state="${escapeHtml(state)}"><span class="state ${escapeHtml(state)}">${escapeHtml(state)}</span> <b class="n">${n}</b></span>`)
    .join('');
  const shown = items.filter((k) => k.state !== 'Destroyed' && k.state !== 'destroyed');
  const hidden = items.length - shown.length;
  const rows = shown
    .map((k: StatusKeyView) => {
      const attention = k.attention !== 'ok';
      return (
        `<tr data-key="${escapeHtml(k.keyId)}" data-state="${escapeHtml(k.state)}" data-attention="${k.attention}"><td class="mono">${escapeHtml(k.keyId)}${k.source === 'backend' ? ' <span class="muted small">(backend only)</span>' : ''}</td>` +
        `<td><span class="state ${escapeHtml(k.state)}">${escapeHtml(k.state)}</span></td><td class="small">${escapeHtml(k.algorithm ?? '—')}</td>` +
        `${dateCell(k.rotationDueAt, view.generatedAt, attention)}${dateCell(k.expiresAt, view.generatedAt, attention)}` +
        `<td class="small">${k.lastUsedAt ? escapeHtml(relative(k.lastUsedAt, view.generatedAt)) : '<span class="muted">—</span>'}</td><td class="n">${k.usageCount ?? ''}</td></tr>`
      );
    })
    .join('');
  return `<section class="card" id="keys"><h2>Keys · <span id="keys-total">${total}</span> versions</h2><div class="chips" id="key-states">${chips}</div>${
    rows
      ? `<table id="key-inventory"><tr><th>key</th><th>state</th><th>algorithm</th><th>next rotation</th><th>cryptoperiod ends</th><th>last used</th><th class="n">uses</th></tr>${rows}</table>`
      : '<p class="muted">No keys.</p>'
  }${hidden > 0 ? `<p class="small muted">${hidden} destroyed version(s) not listed.</p>` : ''}</section>`;
}

function checksTable(view: StatusView): string {
  const rows = view.health.checks
    .map(
      (c) =>
        `<tr data-check="${escapeHtml(c.name)}" data-status="${c.status}"><td>${escapeHtml(c.name)}</td><td class="s ${c.display}">${c.display}</td>` +
        `<td>${escapeHtml(c.message)}${c.warning ? `<br><span class="soon small">⚠ ${escapeHtml(c.warning)}</span>` : ''}</td><td class="n small">${fmtMs(c.durationMs)} ms</td></tr>`,
    )
    .join('');
  return `<table id="checks"><tr><th>check</th><th>status</th><th>detail</th><th class="n">took</th></tr>${rows}</table>`;
}

function operationsTable(view: StatusView): string {
  const rows = view.activity.operations
    .map(
      (o) =>
        `<tr data-type="${escapeHtml(o.type)}"><td>${escapeHtml(o.type)}</td><td class="n success">${o.success}</td><td class="n failure${o.failure > 0 ? ' late' : ''}">${o.failure}</td>` +
        `<td class="n">${o.p50Ms === undefined ? '—' : fmtMs(o.p50Ms)}</td><td class="n">${o.p99Ms === undefined ? '—' : fmtMs(o.p99Ms)}</td><td class="n">${o.maxMs === undefined ? '—' : fmtMs(o.maxMs)}</td></tr>`,
    )
    .join('');
  const t = view.activity.totals;
  return rows
    ? `<table id="operations"><tr><th>operation</th><th class="n">ok</th><th class="n">failed</th><th class="n">p50 ms</th><th class="n">p99 ms</th><th class="n">max ms</th></tr>${rows}` +
        `<tr><th>total</th><th class="n" id="total-success">${t.success}</th><th class="n" id="total-failure">${t.failure}</th><th></th><th></th><th></th></tr></table>`
    : `<p class="muted">No key operations in this window.</p><span id="total-success" hidden>0</span><span id="total-failure" hidden>0</span>`;
}

function processesTable(view: StatusView): string {
  const rows = view.activity.processes
    .map((p) => `<tr data-origin="${escapeHtml(p.origin)}"><td class="mono">${escapeHtml(p.origin)}</td><td class="n">${p.operations}</td><td class="n${p.failures > 0 ? ' late' : ''}">${p.failures}</td><td class="small">${escapeHtml(relative(p.lastSeen, view.generatedAt))}</td></tr>`)
    .join('');
  return rows ? `<table id="processes"><tr><th>process (host:pid)</th><th class="n">operations</th><th class="n">failed</th><th>last seen</th></tr>${rows}</table>` : '<p class="muted">No process performed a key operation in this window.</p>';
}

function loginsTable(view: StatusView): string {
  const l = view.activity.loginFailures;
  const rows = l.recent
    .slice(0, 8)
    .map(
      (r) =>
        `<tr class="login-failure"><td class="small">${escapeHtml(clock(r.time))}<br><span class="muted">${escapeHtml(relative(r.time, view.generatedAt))}</span></td><td class="mono">${escapeHtml(r.origin ?? '—')}</td>` +
        `<td>${escapeHtml(r.errorCode ?? '—')}</td><td class="small">${escapeHtml([r.backend, r.operation, r.actor].filter(Boolean).join(' · '))}</td></tr>`,
    )
    .join('');
  return `<p><span id="login-failures" class="${l.count > 0 ? 'late' : ''}">${l.count}</span> in the last ${minutesText(view.activity.windowMs).replace(/^last /, '')}.</p>${
    rows ? `<table id="login-failure-list"><tr><th>when (UTC)</th><th>process</th><th>code</th><th>backend · operation · actor</th></tr>${rows}</table>` : ''
  }`;
}

function errorsTable(view: StatusView): string {
  const rows = view.activity.errors.map((e) => `<tr><td>${escapeHtml(e.type)}</td><td class="mono">${escapeHtml(e.code)}</td><td class="n">${e.count}</td></tr>`).join('');
  return rows ? `<table id="errors"><tr><th>operation</th><th>code</th><th class="n">count</th></tr>${rows}</table>` : '<p class="muted">No failed operations in this window.</p>';
}

function processCard(view: StatusView): string {
  const p = view.process;
  const pool = p.pool ? `<li id="pool">session pool: ${p.pool.inUse} in use of ${p.pool.max} (${p.pool.size} open), ${p.pool.waiting} waiting${p.circuitOpen ? ' — <strong class="late">circuit open</strong>' : ''}</li>` : '<li class="muted">the backend reports no session pool</li>';
  return `<ul class="small"><li>up ${escapeHtml(duration(p.uptimeSeconds * 1000))}</li><li>operations through this process: <span id="process-success">${p.operations.success}</span> succeeded, <span id="process-failure">${p.operations.failure}</span> failed, ${p.keyGenerations} key(s) generated</li>${pool}</ul>`;
}

// ------------------------------------------------------------------ formatting

function sentence(text: string): string {
  const t = text.trim();
  return `${t.charAt(0).toUpperCase()}${t.slice(1)}${/[.!?]$/.test(t) ? '' : '.'}`;
}

function clock(isoTime: string): string {
  return isoTime.slice(0, 19).replace('T', ' ');
}

function minutesText(ms: number): string {
  const min = Math.round(ms / 60_000);
  return min % 60 === 0 ? (min === 60 ? 'last hour' : `last ${min / 60} h`) : `last ${min} min`;
}

function duration(ms: number): string {
  const s = Math.abs(ms) / 1000;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86_400).toFixed(1)} d`;
}

function relative(at: string, now: string): string {
  const d = Date.parse(at) - Date.parse(now);
  if (!Number.isFinite(d)) return '';
  if (Math.abs(d) < 1000) return 'now';
  return d > 0 ? `in ${duration(d)}` : `${duration(d)} ago`;
}

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

function fmtNum(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

function fmtMs(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  return Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : Math.abs(n) >= 1 ? n.toFixed(2) : n.toFixed(3);
}

function fmtAxis(n: number): string {
  if (n === 0) return '0';
  if (n >= 1000) return `${+(n / 1000).toFixed(1)}k`;
  return String(+n.toPrecision(3));
}
