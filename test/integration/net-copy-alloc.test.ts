/**
 * The real device path allocates nothing per frame: two NetDevices on a Switch over mmapShared() guest memory,
 * driver-side rings (test/helpers/net-copy-rig.ts): TX pop, switch, RX fill with the virtio-net header and the
 * frame copy (queued on the copy batch, one copyBurst per burst), used-ring publish on both queues. Bytes per frame
 * are measured with v8.GCProfiler (heap growth plus what collections freed) in steady state.
 */
import v8 from 'node:v8';
import { afterAll, describe, expect, test } from 'vitest';
import { copyBatch } from '../../src/memory/copy-batch.js';
import { ethFrame } from '../helpers/fake-net-driver.js';
import { MRG, NetCopyRig } from '../helpers/net-copy-rig.js';

const BURST = 32;

/** Bytes allocated per frame over `bursts` bursts of `rig.sendBurst(BURST)`, after a warm-up. */
function bytesPerFrame(rig: NetCopyRig, bursts: number): number {
  for (let i = 0; i < 3000; i++) rig.sendBurst(BURST); // optimized code, settled hidden classes
  const before0 = rig.b.dev.counters.rxFrames;
  const prof = new v8.GCProfiler();
  const before = process.memoryUsage().heapUsed;
  prof.start();
  for (let i = 0; i < bursts; i++) rig.sendBurst(BURST);
  const stats = prof.stop();
  const after = process.memoryUsage().heapUsed;
  let freed = 0;
  for (const s of stats.statistics) freed += s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize;
  const frames = rig.b.dev.counters.rxFrames - before0;
  expect(frames).toBe(bursts * BURST); // every frame really went through
  return (after - before + freed) / frames;
}

describe('NetDevice to NetDevice over guest memory: no allocation per frame', () => {
  const rigs: NetCopyRig[] = [];
  afterAll(() => {
    for (const r of rigs) r.close();
  });

  for (const [name, len, opts] of [
    ['64 B frames, one descriptor each way', 64, {}],
    ['1500 B frames, one descriptor each way', 1500, {}],
    ['1500 B frames, 3-piece TX chains into MRG_RXBUF 512 B RX buffers', 1500, { a: { txPieces: [12, 40, 2000] }, b: { features: MRG, rxPieces: [512] } }],
  ] as const) {
    test(`${name}: less than one byte allocated per frame`, () => {
      const rig = new NetCopyRig(opts);
      rigs.push(rig);
      const frame = ethFrame(rig.b.mac, rig.a.mac, len, 7);
      for (let c = 0; c < BURST; c++) rig.a.writeTxFrame(c, frame);
      const runs0 = copyBatch.runs;
      const perFrame = bytesPerFrame(rig, 4000);
      expect(perFrame).toBeLessThan(1);
      // The copies went through the batch, not the JS path: one copyBurst per burst, none refused.
      expect(copyBatch.runs - runs0).toBeGreaterThanOrEqual(4000);
      expect(copyBatch.refused).toBe(0);
      // And the last frame arrived intact.
      let got: Uint8Array | null = null;
      rig.a.postTx(0, 1);
      rig.a.kick();
      rig.b.recycleRx((head, n) => {
        if (got === null) got = rig.b.rxBytes(head, n);
      });
      expect(got).not.toBeNull();
      expect([...got!.subarray(12, 12 + Math.min(len, got!.length - 12))]).toEqual([...frame.subarray(0, Math.min(len, got!.length - 12))]);
    });
  }
});
