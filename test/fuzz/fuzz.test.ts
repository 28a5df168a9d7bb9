/**
 * Short fuzz runs in `npm test` (docs/testing.md "Fuzzing"): every TypeScript target for a fixed number of
 * executions with a fixed seed, in a child process (a hang is caught there by the watchdog), must end with no
 * finding; the planted-bug self-tests prove a crash and a hang are found and reported; the C cmsg parser and the
 * copyBurst op checks and the io_uring request checks run under libFuzzer with AddressSanitizer/UBSan, and their
 * libFuzzer builds and plain drivers run under valgrind.
 */
import { describe, test, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_TARGETS } from './targets.js';

const root = join(__dirname, '..', '..');
const runner = join(root, 'build', 'test', 'fuzz', 'run.js');
/** Executions per target: a few seconds each (the figures of long runs are in docs/testing.md). */
const RUNS: Record<string, number> = { 'qcow2-open': 1000 };
const DEFAULT_RUNS = 2000;

let out: string;
beforeAll(() => {
  out = mkdtempSync(join(tmpdir(), 'vhostd-fuzz-test-'));
});
afterAll(() => rmSync(out, { recursive: true, force: true }));

function fuzz(target: string, runs: number, extra: string[] = []) {
  if (!existsSync(runner)) throw new Error(`${runner} missing: run npm run build first`);
  const r = spawnSync(process.execPath, [runner, target, '--runs', String(runs), '--seed', '1', '--out', out, ...extra], { encoding: 'utf8', cwd: root });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return { status: r.status, signal: r.signal, stderr: r.stderr, result: line.startsWith('{') ? JSON.parse(line) : null };
}

describe('fuzz targets (short runs, fixed seed)', () => {
  for (const target of PROJECT_TARGETS) {
    test(`${target}: ${RUNS[target] ?? DEFAULT_RUNS} executions, only the project's own errors`, () => {
      const runs = RUNS[target] ?? DEFAULT_RUNS;
      const r = fuzz(target, runs, ['--hang-ms', '20000']);
      expect(r.stderr.split('\n').filter((l) => l.includes('FINDING')), r.stderr).toEqual([]);
      expect(r.status).toBe(0);
      expect(r.result).toMatchObject({ target, execs: runs, finding: null });
      expect(r.result.corpus).toBeGreaterThan(1); // coverage feedback kept some inputs
    });
  }
});

describe('fuzz engine finds planted bugs', () => {
  test('a TypeError behind a 4-byte magic is found and saved', () => {
    const r = fuzz('selftest-crash', 100_000);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/FINDING crash: selftest-crash .*TypeError/s);
    expect(r.result.finding).toMatch(/crash-selftest-crash-/);
    expect(r.result.execs).toBeLessThan(100_000);
  });

  test('an endless loop is caught by the watchdog and saved', () => {
    const r = fuzz('selftest-hang', 100_000, ['--hang-ms', '300']);
    expect(r.signal).toBe('SIGKILL');
    expect(r.stderr).toMatch(/FINDING hang: selftest-hang/);
    expect(readdirSync(out).some((f) => f.startsWith('hang-selftest-hang-'))).toBe(true);
  });
});

/** Build the native fuzzers once for every C target. */
let nativeBin: string | null = null;
function buildNative(): string {
  if (nativeBin !== null) return nativeBin;
  const bin = join(out, 'native');
  const b = spawnSync('bash', [join(root, 'native', 'fuzz', 'build.sh'), bin], { encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`native/fuzz/build.sh failed (clang and libclang-rt-14-dev come from scripts/install-peers.sh):\n${b.stderr}`);
  nativeBin = bin;
  return bin;
}

/**
 * One C target under libFuzzer (ASan + UBSan, `runs` executions, fixed seed) and valgrind (its plain driver over the
 * seed corpus, and 2000 executions of its sanitizer-free libFuzzer build).
 */
function cTarget(name: string, what: string, corpusDir: string, runs: number): void {
  describe(`C addon: ${what} under libFuzzer and valgrind`, () => {
    let bin: string;
    let corpus: string;
    const seedDir = join(root, 'native', 'fuzz', corpusDir);
    beforeAll(() => {
      bin = buildNative();
      corpus = join(out, `${name}-corpus`);
      cpSync(seedDir, corpus, { recursive: true });
    });

    test(`libFuzzer + ASan/UBSan: ${runs} executions, no finding`, () => {
      const r = spawnSync(join(bin, `${name}_fuzz`), ['-seed=1', `-runs=${runs}`, `-artifact_prefix=${out}/${name}-`, corpus], { encoding: 'utf8' });
      expect(r.stderr).toMatch(new RegExp(`Done ${runs} runs`));
      expect(r.status).toBe(0);
    });

    test('valgrind: the driver over the seed corpus and 2000 libFuzzer executions', () => {
      const seeds = readdirSync(seedDir).map((f) => join(seedDir, f));
      const d = spawnSync('valgrind', ['-q', '--error-exitcode=1', '--leak-check=full', join(bin, `${name}_driver`), ...seeds], { encoding: 'utf8' });
      expect(d.stderr).toBe('');
      expect(d.status).toBe(0);
      expect(d.stdout).toContain(`${name} driver: ${seeds.length} inputs`);
      const f = spawnSync('valgrind', ['-q', '--error-exitcode=1', join(bin, `${name}_fuzz_plain`), '-seed=1', '-runs=2000', mkdtempSync(join(out, `vg-${name}-`)), corpus], { encoding: 'utf8' });
      expect(f.stderr).toMatch(/Done 2000 runs/);
      expect(f.status).toBe(0);
    });
  });
}

cTarget('cmsg', 'cmsg parser (native/cmsg.c)', 'corpus', 200_000);
cTarget('copy', 'copyBurst op checks (native/copy.c)', 'corpus-copy', 100_000);
/*
 * The io_uring request checks (native/uring_prep.c). The syscall half (native/uring.c: setup, submit, reap) is not
 * run under valgrind: valgrind does not model memory the kernel writes through an io_uring, so the driver runs the
 * checks and the iovec building with the submit left out; the engine itself is tested through Node
 * (test/integration/uring-engine.test.ts).
 */
cTarget('uring', 'io_uring request checks against a model of the rules (native/uring_prep.c)', 'corpus-uring', 200_000);
