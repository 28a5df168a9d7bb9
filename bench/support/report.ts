/**
 * Benchmark output: one JSON line per case on stdout (machine-readable), appended to
 * bench/results/results.jsonl (not committed), plus a printed table.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRootFrom } from '../../src/util/package-root.js';

export const ROOT = packageRootFrom(import.meta.url);
/** VHOSTD_BENCH_RESULTS redirects rows elsewhere (trial runs that must not reach the doc). */
export const RESULTS = process.env.VHOSTD_BENCH_RESULTS ?? path.join(ROOT, 'bench/results/results.jsonl');

export interface BenchRow {
  bench: string;
  case: string;
  unit: string;
  value: number;
  [k: string]: unknown;
}

export function machine(): Record<string, string | number> {
  return { node: process.version, cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length };
}

/**
 * `replaces`: these rows are the bench's whole set of cases, so cases an earlier run wrote (renamed or dropped
 * since) leave docs/benchmarks.md: a reset line per bench goes first, and bench/doc.ts forgets the rows before it.
 */
export function report(rows: BenchRow[], opts: { replaces?: boolean } = {}): void {
  fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
  const stamp = new Date().toISOString();
  if (opts.replaces) for (const bench of new Set(rows.map((r) => r.bench))) fs.appendFileSync(RESULTS, `${JSON.stringify({ bench, reset: true, time: stamp })}\n`);
  for (const r of rows) {
    const line = JSON.stringify({ ...r, time: stamp, ...machine() });
    fs.appendFileSync(RESULTS, `${line}\n`);
    process.stdout.write(`${line}\n`);
  }
}
