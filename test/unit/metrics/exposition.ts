/**
 * A strict parser for the Prometheus text exposition format 0.0.4 (prometheus.io "Exposition formats"): HELP and
 * TYPE lines, samples `name{label="value",...} value`, escapes in label values (\\ \" \n), Inf/NaN values.
 * It throws on anything a Prometheus server would refuse or mis-read (a sample before its TYPE, a TYPE declared
 * twice, a bad name, a duplicate series, non-cumulative histogram buckets, +Inf bucket ≠ _count), so a test that
 * parses a scrape also checks its format.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const typed = new Set<string>();
  const lines = text.split('\n');
  if (lines.at(-1) !== '') throw new Error('exposition must end with a newline');
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${line}`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m;
      if (!NAME.test(name)) throw new Error(`bad metric name: ${where}`);
      const f = families.get(name) ?? { name, type: 'untyped', help: '', samples: [] };
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`bad type: ${where}`);
        if (typed.has(name)) throw new Error(`TYPE declared twice: ${where}`);
        typed.add(name);
        f.type = rest;
      } else {
        f.help = rest.replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
      }
      families.set(name, f);
      return;
    }
    const s = parseSample(line, where);
    const fam = familyOf(families, s.name);
    if (!fam || !typed.has(fam.name)) throw new Error(`sample without a TYPE: ${where}`);
    const key = `${s.name}{${Object.entries(s.labels).sort().map(([k, v]) => `${k}=${v}`).join(',')}}`;
    if (seen.has(key)) throw new Error(`duplicate series: ${where}`);
    seen.add(key);
    fam.samples.push(s);
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

/** The family a sample belongs to: its own name, or a histogram/summary base for _bucket/_sum/_count. */
function familyOf(families: Map<string, Family>, name: string): Family | undefined {
  const own = families.get(name);
  if (own) return own;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  const base = m ? families.get(m[1]) : undefined;
  if (base && (base.type === 'histogram' || (base.type === 'summary' && m![2] !== 'bucket'))) return base;
  return undefined;
}

function parseSample(line: string, where: string): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+-?\d+)?$/.exec(line);
  if (!m) throw new Error(`bad sample: ${where}`);
  const labels: Record<string, string> = {};
  if (m[2]) {
    let rest = m[2].slice(1, -1);
    while (rest.length > 0) {
      const lm = /^([^=]+)="((?:[^"\\]|\\.)*)"(,?)/.exec(rest);
      if (!lm) throw new Error(`bad labels: ${where}`);
      const name = lm[1];
      if (!LABEL.test(name)) throw new Error(`bad label name ${name}: ${where}`);
      if (name in labels) throw new Error(`label ${name} twice: ${where}`);
      labels[name] = lm[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      rest = rest.slice(lm[0].length);
      if (lm[3] === '' && rest.length > 0) throw new Error(`bad labels: ${where}`);
    }
  }
  // Values as Go's strconv.ParseFloat reads them (Prometheus does): Inf and NaN in any case (prom-client writes "Nan").
  const v = m[3];
  const special = /^([+-]?)(inf|infinity)$/i.exec(v);
  const value = special ? (special[1] === '-' ? -Infinity : Infinity) : /^nan$/i.test(v) ? NaN : Number(v);
  if (Number.isNaN(value) && !/^nan$/i.test(v)) throw new Error(`bad value: ${where}`);
  return { name: m[1], labels, value };
}

/** Per series: buckets cumulative in le order, a +Inf bucket equal to _count, and a _sum. */
function checkHistogram(f: Family): void {
  const series = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const e = series.get(key) ?? { buckets: [] };
    series.set(key, e);
    if (s.name === `${f.name}_bucket`) {
      if (le === undefined) throw new Error(`${f.name}: bucket without le`);
      e.buckets.push([le === '+Inf' ? Infinity : Number(le), s.value]);
    } else if (s.name === `${f.name}_sum`) e.sum = s.value;
    else if (s.name === `${f.name}_count`) e.count = s.value;
    else throw new Error(`${f.name}: unexpected sample ${s.name}`);
  }
  for (const [key, e] of series) {
    const b = [...e.buckets].sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < b.length; i++) if (b[i][1] < b[i - 1][1]) throw new Error(`${f.name}${key}: buckets not cumulative`);
    if (b.at(-1)?.[0] !== Infinity) throw new Error(`${f.name}${key}: no +Inf bucket`);
    if (e.count === undefined || e.sum === undefined) throw new Error(`${f.name}${key}: _sum or _count missing`);
    if (b.at(-1)![1] !== e.count) throw new Error(`${f.name}${key}: +Inf bucket ${b.at(-1)![1]} ≠ count ${e.count}`);
  }
}

/** The value of the one sample of `name` whose labels include `labels`; throws when none or several match. */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const found = matching(families, name, labels);
  if (found.length !== 1) throw new Error(`${name}${JSON.stringify(labels)}: ${found.length} samples match`);
  return found[0].value;
}

/** Every sample of `name` whose labels include `labels`. */
export function matching(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): Sample[] {
  const fam = familyOf(families, name);
  if (!fam) return [];
  return fam.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}
