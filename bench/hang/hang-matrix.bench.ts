/**
 * Hang-regression matrix as a benchmark: the cells of test/integration/hang-matrix.test.ts
 * (vq-torture against the real daemon, delays in both race windows), 10^5 frames per cell by default and 10^7 with
 * `--full` or VHOSTD_BENCH_FULL=1. One row per cell: the longest stall (ms, lower is better) with the counts that
 * make the cell pass (0 lost kicks, 0 lost calls, 0 invariant violations, stall < 1 s); one row per no-fence
 * mutant cell: the frames it took to catch the missing fence. Each cell is checked before its row is reported;
 * the process exits 1 if any cell failed or a mutant was not caught. BENCH_CELLS=q16,reset selects cells.
 */
import { cellName, runTortureCell, type CellResult, type CellSpec } from '../../test/helpers/vq-torture.js';
import { cellFailures, cellSummary, matrixCells, mutantCells, mutantFailures } from '../../test/helpers/vq-torture-matrix.js';
import { report, type BenchRow } from '../support/report.js';
import { table } from '../support/harness.js';

const FULL = process.argv.includes('--full') || process.env.VHOSTD_BENCH_FULL === '1';
const BUFFERS = FULL ? 10_000_000 : 100_000;
const ONLY = (process.env.BENCH_CELLS ?? '').split(',').filter(Boolean);
const NOTE = `vq-torture (test/helpers/vq-torture.ts): ${BUFFERS.toExponential(0)} frames per cell, back-end sleeps 200 µs in 1 of 4 passes through each race window; value = longest stall, every cell asserted to lose no kick or call`;

const selected = (s: CellSpec) => ONLY.every((o) => cellName(s).includes(o));
const log = (line: string) => process.stderr.write(`${line}\n`);

async function main(): Promise<number> {
  const lines: (string | number)[][] = [];
  let failed = 0;
  for (const spec of [...matrixCells(BUFFERS), ...mutantCells(Math.min(BUFFERS, 100_000))].filter(selected)) {
    let r: CellResult;
    try {
      r = await runTortureCell({ ...spec, log });
    } catch (err) {
      failed++;
      log(`${cellName(spec)}: FAILED to run: ${(err as Error).message}`);
      continue;
    }
    log(cellSummary(r));
    const why = spec.mutant ? mutantFailures(r, spec) : cellFailures(r, spec);
    lines.push([r.cell, r.buffers, r.maxStallMs, r.lostKicks, r.lostCalls, r.invariantViolations.length, r.lifecycleEvents ? r.maxRecoveryMs : '-', spec.mutant ? (r.caughtAfter ?? 'NO') : '-', why.length ? 'FAIL' : 'ok']);
    if (why.length) {
      failed++;
      log(`${r.cell}: FAILED: ${why.join('; ')}`);
      for (const d of r.dumps) log(d);
      continue; // a failed cell reports no number
    }
    const common = { buffers: r.buffers, lostKicks: r.lostKicks, lostCalls: r.lostCalls, violations: r.invariantViolations.length, seed: r.seed, hooks: r.hooks, elapsedMs: r.elapsedMs, note: NOTE };
    const row: BenchRow = spec.mutant
      ? { bench: 'hang matrix', case: r.cell, unit: 'buffers to catch', value: r.caughtAfter!, lowerIsBetter: true, caught: 'yes', ...common }
      : { bench: 'hang matrix', case: r.cell, unit: 'ms', value: r.maxStallMs, lowerIsBetter: true, stalls: r.stalls, recoveryMs: r.maxRecoveryMs, ...common };
    report([row]);
  }
  process.stderr.write(table(`hang matrix (${FULL ? 'full' : 'quick'}: ${BUFFERS} frames per cell)`, ['cell', 'frames', 'max stall ms', 'lost kicks', 'lost calls', 'violations', 'recovery ms', 'mutant caught after', 'result'], lines));
  return failed;
}

const failed = await main();
if (failed) process.stderr.write(`${failed} hang-matrix cell(s) failed\n`);
process.exit(failed ? 1 : 0);
