/**
 * Hang regressions, the quick matrix (docs/testing.md "The hang matrix"). Each cell runs the real daemon
 * with VHOSTD_TEST_HOOKS sleeping inside both store→load race windows on a seeded 1 pass in 4, and pushes 10^5
 * frames from guest A to an interrupt-only, NAPI-like guest B (test/helpers/vq-torture.ts): queue size 16..1024,
 * EVENT_IDX off and on, notification suppression on both sides, random driver delays and in-flight caps, and
 * guest resets or a daemon SIGKILL + reconnect during traffic. Every cell must lose no kick and no call, break
 * no ring or sequence invariant, and never stall for a second. The no-fence build (the load done before the
 * store: the reordering the fence forbids) must be caught within 10^5 frames: that is what proves this test can
 * fail. The long run (10^7 per cell) is `node build/bench/hang/hang-matrix.bench.js --full`.
 */
import { describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import { cellName, runTortureCell } from '../helpers/vq-torture.js';
import { STALL_LIMIT_MS, cellFailures, cellSummary, matrixCells, mutantCells, mutantFailures } from '../helpers/vq-torture-matrix.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);

const BUFFERS = 100_000;
const log = (line: string) => process.stdout.write(`${line}\n`);

describe.skipIf(!native.ok)('hang matrix: 10^5 frames per cell, delays in both race windows', () => {
  for (const spec of matrixCells(BUFFERS)) {
    test(`${cellName(spec)}: no lost kick or call, no invariant violation, no stall of ${STALL_LIMIT_MS} ms`, async () => {
      const r = await runTortureCell({ ...spec, log });
      log(cellSummary(r));
      const why = [cellSummary(r), ...r.dumps, ...r.invariantViolations.slice(0, 10)].join('\n');
      expect(r.invariantViolations, why).toEqual([]);
      expect({ lostKicks: r.lostKicks, lostCalls: r.lostCalls, stalls: r.stalls }, why).toEqual({ lostKicks: 0, lostCalls: 0, stalls: 0 });
      expect(r.maxStallMs, why).toBeLessThan(STALL_LIMIT_MS);
      expect(r.buffers, why).toBe(BUFFERS);
      expect(cellFailures(r, spec), why).toEqual([]);
    }, 120_000);
  }

  for (const spec of mutantCells(BUFFERS)) {
    test(`${cellName(spec)}: the missing fence is caught as a lost notification`, async () => {
      const r = await runTortureCell({ ...spec, log });
      log(cellSummary(r));
      expect(r.caughtAfter, cellSummary(r)).not.toBeNull();
      expect(r.lostKicks + r.lostCalls, cellSummary(r)).toBeGreaterThan(0);
      expect(mutantFailures(r, spec), cellSummary(r)).toEqual([]);
    }, 120_000);
  }
});
