/**
 * Fuzz runner: `node build/test/fuzz/run.js TARGET [--runs N] [--seed S] [--hang-ms MS] [--grow] [--out DIR]`
 * (`npm run fuzz -- TARGET --runs N`; no TARGET: every project target in turn). Exit status 0: no finding;
 * 1: a finding (written to DIR, default fuzz-findings/); killed by SIGKILL: a hang (the watchdog saved it).
 * --grow adds coverage-increasing inputs to the target's corpus directory (for long runs; review before commit).
 * One line of JSON per target at the end: executions, corpus, features, blocks covered, allowed errors.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fuzz } from './engine.js';
import { PROJECT_TARGETS, TARGETS } from './targets.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const args = process.argv.slice(2);
const names: string[] = [];
let runs = 10_000;
let seed = 1;
let hangMs = 5000;
let grow = false;
let out = join(process.cwd(), 'fuzz-findings');
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--runs') runs = Number(args[++i]);
  else if (a === '--seed') seed = Number(args[++i]);
  else if (a === '--hang-ms') hangMs = Number(args[++i]);
  else if (a === '--out') out = args[++i];
  else if (a === '--grow') grow = true;
  else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
  else names.push(a);
}
if (!Number.isSafeInteger(runs) || runs < 1) throw new Error('--runs must be a positive integer');
for (const n of names) if (!TARGETS[n]) throw new Error(`unknown target ${n}; targets: ${Object.keys(TARGETS).join(', ')}`);

let status = 0;
for (const name of names.length ? names : PROJECT_TARGETS) {
  const target = await TARGETS[name]();
  const corpusDir = join(root, 'test', 'fuzz', 'corpus', name);
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
  const { finding, ...figures } = r;
  process.stdout.write(`${JSON.stringify({ target: name, seed, ...figures, ms: Math.round(r.ms), finding: finding ? finding.file : null })}\n`);
}
process.exit(status);
