/**
 * A small coverage-guided fuzzer (docs/testing.md "Fuzzing" says why not Jazzer.js): V8 precise block coverage
 * through node:inspector is the feedback, inputs that reach a new (block, hit-count bucket) pair join the corpus,
 * and a seeded PRNG drives libFuzzer-style mutations, so a run of N executions with seed S is reproducible.
 *
 * The contract a target asserts: an input either passes or throws one of the project's own error classes
 * (target.allowed). Anything else is a finding: another exception (TypeError, RangeError from a DataView), an
 * allocation above the budget, or an input that runs longer than the hang limit (caught by watchdog.ts from a
 * worker thread, since a synchronous loop never yields to this one).
 */
import { Session } from 'node:inspector';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { getHeapStatistics } from 'node:v8';
import { Worker } from 'node:worker_threads';
import { Rng } from '../helpers/rng.js';

export interface FuzzTarget {
  readonly name: string;
  /** Largest input the mutator builds. */
  readonly maxLen: number;
  /** The errors the contract allows (the project's own classes). */
  allowed(err: unknown): boolean;
  /** Byte strings the format is made of (magic numbers, type codes): the mutator writes them in (libFuzzer -dict). */
  readonly dictionary?: readonly Uint8Array[];
  /** Script URLs (substrings) whose blocks count as coverage; default the compiled project, /build/src/. */
  readonly cover?: readonly string[];
  run(data: Uint8Array): void | Promise<void>;
}

export interface FuzzOptions {
  runs: number;
  seed: number;
  /** Seed inputs (read in name order). */
  corpusDir: string;
  /** Where findings are written (crash-<sha1>, hang-<sha1>, alloc-<sha1>); none when undefined. */
  findingsDir?: string;
  /** New coverage-increasing inputs are written here when set (the long run grows the corpus). */
  saveCorpusDir?: string;
  /** An input running longer than this is a hang (ms). */
  hangMs?: number;
  /** External (ArrayBuffer) bytes alive after one input above this are a finding. */
  allocLimit?: number;
  log?: (line: string) => void;
}

export interface Finding {
  kind: 'crash' | 'alloc';
  message: string;
  input: Uint8Array;
  file?: string;
}

export interface FuzzResult {
  execs: number;
  corpus: number;
  /** Distinct (block, hit-count bucket) features seen. */
  features: number;
  /** The final corpus (seeds that added coverage, then the inputs that did). */
  inputs: Uint8Array[];
  allowedErrors: number;
  finding: Finding | null;
  ms: number;
}

/** The shared seeded PRNG, plus the fuzzer's draw: `below(n)` in [0, n), no draw at all when n <= 1. */
class Prng extends Rng {
  below(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }
}

const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40, 0x08];
const INTERESTING_32 = [0, 1, 0xffffffff, 0x7fffffff, 0x80000000, 0x200000, 0x1fffff, 0x10000, 0xffff, 0x8000, 0x1000, 0x100, 16, 12, 8, 512, 1024, 0x10000000];

/** Mutate a copy of `src` (libFuzzer's classic set: bytes, words with boundary values, insert/erase, splice). */
function mutate(rng: Prng, src: Uint8Array, maxLen: number, other: Uint8Array, dict: readonly Uint8Array[]): Uint8Array {
  let b = Uint8Array.from(src);
  const steps = 1 + rng.below(4);
  for (let s = 0; s < steps; s++) {
    const n = b.length;
    switch (rng.below(dict.length ? 14 : 12)) {
      case 0: // flip a bit
        if (n) b[rng.below(n)] ^= 1 << rng.below(8);
        break;
      case 1: // random byte
        if (n) b[rng.below(n)] = rng.u32() & 0xff;
        break;
      case 2: // interesting byte
        if (n) b[rng.below(n)] = INTERESTING_8[rng.below(INTERESTING_8.length)];
        break;
      case 3: // interesting u32, either byte order, sometimes as the high half of a u64
      case 4: {
        if (n < 4) break;
        const v = INTERESTING_32[rng.below(INTERESTING_32.length)] + (rng.below(3) === 0 ? rng.below(5) - 2 : 0);
        const dv = new DataView(b.buffer, b.byteOffset, n);
        const at = rng.below(2) === 0 ? rng.below(n - 3) & ~3 : rng.below(n - 3);
        dv.setUint32(at, v >>> 0, rng.below(2) === 0);
        break;
      }
      case 5: // add/subtract a small number to a byte or u16
        if (n) {
          const at = rng.below(n);
          b[at] = (b[at] + rng.below(35) - 17) & 0xff;
        }
        break;
      case 6: // insert bytes
        if (n < maxLen) {
          const k = Math.min(1 + rng.below(16), maxLen - n);
          const at = rng.below(n + 1);
          const nb = new Uint8Array(n + k);
          nb.set(b.subarray(0, at), 0);
          for (let i = 0; i < k; i++) nb[at + i] = rng.below(2) ? 0 : rng.u32() & 0xff;
          nb.set(b.subarray(at), at + k);
          b = nb;
        }
        break;
      case 7: // erase bytes
        if (n > 1) {
          const at = rng.below(n);
          const k = Math.min(1 + rng.below(16), n - at);
          const nb = new Uint8Array(n - k);
          nb.set(b.subarray(0, at), 0);
          nb.set(b.subarray(at + k), at);
          b = nb;
        }
        break;
      case 8: // copy a chunk inside the input
        if (n > 2) {
          const len = 1 + rng.below(Math.min(32, n - 1));
          const from = rng.below(n - len + 1);
          const to = rng.below(n - len + 1);
          b.copyWithin(to, from, from + len);
        }
        break;
      case 9: // splice with another corpus input (same offsets)
        if (other.length && n) {
          const at = rng.below(Math.min(n, other.length));
          const len = 1 + rng.below(Math.min(n, other.length) - at);
          b.set(other.subarray(at, at + len), at);
        }
        break;
      case 10: // truncate
        if (n > 1) b = b.slice(0, 1 + rng.below(n - 1));
        break;
      case 11: {
        // add a small signed delta to a u16/u32, either byte order (reaches off-by-one boundaries)
        const w = rng.below(2) === 0 ? 2 : 4;
        if (n < w) break;
        const dv = new DataView(b.buffer, b.byteOffset, n);
        const at = rng.below(n - w + 1);
        const le = rng.below(2) === 0;
        const mag = rng.below(4) === 0 ? 1 + rng.below(35) : 1 + rng.below(4); // mostly ±1..4
        const delta = rng.below(2) === 0 ? mag : -mag;
        if (w === 2) dv.setUint16(at, (dv.getUint16(at, le) + delta) & 0xffff, le);
        else dv.setUint32(at, (dv.getUint32(at, le) + delta) >>> 0, le);
        break;
      }
      case 12: // overwrite with a dictionary word
      case 13: {
        const w = dict[rng.below(dict.length)];
        if (w.length <= n) b.set(w, rng.below(n - w.length + 1));
        break;
      }
    }
  }
  return b.length > maxLen ? b.slice(0, maxLen) : b;
}

