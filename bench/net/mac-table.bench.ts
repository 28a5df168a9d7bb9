/**
 * MacTable (src/net/mac-table.ts) at 64 … 65536 addresses: learn of new MACs, learn of known MACs (the per-frame
 * refresh, a shadow hit), lookup hits and misses, and one rotate() (the aging step, O(entries), run from tick()).
 * Keys are spread 48-bit unicast MACs, ports 0..15; lookups run in shuffled order. Every learn result and every
 * lookup is checked (the expected port, or NO_PORT for a miss) before anything is reported.
 * learn-static: learn of a MAC that has a static entry (LEARN_STATIC), what every frame of a locked port with learning
 * left on asks the table when the switch's flow cache misses; 64 static entries.
 * Hostile keys: 4,000 MACs built to share one V8 Map bucket as plain integer keys (docs/security.md, "Switch: single
 * fetch and hashing of guest MACs"): lookup hits in a MacTable (keyed placement) and, for contrast, in a plain Map
 * of their lower halves (the layout before it).
 */
import { LEARN_KNOWN, LEARN_NEW, LEARN_STATIC, MacTable } from '../../src/net/mac-table.js';
import { NO_PORT } from '../../src/net/port.js';
import { measure, round, table, type Stats } from '../support/harness.js';
import { report, type BenchRow } from '../support/report.js';
import { collidingMacs } from '../../test/helpers/mac-collisions.js';

const SIZES = [64, 1024, 4096, 16384, 65536];
/** Operations per sample for learn and lookup (small tables are learned into many fresh tables per sample). */
const OPS = 65536;
const PORTS = 16;

/** i-th key: locally administered unicast 02:00:xx:xx:xx:xx (or 06:… for never-learned keys), spread by a bijection. */
function key(i: number, prefix = 0x0200): number {
  return prefix * 0x1_0000_0000 + (Math.imul(i, 0x9e3779b1) >>> 0);
}

