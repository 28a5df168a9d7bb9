/**
 * `npm run bench` (quick suite, under 15 minutes on the 2-core machine) and `npm run bench -- --full` (longer runs
 * per row, more data per guest). Each benchmark runs in a fresh node process in its own process
 * group, with VHOSTD_BENCH_FULL=1 and `--full` passed down in full mode; it asserts its own result, prints its table
 * and appends its rows to bench/results/results.jsonl. A benchmark whose file is missing, that fails, or that
 * overruns its time limit (which kills its whole group: QEMU guests, testpmd, daemons) fails the suite, and then
 * docs/benchmarks.md is left alone. Names after the options select benchmarks by substring:
 * `npm run bench -- blk/` runs the disk benchmarks only.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateDoc } from './doc.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** In suite order. */
const BENCHES = [
  'virtqueue/fence',
  'net/mac-table',
  'net/switch-forward',
  'net/testpmd-loop',
  'net/latency',
  'net/scaling',
  'net/guest-tcp',
  'blk/blk-io',
  'blk/guest-dd',
  'memory/rss',
  'hang/hang-matrix',
];

const QUICK_BUDGET_S = 15 * 60;

const args = process.argv.slice(2);
const full = args.includes('--full');
const only = args.filter((a) => !a.startsWith('--'));
// Full mode: the hang matrix alone runs 24 cells x 1e7 frames (about 1.5 h here), so each bench gets 4 h.
const timeoutS = Number(process.env.VHOSTD_BENCH_TIMEOUT_S ?? (full ? 4 * 3600 : 600));

const unknown = only.filter((o) => !BENCHES.some((b) => b.includes(o)));
if (unknown.length) {
  process.stderr.write(`no benchmark matches ${unknown.map((u) => JSON.stringify(u)).join(', ')}; benchmarks: ${BENCHES.join(', ')}\n`);
  process.exit(2);
}

const fmtS = (s: number) => (s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${s.toFixed(1)} s`);

/** Runs one bench file; resolves with its outcome ('ok' or why it failed). */
function runOne(file: string): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file, ...(full ? ['--full'] : [])], {
      stdio: 'inherit',
      detached: true, // its own process group, so a timeout or ^C reaches its QEMU/testpmd/daemon children too
      env: { ...process.env, ...(full ? { VHOSTD_BENCH_FULL: '1' } : {}) },
    });
    const killGroup = (sig: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        /* already gone */
      }
    };
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup('SIGKILL');
    }, timeoutS * 1000);
    const onSignal = (sig: NodeJS.Signals) => {
      killGroup('SIGKILL');
      process.exit(sig === 'SIGINT' ? 130 : 143);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      killGroup('SIGKILL'); // leftovers of a bench that exited without stopping its peers
      resolve(timedOut ? `killed after the ${fmtS(timeoutS)} limit` : code === 0 ? 'ok' : `exit ${code ?? signal}`);
    });
  });
}

const results: { bench: string; outcome: string; seconds: number }[] = [];
const t0 = process.hrtime.bigint();
for (const b of BENCHES) {
  if (only.length && !only.some((o) => b.includes(o))) continue;
  const file = path.join(here, `${b}.bench.js`);
  process.stderr.write(`\n== ${b}${full ? ' (full)' : ''}\n`);
  const start = process.hrtime.bigint();
  const outcome = fs.existsSync(file) ? await runOne(file) : `missing: ${path.relative(process.cwd(), file)} does not exist (bench/${b}.bench.ts not written or not built)`;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  results.push({ bench: b, outcome, seconds });
  process.stderr.write(`== ${b}: ${outcome === 'ok' ? 'ok' : `FAILED (${outcome})`} in ${fmtS(seconds)}\n`);
}
const total = Number(process.hrtime.bigint() - t0) / 1e9;

const w = Math.max(...results.map((r) => r.bench.length));
process.stderr.write(`\n${full ? 'full' : 'quick'} suite\n`);
for (const r of results) process.stderr.write(`${r.bench.padEnd(w)}  ${fmtS(r.seconds).padStart(12)}  ${r.outcome}\n`);
process.stderr.write(`${'total'.padEnd(w)}  ${fmtS(total).padStart(12)}${!full && !only.length ? `  (quick budget ${fmtS(QUICK_BUDGET_S)}${total > QUICK_BUDGET_S ? ': OVER' : ''})` : ''}\n`);

let failed = results.filter((r) => r.outcome !== 'ok').length;
if (failed) {
  process.stderr.write(`${failed} benchmark(s) failed: docs/benchmarks.md not regenerated\n`);
} else {
  try {
    for (const f of generateDoc()) process.stderr.write(`wrote ${path.relative(process.cwd(), f)}\n`);
  } catch (e) {
    process.stderr.write(`docs/benchmarks.md not regenerated: ${(e as Error).message}\n`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