/** Hit counts bucketed as libFuzzer does (1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+). */
function bucket(c: number): number {
  if (c < 4) return c;
  if (c < 8) return 4;
  if (c < 16) return 5;
  if (c < 32) return 6;
  if (c < 128) return 7;
  return 8;
}

interface ScriptCoverage {
  scriptId: string;
  url: string;
  functions: { ranges: { startOffset: number; endOffset: number; count: number }[] }[];
}

/** Precise block coverage since the last take (V8 resets the counters on each take). */
export class Coverage {
  private readonly session = new Session();
  private readonly scriptIds = new Map<string, number>();
  constructor(private readonly urls: readonly string[]) {
    this.session.connect();
    this.post('Profiler.enable');
    this.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
  }
  private post(method: string, params?: object): unknown {
    let out: unknown;
    let error: Error | null = null;
    // The in-process session answers synchronously.
    this.session.post(method, params ?? {}, (err, res) => {
      error = err;
      out = res;
    });
    if (error) throw error;
    return out;
  }
  /** Features (script, block, bucket) of everything run since the last call. */
  take(into: number[]): void {
    into.length = 0;
    const res = this.post('Profiler.takePreciseCoverage') as { result: ScriptCoverage[] };
    for (const s of res.result) {
      if (!this.urls.some((u) => s.url.includes(u))) continue;
      let id = this.scriptIds.get(s.scriptId);
      if (id === undefined) {
        id = this.scriptIds.size;
        this.scriptIds.set(s.scriptId, id);
      }
      // V8 reports a function's range, then only the nested blocks whose count differs from the enclosing
      // one: a block not run shows up as a count-0 range, so (range, bucket 0) is a feature too.
      for (const f of s.functions) {
        for (const r of f.ranges) {
          const block = id * 2 ** 24 + r.startOffset; // scripts are far below 16 MiB
          into.push(block * 16 + bucket(r.count));
        }
      }
    }
  }
  /**
   * Coverage of everything run since the last take, summed: functions run, and the blocks inside them never
   * run (count-0 ranges of the merged report). Only exact without the optimizing compiler (an inlined function's
   * own count stays 0): replayCoverage() runs in a --jitless process.
   */
  summary(): { functions: number; blocksNotRun: number } {
    const res = this.post('Profiler.takePreciseCoverage') as { result: ScriptCoverage[] };
    let functions = 0;
    let blocksNotRun = 0;
    for (const s of res.result) {
      if (!this.urls.some((u) => s.url.includes(u))) continue;
      for (const f of s.functions) {
        if (f.ranges[0].count === 0) continue;
        functions++;
        for (const r of f.ranges) if (r.count === 0) blocksNotRun++;
      }
    }
    return { functions, blocksNotRun };
  }
  close(): void {
    this.post('Profiler.stopPreciseCoverage');
    this.session.disconnect();
  }
}

const sha1 = (b: Uint8Array): string => createHash('sha1').update(b).digest('hex');

