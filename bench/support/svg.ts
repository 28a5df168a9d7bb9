/**
 * Hand-written SVG charts for docs/benchmarks.md (no dependencies): a grouped horizontal bar chart (vhostd beside
 * a reference backend per case) and a small-multiples percentile chart (p50/p99/p99.9 on a log axis). Output is
 * deterministic for the same input so regenerating the doc from unchanged results gives an unchanged diff.
 */

export const WIDTH = 800;
const FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"';
export const COLORS = { vhostd: '#2563eb', reference: '#f59e0b', grid: '#e5e7eb', axis: '#6b7280', text: '#111827' };

export interface BarGroup {
  label: string;
  value: number;
  reference?: number;
}

export interface BarChart {
  title: string;
  unit: string;
  seriesName: string;
  referenceName?: string;
  groups: BarGroup[];
  note?: string;
}

export interface PercentilePanel {
  title: string;
  /** one value per entry of PercentileChart.percentiles */
  values: number[];
  reference?: number[];
}

export interface PercentileChart {
  title: string;
  unit: string;
  percentiles: string[];
  seriesName: string;
  referenceName?: string;
  panels: PercentilePanel[];
  note?: string;
}

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Compact number for labels: integers above 1000 keep all digits with separators, smaller values 3-4 digits. */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1000) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return String(Number(x.toFixed(1)));
  if (a >= 1) return String(Number(x.toFixed(2)));
  return String(Number(x.toPrecision(3)));
}

const r1 = (x: number) => Math.round(x * 10) / 10;

/** Rough text width at a given font size (sans-serif average glyph ~0.58 em); good enough for layout. */
function textWidth(s: string, size: number): number {
  return s.length * size * 0.58;
}

function niceStep(range: number, target: number): number {
  const raw = range / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
}

function tickLabel(x: number): string {
  const a = Math.abs(x);
  if (a >= 1e6 && x % 1e5 === 0) return `${x / 1e6}M`;
  if (a >= 1e4 && x % 1e3 === 0) return `${x / 1e3}k`;
  return fmt(x);
}

function legend(items: { name: string; color: string; dashed?: boolean }[], right: number, y: number): string {
  let x = right;
  const parts: string[] = [];
  for (const it of [...items].reverse()) {
    const w = textWidth(it.name, 12) + 26;
    x -= w;
    const swatch = it.dashed
      ? `<line x1="${r1(x)}" y1="${y - 4}" x2="${r1(x + 16)}" y2="${y - 4}" stroke="${it.color}" stroke-width="2.5" stroke-dasharray="4 3"/>`
      : `<rect x="${r1(x)}" y="${y - 10}" width="14" height="12" rx="2" fill="${it.color}"/>`;
    parts.push(`${swatch}<text x="${r1(x + 20)}" y="${y}" font-size="12" fill="${COLORS.text}">${esc(it.name)}</text>`);
  }
  return parts.join('\n');
}