/** Deterministic shuffle (xorshift32). */
function shuffled(n: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  let s = 0x2545f491;
  for (let i = n - 1; i > 0; i--) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const j = (s >>> 0) % (i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function filled(n: number, keys: number[], ports: number[]): MacTable {
  const t = new MacTable({ maxAddr: 2 * n });
  for (let i = 0; i < n; i++) if (t.learn(keys[i], ports[i]) !== LEARN_NEW) throw new Error(`fill: key ${i} not learned`);
  return t;
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`net/mac-table: ${what}`);
}

const rows: BenchRow[] = [];
const printed: (string | number)[][] = [];
let staticRow = '';
const cell = (s: Stats) => `${round(s.median, 1)} (${round(s.p99, 1)})`;

for (const n of SIZES) {
  const keys = Array.from({ length: n }, (_, i) => key(i));
  const ports = Array.from({ length: n }, (_, i) => i % PORTS);
  const perm = shuffled(n);
  const lkKeys = perm.map((i) => keys[i]);
  const lkPorts = perm.map((i) => ports[i]);
  const missKeys = Array.from({ length: n }, (_, i) => key(i, 0x0600));
  const mask = n - 1; // sizes are powers of two
  const reps = Math.max(1, OPS / n);

  // learn, new entries: `reps` empty tables per sample (built untimed), each filled with all n keys.
  const learnNew = measure({
    setup: () => ({ tables: Array.from({ length: reps }, () => new MacTable({ maxAddr: 2 * n })), ok: 0 }),
    run: (st) => {
      let ok = 0;
      for (const t of st.tables) for (let i = 0; i < n; i++) if (t.learn(keys[i], ports[i]) === LEARN_NEW) ok++;
      st.ok = ok;
      return reps * n;
    },
    check: (st, ops) => {
      check(st.ok === ops, `learn new: ${st.ok}/${ops} LEARN_NEW`);
      for (const t of st.tables) check(t.size === n && t.learnFull === 0 && t.lookup(keys[n - 1]) === ports[n - 1], 'learn new: table content');
    },
    samples: 20,
  });

  // learn, known on the same port (what every frame from a known source does), lookups: one full table.
  const full = filled(n, keys, ports);
  const learnKnown = measure({
    setup: () => ({ t: full, ok: 0 }),
    run: (st) => {
      let ok = 0;
      for (let j = 0; j < OPS; j++) {
        const i = j & mask;
        if (st.t.learn(lkKeys[i], lkPorts[i]) === LEARN_KNOWN) ok++;
      }
      st.ok = ok;
      return OPS;
    },
    check: (st, ops) => check(st.ok === ops && st.t.size === n, `learn known: ${st.ok}/${ops} LEARN_KNOWN`),
  });
  const lookupHit = measure({
    setup: () => ({ t: full, ok: 0 }),
    run: (st) => {
      let ok = 0;
      for (let j = 0; j < OPS; j++) {
        const i = j & mask;
        if (st.t.lookup(lkKeys[i]) === lkPorts[i]) ok++;
      }
      st.ok = ok;
      return OPS;
    },
    check: (st, ops) => check(st.ok === ops, `lookup hit: ${st.ok}/${ops} found on the right port`),
  });
  const lookupMiss = measure({
    setup: () => ({ t: full, ok: 0 }),
    run: (st) => {
      let ok = 0;
      for (let j = 0; j < OPS; j++) if (st.t.lookup(missKeys[j & mask]) === NO_PORT) ok++;
      st.ok = ok;
      return OPS;
    },
    check: (st, ops) => check(st.ok === ops, `lookup miss: ${st.ok}/${ops} NO_PORT`),
  });

  // rotate() with every entry active (main = shadow = n): the steady-state cost of one aging step.
  const rotReps = Math.max(1, Math.min(256, OPS / n));
  const rotate = measure({
    setup: () => Array.from({ length: rotReps }, () => filled(n, keys, ports)),
    run: (tables) => {
      for (const t of tables) t.rotate();
      return tables.length;
    },
    check: (tables) => {
      for (const t of tables) check(t.rotations === 1 && t.size === n && t.lookup(keys[0]) === ports[0] && t.portCount(1) === n / PORTS, 'rotate: entries kept');
    },
    samples: 20,
  });

  const base = { bench: 'net/mac-table' };
  if (n === SIZES[0]) {
    const st = new MacTable({ maxAddr: 2 * n });
    for (let i = 0; i < n; i++) st.addStatic(keys[i], ports[i]);
    const learnStatic = measure({
      setup: () => ({ t: st, ok: 0 }),
      run: (x) => {
        let ok = 0;
        for (let j = 0; j < OPS; j++) {
          const i = j & mask;
          if (x.t.learn(lkKeys[i], lkPorts[i]) === LEARN_STATIC) ok++;
        }
        x.ok = ok;
        return OPS;
      },
      check: (x, ops) => check(x.ok === ops && x.t.size === n && x.t.staticCount === n, `learn static: ${x.ok}/${ops} LEARN_STATIC`),
    });
    rows.push({ ...base, case: `learn-static macs=${n}`, unit: 'ns/op', value: round(learnStatic.median), median: round(learnStatic.median), p99: round(learnStatic.p99), opsPerSec: Math.round(learnStatic.opsPerSec), samples: learnStatic.samples });
    staticRow = cell(learnStatic);
  }
  for (const [name, s] of [
    ['learn-new', learnNew],
    ['learn-known', learnKnown],
    ['lookup-hit', lookupHit],
    ['lookup-miss', lookupMiss],
  ] as const) {
    rows.push({ ...base, case: `${name} macs=${n}`, unit: 'ns/op', value: round(s.median), median: round(s.median), p99: round(s.p99), opsPerSec: Math.round(s.opsPerSec), samples: s.samples });
  }
  rows.push({ ...base, case: `rotate macs=${n}`, unit: 'ns/rotate', value: round(rotate.median, 0), median: round(rotate.median, 0), p99: round(rotate.p99, 0), nsPerEntry: round(rotate.median / n), samples: rotate.samples });
  printed.push([n, cell(learnNew), cell(learnKnown), cell(lookupHit), cell(lookupMiss), `${round(rotate.median / 1000, 1)} (${round(rotate.p99 / 1000, 1)})`, round(rotate.median / n, 1)]);
}

// Hostile keys: what a guest sending these source MACs costs every lookup.
const COLLIDING = 4000;
const cKeys = collidingMacs(COLLIDING);
const cPorts = cKeys.map((_, i) => i % PORTS);
const cTable = filled(COLLIDING, cKeys, cPorts);
const cPlain = new Map<number, number>(cKeys.map((k, i) => [k % 0x100_0000, cPorts[i]]));
const collKeyed = measure({
  setup: () => ({ ok: 0 }),
  run: (st) => {
    let ok = 0;
    for (let j = 0; j < OPS; j++) {
      const i = j % COLLIDING;
      if (cTable.lookup(cKeys[i]) === cPorts[i]) ok++;
    }
    st.ok = ok;
    return OPS;
  },
  check: (st, ops) => check(st.ok === ops, `colliding lookup: ${st.ok}/${ops} found`),
});
// One pass per sample: each lookup walks a chain of up to 4,000 entries.
const collPlain = measure({
  setup: () => ({ ok: 0 }),
  run: (st) => {
    let ok = 0;
    for (let i = 0; i < COLLIDING; i++) if (cPlain.get(cKeys[i] % 0x100_0000) === cPorts[i]) ok++;
    st.ok = ok;
    return COLLIDING;
  },
  check: (st, ops) => check(st.ok === ops, `colliding plain-map lookup: ${st.ok}/${ops} found`),
  warmup: 2,
  samples: 10,
});
for (const [name, s] of [
  ['lookup-hit colliding', collKeyed],
  ['lookup-hit colliding unkeyed-map', collPlain],
] as const) {
  rows.push({ bench: 'net/mac-table', case: `${name} macs=${COLLIDING}`, unit: 'ns/op', value: round(s.median), median: round(s.median), p99: round(s.p99), opsPerSec: Math.round(s.opsPerSec), samples: s.samples });
}

report(rows);
process.stderr.write(
  table(
    `net/mac-table: ns/op median (p99); rotate in µs per call with all entries active; ${OPS} ops per sample`,
    ['macs', 'learn new', 'learn known', 'lookup hit', 'lookup miss', 'rotate µs', 'rotate ns/entry'],
    printed,
  ) +
    table(
      `net/mac-table: ${COLLIDING} MACs colliding in V8's integer-key hash, lookup hit ns/op median (p99)`,
      ['MacTable (keyed placement)', 'plain Map (unkeyed)'],
      [[cell(collKeyed), cell(collPlain)]],
    ) +
    table(`net/mac-table: learn of a MAC with a static entry (LEARN_STATIC), ${SIZES[0]} static entries, ns/op median (p99)`, ['learn static'], [[staticRow]]),
);