export function readCorpus(dir: string): Uint8Array[] {
  let names: string[] = [];
  try {
    names = readdirSync(dir).sort();
  } catch {
    return [];
  }
  return names.map((n) => new Uint8Array(readFileSync(join(dir, n))));
}

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}\n${err.stack ?? ''}`;
  return `non-Error thrown: ${String(err)}`;
}

/** Watchdog in a worker thread: the input being run is mirrored into shared memory so a hang can be saved. */
class Watchdog {
  private readonly state: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly worker: Worker;
  constructor(maxLen: number, hangMs: number, findingsDir: string | undefined, target: string) {
    const sab = new SharedArrayBuffer(16 + maxLen);
    this.state = new Int32Array(sab, 0, 4);
    this.bytes = new Uint8Array(sab, 16);
    this.worker = new Worker(new URL('./watchdog.js', import.meta.url), { workerData: { sab, hangMs, findingsDir, target } });
    this.worker.unref();
  }
  /** state[0]: sequence number of the input being run (odd while running); state[1]: its length. */
  enter(data: Uint8Array): void {
    this.bytes.set(data.subarray(0, this.bytes.length));
    Atomics.store(this.state, 1, data.length);
    Atomics.add(this.state, 0, 1);
  }
  leave(): void {
    Atomics.add(this.state, 0, 1);
  }
  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/** Run `target` for `opts.runs` executions (the seeds first, then mutations); stop at the first finding. */
export async function fuzz(target: FuzzTarget, opts: FuzzOptions): Promise<FuzzResult> {
  const log = opts.log ?? (() => {});
  const rng = new Prng(opts.seed);
  const allocLimit = opts.allocLimit ?? 256 * 1024 * 1024;
  const cov = new Coverage(target.cover ?? ['/build/src/']);
  const dog = new Watchdog(target.maxLen, opts.hangMs ?? 5000, opts.findingsDir, target.name);
  const seen = new Set<number>();
  const corpus: Uint8Array[] = [];
  const feats: number[] = [];
  let execs = 0;
  let allowedErrors = 0;
  let finding: Finding | null = null;
  const t0 = performance.now();

  const save = (kind: Finding['kind'], message: string, input: Uint8Array): Finding => {
    const f: Finding = { kind, message, input };
    if (opts.findingsDir) {
      mkdirSync(opts.findingsDir, { recursive: true });
      f.file = join(opts.findingsDir, `${kind}-${target.name}-${sha1(input)}`);
      writeFileSync(f.file, input);
    }
    return f;
  };

  /** One execution: returns true if the input reached new coverage. */
  const exec = async (data: Uint8Array): Promise<boolean> => {
    execs++;
    dog.enter(data);
    try {
      const r = target.run(data);
      if (r) await r;
    } catch (err) {
      if (target.allowed(err)) allowedErrors++;
      else finding = save('crash', describe(err), data);
    }
    dog.leave();
    if (!finding && getHeapStatistics().external_memory > allocLimit) {
      finding = save('alloc', `more than ${allocLimit} bytes of ArrayBuffers alive after one input`, data);
    }
    cov.take(feats);
    let fresh = false;
    for (const f of feats) {
      if (!seen.has(f)) {
        seen.add(f);
        fresh = true;
      }
    }
    return fresh;
  };

  cov.take(feats); // drop what setup ran
  const seeds = readCorpus(opts.corpusDir);
  if (seeds.length === 0) seeds.push(new Uint8Array(0));
  for (const s of seeds) {
    if (execs >= opts.runs || finding) break;
    if ((await exec(s.slice(0, target.maxLen))) || corpus.length === 0) corpus.push(s.slice(0, target.maxLen));
  }
  let nextLog = 1;
  while (execs < opts.runs && !finding) {
    const parent = corpus[rng.below(corpus.length)];
    const other = corpus[rng.below(corpus.length)];
    const input = mutate(rng, parent, target.maxLen, other, target.dictionary ?? []);
    if (await exec(input)) {
      corpus.push(input);
      if (opts.saveCorpusDir) {
        mkdirSync(opts.saveCorpusDir, { recursive: true });
        writeFileSync(join(opts.saveCorpusDir, sha1(input)), input);
      }
    }
    if (execs >= nextLog) {
      nextLog *= 2;
      log(`#${execs} ft: ${seen.size} corp: ${corpus.length} exec/s: ${Math.round(execs / ((performance.now() - t0) / 1000))}`);
    }
  }
  cov.close();
  await dog.close();
  return {
    execs,
    corpus: corpus.length,
    features: seen.size,
    inputs: corpus,
    allowedErrors,
    finding,
    ms: performance.now() - t0,
  };
}

/** Run `inputs` once each and report the coverage they reach (for the figures; run with node --jitless). */
export async function replayCoverage(target: FuzzTarget, inputs: Uint8Array[]): Promise<{ functions: number; blocksNotRun: number }> {
  const cov = new Coverage(target.cover ?? ['/build/src/']);
  cov.take([]);
  for (const c of inputs) {
    try {
      const r = target.run(c);
      if (r) await r;
    } catch {
      // judged by the fuzzing run
    }
  }
  const out = cov.summary();
  cov.close();
  return out;
}
