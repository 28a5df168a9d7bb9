/**
 * Process helpers for benchmarks: CPU placement (taskset) and what a process holds, read from procfs
 * (proc(5): /proc/PID/status VmRSS and VmHWM in kB, /proc/PID/fd one entry per open descriptor), and the
 * quick/full switch that bench/run.ts passes down.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

/** `npm run bench -- --full` (bench/run.ts sets VHOSTD_BENCH_FULL=1 and passes `--full`): the long suite. */
export const FULL = process.env.VHOSTD_BENCH_FULL === '1' || process.argv.includes('--full');

/** Pin every thread of `pid` to one core (taskset -a; threads created later inherit it). */
export function pin(pid: number, core: number): void {
  const r = spawnSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`taskset failed for pid ${pid}`);
}

/** Resident set now and its high-water mark, in KiB (the kernel's "kB" is KiB). */
export interface ProcMemory {
  rssKiB: number;
  hwmKiB: number;
  /** Of rssKiB: anonymous memory (the JS heap, malloc), and shared memory (mapped memfds: guest RAM). */
  anonKiB: number;
  shmemKiB: number;
}

export function procMemory(pid: number): ProcMemory {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!m) throw new Error(`/proc/${pid}/status has no ${name}`);
    return Number(m[1]);
  };
  return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM'), anonKiB: field('RssAnon'), shmemKiB: field('RssShmem') };
}

/** Number of open file descriptors of `pid`. */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

export const mib = (kib: number): number => Number((kib / 1024).toFixed(1));