function frame(height: number, body: string, title: string, note?: string): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" ${FONT}>`,
    `<title>${esc(title)}</title>`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="16" y="24" font-size="15" font-weight="600" fill="${COLORS.text}">${esc(title)}</text>`,
    body,
    note ? `<text x="16" y="${height - 10}" font-size="11" fill="${COLORS.axis}">${esc(note)}</text>` : '',
    `</svg>`,
    '',
  ]
    .filter((l) => l !== '')
    .join('\n');
}

/** Grouped horizontal bars: per case one vhostd bar and (if present) one reference bar below it, linear x axis from 0. */
export function groupedBarChart(c: BarChart): string {
  const hasRef = c.groups.some((g) => g.reference !== undefined);
  const bar = 14;
  const gap = 12;
  const groupH = (hasRef ? 2 : 1) * bar + (hasRef ? 2 : 0) + gap;
  const top = 56;
  const labelW = Math.min(330, Math.max(80, ...c.groups.map((g) => textWidth(g.label, 12)))) + 14;
  const left = 16 + labelW;
  const right = WIDTH - 78; // room for value labels past the bar end
  const plotH = c.groups.length * groupH;
  const axisY = top + plotH;
  const height = axisY + 44 + (c.note ? 16 : 0);
  const max = Math.max(0, ...c.groups.flatMap((g) => [g.value, g.reference ?? 0]));
  const step = niceStep(max || 1, 5);
  const xMax = Math.ceil((max || 1) / step) * step;
  const sx = (v: number) => left + (v / xMax) * (right - left);
  const out: string[] = [];

  for (let t = 0; t <= xMax + step / 2; t += step) {
    const x = r1(sx(t));
    out.push(`<line x1="${x}" y1="${top - 6}" x2="${x}" y2="${axisY}" stroke="${t === 0 ? COLORS.axis : COLORS.grid}" stroke-width="1"/>`);
    out.push(`<text x="${x}" y="${axisY + 16}" font-size="11" fill="${COLORS.axis}" text-anchor="middle">${esc(tickLabel(Number(t.toPrecision(12))))}</text>`);
  }
  out.push(`<line x1="${left}" y1="${axisY}" x2="${right}" y2="${axisY}" stroke="${COLORS.axis}" stroke-width="1"/>`);
  out.push(`<text x="${r1((left + right) / 2)}" y="${axisY + 34}" font-size="12" fill="${COLORS.axis}" text-anchor="middle">${esc(c.unit)}</text>`);

  c.groups.forEach((g, i) => {
    const y0 = top + i * groupH + gap / 2;
    const midY = y0 + (groupH - gap) / 2;
    out.push(`<text x="${left - 8}" y="${r1(midY + 4)}" font-size="12" fill="${COLORS.text}" text-anchor="end">${esc(g.label)}</text>`);
    const bars: [number | undefined, string][] = [[g.value, COLORS.vhostd]];
    if (hasRef) bars.push([g.reference, COLORS.reference]);
    bars.forEach(([v, color], j) => {
      const y = y0 + j * (bar + 2);
      if (v === undefined) return;
      const w = Math.max(1, sx(v) - left);
      out.push(`<rect x="${left}" y="${r1(y)}" width="${r1(w)}" height="${bar}" fill="${color}"/>`);
      out.push(`<text x="${r1(left + w + 4)}" y="${r1(y + bar - 3)}" font-size="11" fill="${COLORS.text}">${esc(fmt(v))}</text>`);
    });
  });

  const items = [{ name: c.seriesName, color: COLORS.vhostd }];
  if (hasRef && c.referenceName) items.push({ name: c.referenceName, color: COLORS.reference });
  out.push(legend(items, WIDTH - 16, 44));
  return frame(height, out.join('\n'), c.title, c.note);
}

/**
 * Small multiples, two per row: x = percentile (evenly spaced, i.e. by "nines"), y = latency on a shared log
 * axis so panels compare directly; vhostd solid, reference dashed.
 */
export function percentileChart(c: PercentileChart): string {
  const cols = 2;
  const rows = Math.ceil(c.panels.length / cols);
  const top = 56;
  const panelW = (WIDTH - 32) / cols;
  const panelH = 210;
  const height = top + rows * panelH + 8 + (c.note ? 16 : 0);
  const all = c.panels.flatMap((p) => [...p.values, ...(p.reference ?? [])]).filter((v) => v > 0 && Number.isFinite(v));
  const lo = all.length ? Math.floor(Math.log10(Math.min(...all))) : 0;
  let hi = all.length ? Math.ceil(Math.log10(Math.max(...all))) : 1;
  if (hi <= lo) hi = lo + 1;
  const out: string[] = [];

  c.panels.forEach((p, i) => {
    const px = 16 + (i % cols) * panelW;
    const py = top + Math.floor(i / cols) * panelH;
    const l = px + 52;
    const r = px + panelW - 24;
    const t = py + 26;
    const b = py + panelH - 34;
    const sy = (v: number) => b - ((Math.log10(v) - lo) / (hi - lo)) * (b - t);
    const sx = (k: number) => (c.percentiles.length === 1 ? (l + r) / 2 : l + 20 + (k / (c.percentiles.length - 1)) * (r - l - 40));
    out.push(`<text x="${r1(l)}" y="${py + 14}" font-size="12" font-weight="600" fill="${COLORS.text}">${esc(p.title)}</text>`);
    for (let d = lo; d <= hi; d++) {
      for (const m of d < hi ? [1, 2, 5] : [1]) {
        const v = m * 10 ** d;
        const y = r1(sy(v));
        out.push(`<line x1="${l}" y1="${y}" x2="${r1(r)}" y2="${y}" stroke="${COLORS.grid}" stroke-width="1"${m === 1 ? '' : ' stroke-dasharray="2 3"'}/>`);
        if (m === 1) out.push(`<text x="${l - 6}" y="${r1(y + 4)}" font-size="11" fill="${COLORS.axis}" text-anchor="end">${esc(tickLabel(v))}</text>`);
      }
    }
    out.push(`<line x1="${l}" y1="${r1(t)}" x2="${l}" y2="${r1(b)}" stroke="${COLORS.axis}"/>`);
    out.push(`<line x1="${l}" y1="${r1(b)}" x2="${r1(r)}" y2="${r1(b)}" stroke="${COLORS.axis}"/>`);
    c.percentiles.forEach((name, k) => {
      out.push(`<text x="${r1(sx(k))}" y="${r1(b + 16)}" font-size="11" fill="${COLORS.axis}" text-anchor="middle">${esc(name)}</text>`);
    });
    out.push(
      `<text x="${r1(px + 12)}" y="${r1((t + b) / 2)}" font-size="11" fill="${COLORS.axis}" text-anchor="middle" transform="rotate(-90 ${r1(px + 12)} ${r1((t + b) / 2)})">${esc(c.unit)} (log)</text>`,
    );
    const series: [number[] | undefined, string, boolean][] = [
      [p.reference, COLORS.reference, true],
      [p.values, COLORS.vhostd, false],
    ];
    for (const [vals, color, dashed] of series) {
      if (!vals) continue;
      const pts = vals.map((v, k) => (v > 0 ? [r1(sx(k)), r1(sy(v))] : undefined));
      const d = pts.filter((q): q is number[] => q !== undefined).map((q) => q.join(',')).join(' ');
      out.push(`<polyline points="${d}" fill="none" stroke="${color}" stroke-width="2.5"${dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
      pts.forEach((q, k) => {
        if (!q) return;
        out.push(`<circle cx="${q[0]}" cy="${q[1]}" r="3.5" fill="${color}"/>`);
        // the higher of the two series is labelled above its point, the lower one below, so labels never collide
        const other = dashed ? p.values[k] : p.reference?.[k];
        const above = !(other !== undefined && other > vals[k]) || (other === vals[k] && !dashed);
        const last = c.percentiles.length - 1;
        const anchor = k === 0 && last > 0 ? 'start' : k === last && last > 0 ? 'end' : 'middle';
        const dx = anchor === 'start' ? 4 : anchor === 'end' ? -4 : 0;
        const dy = above ? -7 : 15;
        out.push(`<text x="${r1(q[0] + dx)}" y="${r1(q[1] + dy)}" font-size="10" fill="${color}" text-anchor="${anchor}">${esc(fmt(vals[k]))}</text>`);
      });
    }
  });

  const items: { name: string; color: string; dashed?: boolean }[] = [{ name: c.seriesName, color: COLORS.vhostd }];
  if (c.referenceName && c.panels.some((p) => p.reference)) items.push({ name: c.referenceName, color: COLORS.reference, dashed: true });
  out.push(legend(items, WIDTH - 16, 44));
  return frame(height, out.join('\n'), c.title, c.note);
}
