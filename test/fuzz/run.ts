/**
 * Fuzz runner: `node build/test/fuzz/run.js TARGET [--runs N] [--seed S] [--hang-ms MS] [--grow] [--out DIR] [--corpus DIR]`
 * (`npm run fuzz -- TARGET --runs N`; no TARGET: every project target in turn). Exit status 0: no finding;
 * 1: a finding (written to DIR, default fuzz-findings/); killed by SIGKILL: a hang (the watchdog saved it).
 * --corpus DIR starts from DIR instead of test/fuzz/corpus/TARGET (replay one finding: a directory holding it, --runs 1).
 * --grow adds coverage-increasing inputs to the target's corpus directory (for long runs; review before commit).
 * One line of JSON per target at the end: executions, corpus size, features (block x hit-count bucket), allowed
 * errors, and the coverage of the final corpus replayed without the JIT (functions run, blocks in them not run).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fuzz, readCorpus, replayCoverage } from './engine.js';
import { PROJECT_TARGETS, TARGETS } from './targets.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const args = process.argv.slice(2);

// Internal: `--replay TARGET DIR` in a --jitless child prints the coverage of the inputs in DIR.
if (args[0] === '--replay') {
  const target = await TARGETS[args[1]]();
  process.stdout.write(JSON.stringify(await replayCoverage(target, readCorpus(args[2]))));
  process.exit(0);
}

/** Functions run and blocks not run, over the final corpus, measured without the JIT (exact counts). */
function coverageOf(name: string, inputs: Uint8Array[]): { functions: number; blocksNotRun: number } | null {
  const dir = mkdtempSync(join(tmpdir(), 'vhostd-fuzz-replay-'));
  try {
    inputs.forEach((b, i) => writeFileSync(join(dir, String(i).padStart(6, '0')), b));
    const r = spawnSync(process.execPath, ['--jitless', fileURLToPath(import.meta.url), '--replay', name, dir], { encoding: 'utf8' });
    return r.status === 0 ? JSON.parse(r.stdout) : null;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const names: string[] = [];
let runs = 10_000;
let seed = 1;
let hangMs = 5000;
let grow = false;
let corpusOverride: string | null = null;
let out = join(process.cwd(), 'fuzz-findings');
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--runs') runs = Number(args[++i]);
  else if (a === '--seed') seed = Number(args[++i]);
  else if (a === '--hang-ms') hangMs = Number(args[++i]);
  else if (a === '--out') out = args[++i];
  else if (a === '--grow') grow = true;
  else if (a === '--corpus') corpusOverride = args[++i];
  else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
  else names.push(a);
}
if (!Number.isSafeInteger(runs) || runs < 1) throw new Error('--runs must be a positive integer');
for (const n of names) if (!TARGETS[n]) throw new Error(`unknown target ${n}; targets: ${Object.keys(TARGETS).join(', ')}`);

let status = 0;
for (const name of names.length ? names : PROJECT_TARGETS) {
  const target = await TARGETS[name]();
  const corpusDir = corpusOverride ?? join(root, 'test', 'fuzz', 'corpus', name);
  const r = await fuzz(target, {
    runs,
    seed,
    hangMs,
    corpusDir,
    findingsDir: out,
    saveCorpusDir: grow ? corpusDir : undefined,
    log: (l) => process.stderr.write(`fuzz ${name}: ${l}\n`),
  });
  if (r.finding) {
    status = 1;
    process.stderr.write(`fuzz: FINDING ${r.finding.kind}: ${name} after ${r.execs} executions (saved as ${r.finding.file})\n${r.finding.message}\n`);
  }
  const { finding, inputs, ...figures } = r;
  const coverage = coverageOf(name, inputs);
  process.stdout.write(`${JSON.stringify({ target: name, seed, ...figures, ...coverage, ms: Math.round(r.ms), finding: finding ? finding.file : null })}\n`);
}
process.exit(status);
