/**
 * In-house micro-benchmark harness (in the manner of criterion's `iter_batched`): per sample an
 * untimed setup builds the state, the timed body runs on it and says how many operations it did, an untimed check
 * asserts the result (a wrong fast path fails the benchmark instead of reporting a good number). Warm-up samples
 * run first and are discarded. Reports median and p99 ns/op over the samples (p99 is nearest-rank: with fewer than
 * 100 samples it is the slowest sample). Optionally records what the timed bodies allocate (v8.GCProfiler: GC count,
 * bytes = heap growth + bytes freed by GCs), started and stopped outside the timed span.
 */
import { GCProfiler, getHeapStatistics } from 'node:v8';

/** One benchmark case. */
export interface CaseSpec<S> {
  /** Untimed: build (or reset) the state one sample runs on. */
  setup: () => S;
  /** Timed: do the work on `state`; returns the number of operations done (the ns/op divisor). */
  run: (state: S) => number;
  /** Untimed, after every sample (warm-up included): throw if the result is wrong. */
  check?: (state: S, ops: number) => void;
  /** Discarded samples before measuring (default 5). */
  warmup?: number;
  /** Measured samples (default 30). */
  samples?: number;
  /** Also record what the timed body allocates over the measured samples (GCProfiler, outside the timed span). */
  trackAllocation?: boolean;
}

/** Result of one case, ns per operation. */
export interface Stats {
  median: number;
  p99: number;
  min: number;
  /** Operations per second at the median. */
  opsPerSec: number;
  samples: number;
  /** Operations per sample (of the last sample). */
  opsPerSample: number;
  /** With trackAllocation: allocation of the timed bodies of the measured samples (setup and check excluded). */
  alloc?: Allocation;
}

/** Run one case: warm-up, then `samples` timed samples, each with its own untimed setup and check. */
export function measure<S>(spec: CaseSpec<S>): Stats {
  const warmup = spec.warmup ?? 5;
  const samples = spec.samples ?? 30;
  const ns: number[] = [];
  let ops = 0;
  const alloc: Allocation = { gcs: 0, majorGcs: 0, bytes: 0, ops: 0 };
  for (let i = 0; i < warmup + samples; i++) {
    const state = spec.setup();
    const track = spec.trackAllocation === true && i >= warmup;
    const probe = track ? allocationStart() : undefined;
    const t0 = process.hrtime.bigint();
    ops = spec.run(state);
    const t1 = process.hrtime.bigint();
    if (probe !== undefined) addAllocation(alloc, allocationStop(probe, ops));
    if (!(ops > 0)) throw new Error(`benchmark body did no work (ops=${ops})`);
    spec.check?.(state, ops);
    if (i >= warmup) ns.push(Number(t1 - t0) / ops);
  }
  ns.sort((a, b) => a - b);
  const median = quantile(ns, 0.5);
  const stats: Stats = { median, p99: quantile(ns, 0.99), min: ns[0], opsPerSec: 1e9 / median, samples, opsPerSample: ops };
  if (spec.trackAllocation) stats.alloc = alloc;
  return stats;
}

/** Nearest-rank quantile of sorted values (median: mean of the two middle values for an even count). */
function quantile(sorted: number[], q: number): number {
  if (q === 0.5 && sorted.length % 2 === 0) return (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

/** Allocation over one run of `body`. */
export interface Allocation {
  /** Garbage collections (scavenges and mark-compacts) during the run. */
  gcs: number;
  /** Of which full (mark-sweep-compact) collections. */
  majorGcs: number;
  /** Estimated bytes allocated on the JS heap: growth of used heap plus what every GC freed. */
  bytes: number;
  /** Operations the body reported. */
  ops: number;
}

/**
 * Measure what `body` allocates (run it after warm-up, so the code is optimized). The estimate counts heap bytes,
 * not external memory; GCProfiler records only at GC time, so it does not perturb the loop itself.
 */
export function allocation(body: () => number): Allocation {
  const probe = allocationStart();
  return allocationStop(probe, body());
}

interface AllocationProbe {
  profiler: GCProfiler;
  before: number;
}

function allocationStart(): AllocationProbe {
  const profiler = new GCProfiler();
  const before = getHeapStatistics().used_heap_size;
  profiler.start();
  return { profiler, before };
}

function allocationStop(probe: AllocationProbe, ops: number): Allocation {
  const result = probe.profiler.stop();
  const after = getHeapStatistics().used_heap_size;
  let freed = 0;
  let major = 0;
  for (const s of result.statistics) {
    freed += s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize;
    if (s.gcType !== 'Scavenge' && s.gcType !== 'MinorMarkCompact') major++;
  }
  return { gcs: result.statistics.length, majorGcs: major, bytes: Math.max(0, after - probe.before + freed), ops };
}

function addAllocation(into: Allocation, a: Allocation): void {
  into.gcs += a.gcs;
  into.majorGcs += a.majorGcs;
  into.bytes += a.bytes;
  into.ops += a.ops;
}

/** Round for reports. */
export function round(x: number, digits = 2): number {
  return Number(x.toFixed(digits));
}

/** Format rows as a right-aligned text table (first column left-aligned). */
export function table(title: string, header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const w = header.map((_, c) => Math.max(...cells.map((r) => r[c].length)));
  const line = (r: string[]) => r.map((v, c) => (c === 0 ? v.padEnd(w[c]) : v.padStart(w[c]))).join('  ');
  return `\n${title}\n${cells.map(line).join('\n')}\n`;
}
