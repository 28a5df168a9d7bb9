/**
 * `npm run bench:doc`: renders docs/benchmarks.md (plus SVG charts in docs/benchmarks/) from the latest row of
 * each (bench, case) in bench/results/results.jsonl. Also called by bench/run.ts after a run with no failures.
 * Section by section: a bench with rows in the results file gets its section (and charts) rewritten; the section
 * of a bench without rows there is kept as the existing doc has it, with its charts. So `npm run bench -- NAME`
 * in a fresh clone (a results file holding one bench) updates that bench's section and nothing else. A bench that
 * reports all its cases at once (report(rows, { replaces: true }), which writes a reset line first) shows only its
 * newest run's cases; the others keep the newest row of every case ever reported. For the same
 * results file and the same existing doc, the output is the same.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { RESULTS, ROOT, type BenchRow } from './support/report.js';
import { fmt, groupedBarChart, percentileChart, type PercentilePanel } from './support/svg.js';

interface Row extends BenchRow {
  time?: string;
  node?: string;
  cpu?: string;
  cores?: number;
  reference?: string;
  referenceValue?: number;
  ratio?: number;
  p99?: number;
  lowerIsBetter?: boolean;
  /** One line on the method, printed under the bench's heading (each distinct note once, in row order). */
  note?: string;
  /** The ratio vhostd / reference aimed for (at least this, or at most for lowerIsBetter rows); shown with met/missed. */
  target?: number;
  /** 'value': the target is on the row's own figure (e.g. a scaling ratio), not on vhostd / reference. */
  targetOn?: 'value' | 'ratio';
  /** Set instead of a value when the case could not run (e.g. "poll mode: not available"): shown in its place. */
  unavailable?: string;
  /** A reset line (report(rows, { replaces: true })): the bench's rows before it are forgotten. */
  reset?: boolean;
}

export interface DocOptions {
  results?: string;
  /** path of the markdown file; charts go in a directory of the same name without `.md` */
  out?: string;
}

const PERCENTILE = /^(.*) (p\d+(?:\.\d+)?)$/;
const LATENCY_UNITS = new Set(['ns', 'µs', 'us', 'ms', 's']);

function isNum(x: unknown): x is number {
  return typeof x === 'number' && Number.isFinite(x);
}

export function readRows(file: string): Row[] {
  const rows: Row[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as Row;
      if (typeof r.bench === 'string' && r.reset === true) {
        rows.push({ bench: r.bench, case: '', unit: '', value: NaN, reset: true, time: r.time });
        continue;
      }
      if (typeof r.bench !== 'string' || typeof r.case !== 'string' || typeof r.unit !== 'string') continue;
      if (isNum(r.value)) rows.push(r);
      else if (typeof r.unavailable === 'string' && r.unavailable !== '') rows.push({ ...r, value: NaN });
    } catch {
      // a torn line from an interrupted run: skip it
    }
  }
  return rows;
}

