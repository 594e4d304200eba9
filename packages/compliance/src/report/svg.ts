import { escapeHtml as esc } from './escape.js';

export interface BarChartOptions {
  id: string;
  title: string;
  /** One bar per point, in order. */
  points: { label: string; value: number }[];
  /** CSS colour of the bars. */
  color: string;
  width?: number;
  height?: number;
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2).replace(/\.?0+$/, '');
}

/**
 * An inline SVG bar chart (no script, no external resource): bars scaled to the largest value,
 * a y-axis maximum label, the first and last x labels, and a <title> per bar for hover text.
 */
export function barChart(o: BarChartOptions): string {
  const width = o.width ?? 720;
  const height = o.height ?? 200;
  const left = 48;
  const right = 8;
  const top = 24;
  const bottom = 28;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const max = o.points.reduce((m, p) => Math.max(m, p.value), 0);
  const n = Math.max(1, o.points.length);
  const slot = plotW / n;
  const barW = Math.max(0.5, slot * 0.8);
  const parts: string[] = [];
  parts.push(`<svg id="${esc(o.id)}" class="chart" role="img" aria-label="${esc(o.title)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">`);
  parts.push(`<title>${esc(o.title)}</title>`);
  parts.push(`<text x="${left}" y="16" class="chart-title">${esc(o.title)}</text>`);
  parts.push(`<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" class="axis"/>`);
  parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" class="axis"/>`);
  parts.push(`<text x="${left - 4}" y="${top + 4}" text-anchor="end" class="tick">${fmt(max)}</text>`);
  parts.push(`<text x="${left - 4}" y="${top + plotH}" text-anchor="end" class="tick">0</text>`);
  o.points.forEach((p, i) => {
    const h = max === 0 ? 0 : (p.value / max) * plotH;
    const x = left + i * slot + (slot - barW) / 2;
    const y = top + plotH - h;
    parts.push(`<rect x="${fmt(x)}" y="${fmt(y)}" width="${fmt(barW)}" height="${fmt(h)}" fill="${esc(o.color)}" data-label="${esc(p.label)}" data-value="${fmt(p.value)}"><title>${esc(p.label)}: ${fmt(p.value)}</title></rect>`);
  });
  if (o.points.length > 0) {
    parts.push(`<text x="${left}" y="${height - 8}" class="tick">${esc(o.points[0]!.label)}</text>`);
    if (o.points.length > 1) parts.push(`<text x="${left + plotW}" y="${height - 8}" text-anchor="end" class="tick">${esc(o.points[o.points.length - 1]!.label)}</text>`);
  }
  if (max === 0) parts.push(`<text x="${left + plotW / 2}" y="${top + plotH / 2}" text-anchor="middle" class="tick">no events in the period</text>`);
  parts.push('</svg>');
  return parts.join('');
}
