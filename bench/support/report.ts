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

export function report(rows: BenchRow[]): void {
  fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
  const stamp = new Date().toISOString();
  for (const r of rows) {
    const line = JSON.stringify({ ...r, time: stamp, ...machine() });
    fs.appendFileSync(RESULTS, `${line}\n`);
    process.stdout.write(`${line}\n`);
  }
}