/** The latest row per (bench, case), grouped by bench; cases in the order of their latest appearance. */
export function latest(rows: Row[]): Map<string, Row[]> {
  const byKey = new Map<string, Row>();
  for (const r of rows) {
    if (r.reset === true) {
      for (const [k, old] of byKey) if (old.bench === r.bench) byKey.delete(k);
      continue;
    }
    const k = `${r.bench}\u0000${r.case}`;
    byKey.delete(k);
    byKey.set(k, r);
  }
  const byBench = new Map<string, Row[]>();
  for (const r of byKey.values()) {
    const list = byBench.get(r.bench) ?? [];
    list.push(r);
    byBench.set(r.bench, list);
  }
  return new Map([...byBench.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function slug(s: string): string {
  return s
    .replace(/µ/g, 'u')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
}

/** GitHub's heading anchor: lower case, punctuation other than - and _ dropped, spaces to dashes. */
function anchor(s: string): string {
  return s.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
}

function when(t: string | undefined): string {
  if (!t) return 'unknown';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? t : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

function cell(s: string): string {
  return s.replace(/\|/g, '\\|');
}

function machineOf(r: Row): string {
  return `${r.cpu ?? 'unknown CPU'}, ${r.cores ?? '?'} cores, Node.js ${r.node ?? '?'}`;
}

/** From this line on, the doc is hand-written (how the anchors are set up, caveats) and kept as it is. */
export const NOTES_MARKER = '<!-- Hand-written notes below: npm run bench:doc keeps everything from here on as it is. -->';

/**
 * An existing doc cut at its `## ` headings: the heading text → the section's lines (heading included), and the
 * hand-written notes (from NOTES_MARKER on).
 */
export function sections(md: string): { head: string[]; byName: Map<string, string[]>; notes: string[] } {
  const head: string[] = [];
  const byName = new Map<string, string[]>();
  let cur: string[] = head;
  const all = md.split('\n');
  const at = all.indexOf(NOTES_MARKER);
  const notes = at >= 0 ? all.slice(at) : [];
  for (const line of at >= 0 ? all.slice(0, at) : all) {
    const m = /^## (.+)$/.exec(line);
    if (m) {
      cur = [line];
      byName.set(m[1].trim(), cur);
    } else cur.push(line);
  }
  return { head, byName, notes };
}

/** The machine line of an existing doc's header table, in machineOf's form (null when it has none). */
function headerMachineOf(head: string[]): string | null {
  const field = (k: string) => head.map((l) => new RegExp(`^\\| ${k} \\| (.*) \\|$`).exec(l)?.[1]).find((v) => v !== undefined);
  const cpu = field('CPU');
  return cpu === undefined ? null : `${cpu}, ${field('cores') ?? '?'} cores, Node.js ${field('Node.js') ?? '?'}`;
}

/** Renders the doc and its charts; returns the paths written. */
export function generateDoc(opts: DocOptions = {}): string[] {
  const results = opts.results ?? RESULTS;
  const out = opts.out ?? path.join(ROOT, 'docs/benchmarks.md');
  const chartDir = out.replace(/\.md$/, '');
  const chartRel = path.basename(chartDir);
  const rows = readRows(results);
  if (rows.length === 0) throw new Error(`no benchmark rows in ${results}`);
  const benches = latest(rows);
  const previous = fs.existsSync(out) ? sections(fs.readFileSync(out, 'utf8')) : { head: [], byName: new Map<string, string[]>(), notes: [] as string[] };
  const kept = new Map([...previous.byName].filter(([name]) => !benches.has(name)));
  const shown = [...benches.values()].flat();
  const newest = shown.reduce((a, b) => ((b.time ?? '') > (a.time ?? '') ? b : a));
  const headerMachine = machineOf(newest);
  const previousMachine = headerMachineOf(previous.head);

  const md: string[] = [];
  const charts = new Map<string, string>();
  md.push('# Benchmarks', '');
  md.push(
    '<!-- Generated by `npm run bench:doc` (and after every passing `npm run bench`) from bench/results/results.jsonl, one section per benchmark: a benchmark without rows there keeps its section. Do not edit by hand, except the notes at the end. -->',
    '',
  );
  md.push('Latest result of each benchmark case, from `bench/results/results.jsonl` of the run that wrote its section.', '');
  md.push('| | |', '|---|---|');
  md.push(`| CPU | ${cell(String(newest.cpu ?? 'unknown'))} |`);
  md.push(`| cores | ${newest.cores ?? '?'} |`);
  md.push(`| Node.js | ${cell(String(newest.node ?? '?'))} |`);
  md.push(`| newest result | ${when(newest.time)} |`, '');
  md.push(
    `> **Comparability.** These figures come from shared ${newest.cores ?? 2}-vCPU cloud machines with noisy neighbours and no CPU isolation. ` +
      'They are only comparable within one run (same bench, same time stamp), e.g. vhostd against its reference backend in the same row. ' +
      'Do not compare them across runs, days or machines, and do not read small differences between runs as a regression.',
    '',
  );
  const names = [...new Set([...benches.keys(), ...kept.keys()])].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  md.push('Contents: ' + names.map((b) => `[${b}](#${anchor(b)})`).join(' · '), '');

  const keptCharts = new Set<string>();
  for (const name of names) {
    const old = kept.get(name);
    if (old) {
      const lines = [...old];
      while (lines.length > 1 && lines[lines.length - 1].trim() === '') lines.pop();
      // Its figures came from the machine the old header named: say so when the header now names another.
      const run = lines.findIndex((l) => /^(Run |Cases come from )/.test(l));
      if (run >= 0 && previousMachine && previousMachine !== headerMachine && !lines[run].includes(' Machine: ')) lines[run] += ` Machine: ${previousMachine}.`;
      for (const l of lines) for (const m of l.matchAll(/\]\(([^)\s]+\.svg)\)/g)) keptCharts.add(path.basename(m[1]));
      md.push(...lines, '');
      continue;
    }
    const bench = name;
    const list = benches.get(bench) as Row[];
    md.push(`## ${bench}`, '');
    const times = [...new Set(list.map((r) => r.time ?? ''))].sort();
    const runLine =
      times.length === 1
        ? `Run ${when(times[0])}.`
        : `Cases come from ${times.length} runs, ${when(times[0])} to ${when(times[times.length - 1])}: only cases from the same run compare.`;
    const machines = [...new Set(list.map(machineOf))];
    const machineLine = machines.length === 1 && machines[0] === headerMachine ? '' : ` Machine: ${machines.join('; ')}.`;
    md.push(runLine + machineLine, '');
    for (const note of new Set(list.map((r) => r.note).filter((n): n is string => typeof n === 'string' && n.trim() !== ''))) md.push(note.trim(), '');

    const withRef = list.filter((r) => typeof r.reference === 'string' && (isNum(r.referenceValue) || r.unavailable !== undefined));
    const charted = withRef.filter((r) => isNum(r.value) && isNum(r.referenceValue));
    const refNames = [...new Set(withRef.map((r) => r.reference as string))];
    const refHeader = refNames.length === 1 ? refNames[0] : 'reference';
    const hasP99 = withRef.length === 0 && list.some((r) => isNum(r.p99));
    const hasLower = list.some((r) => r.lowerIsBetter === true);

    // charts first, so the table below reads as their legend
    const latency = charted.filter((r) => LATENCY_UNITS.has(r.unit) && PERCENTILE.test(r.case));
    const barRows = charted.filter((r) => !latency.includes(r));
    const units = [...new Set(barRows.map((r) => r.unit))];
    for (const unit of units) {
      const us = barRows.filter((r) => r.unit === unit);
      const file = `${slug(bench)}-${slug(unit)}.svg`;
      const lower = us.every((r) => r.lowerIsBetter === true);
      charts.set(
        file,
        groupedBarChart({
          title: `${bench}: ${unit} (${lower ? 'lower' : 'higher'} is better)`,
          unit,
          seriesName: 'vhostd',
          referenceName: refHeader,
          groups: us.map((r) => ({ label: r.case, value: r.value, reference: r.referenceValue })),
          note: `Latest run ${when(us[0].time)} · ${headerMachine}`,
        }),
      );
      md.push(`![${bench} ${unit}: vhostd vs ${refHeader}](${chartRel}/${file})`, '');
    }
    if (latency.length) {
      const groups = new Map<string, Map<string, Row>>();
      const pcts: string[] = [];
      for (const r of latency) {
        const m = PERCENTILE.exec(r.case) as RegExpExecArray;
        if (!pcts.includes(m[2])) pcts.push(m[2]);
        const g = groups.get(m[1]) ?? new Map<string, Row>();
        g.set(m[2], r);
        groups.set(m[1], g);
      }
      pcts.sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)));
      const unit = latency[0].unit;
      const panels: PercentilePanel[] = [...groups.entries()].map(([title, g]) => ({
        title,
        values: pcts.map((p) => (g.get(p)?.unit === unit ? (g.get(p) as Row).value : NaN)),
        reference: pcts.map((p) => (g.get(p)?.unit === unit ? ((g.get(p) as Row).referenceValue ?? NaN) : NaN)),
      }));
      const file = `${slug(bench)}-latency.svg`;
      charts.set(
        file,
        percentileChart({
          title: `${bench}: completion latency percentiles (lower is better)`,
          unit,
          percentiles: pcts,
          seriesName: 'vhostd',
          referenceName: refHeader,
          panels,
          note: `Latest run ${when(latency[0].time)} · ${headerMachine}`,
        }),
      );
      md.push(`![${bench} latency percentiles: vhostd vs ${refHeader}](${chartRel}/${file})`, '');
    }

    if (withRef.length) {
      const hasTarget = list.some((r) => isNum(r.target));
      // Several anchors in one table: each reference cell names its own.
      const named = refNames.length > 1;
      md.push(
        `| case | vhostd | ${cell(refHeader)} | vhostd / ${cell(refHeader)} |${hasTarget ? ' target |' : ''}`,
        `|---|--:|--:|--:|${hasTarget ? ':--|' : ''}`,
      );
      for (const r of list) {
        const ref = isNum(r.referenceValue) ? `${fmt(r.referenceValue)} ${r.unit}${named && r.reference ? ` (${r.reference})` : ''}` : '';
        const ratio = !isNum(r.value) ? undefined : isNum(r.ratio) ? r.ratio : isNum(r.referenceValue) && r.referenceValue !== 0 ? r.value / r.referenceValue : undefined;
        const arrow = r.lowerIsBetter === true ? ' ↓' : '';
        const value = isNum(r.value) ? `${fmt(r.value)} ${cell(r.unit)}` : cell(r.unavailable ?? '');
        const judged = r.targetOn === 'value' ? (isNum(r.value) ? r.value : undefined) : ratio;
        const target = !isNum(r.target)
          ? ''
          : `${r.targetOn === 'value' ? 'vhostd ' : ''}${r.lowerIsBetter === true ? '≤' : '≥'} ${r.target}: ${
              judged === undefined ? 'not measured' : (r.lowerIsBetter === true ? judged <= r.target : judged >= r.target) ? 'met' : 'missed'
            }`;
        md.push(`| ${cell(r.case)}${arrow} | ${value} | ${cell(ref)} | ${ratio === undefined ? '' : ratio.toFixed(2)} |${hasTarget ? ` ${target} |` : ''}`);
      }
      md.push('');
      md.push(
        hasLower
          ? 'Ratio = vhostd / reference: above 1 is better for throughput rows, below 1 is better for rows marked ↓ (lower is better: latency, memory).'
          : 'Ratio = vhostd / reference: above 1 means vhostd is faster.',
        '',
      );
    } else {
      md.push(hasP99 ? '| case | value | p99 |' : '| case | value |', hasP99 ? '|---|--:|--:|' : '|---|--:|');
      for (const r of list) {
        const p99 = hasP99 ? ` ${isNum(r.p99) ? `${fmt(r.p99)} ${cell(r.unit)}` : ''} |` : '';
        md.push(`| ${cell(r.case)} | ${isNum(r.value) ? `${fmt(r.value)} ${cell(r.unit)}` : cell(r.unavailable ?? '')} |${p99}`);
      }
      md.push('');
    }
  }

  if (previous.notes.length) {
    while (md.length && md[md.length - 1] === '') md.pop();
    md.push('', ...previous.notes);
  }

  fs.mkdirSync(chartDir, { recursive: true });
  const written: string[] = [];
  for (const f of fs.readdirSync(chartDir)) {
    // charts of rewritten sections that no longer draw them; kept sections keep theirs
    if (f.endsWith('.svg') && !charts.has(f) && !keptCharts.has(f)) fs.rmSync(path.join(chartDir, f));
  }
  for (const [f, svg] of charts) {
    fs.writeFileSync(path.join(chartDir, f), svg);
    written.push(path.join(chartDir, f));
  }
  fs.writeFileSync(out, md.join('\n'));
  written.unshift(out);
  return written;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  for (const f of generateDoc()) process.stdout.write(`wrote ${path.relative(ROOT, f)}\n`);
}
