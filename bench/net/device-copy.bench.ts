/**
 * NetDevice to NetDevice on one Switch over real mmapShared() guest memory (test/helpers/net-copy-rig.ts): TX pop,
 * switch, RX fill (virtio-net header, frame copy), used-ring publish on both queues, driver side preallocated.
 * 64 and 1500 B frames, bursts of 32, one descriptor each way and MRG_RXBUF with 3-piece TX chains into 512 B RX
 * buffers. Prints ns/frame (median and p99 of the samples, wall clock; min) and bytes allocated per frame.
 * Standalone: `node build/bench/net/device-copy.bench.js [build root]`; the optional root (a build/ of another
 * tree that has test/helpers/net-copy-rig.js) measures that tree in this process's place, for A/B runs.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { measure, round, table } from '../support/harness.js';
import type { NetCopyRig as Rig, GuestOptions } from '../../test/helpers/net-copy-rig.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = process.argv[2] ?? path.join(here, '..', '..');
const { NetCopyRig, MRG } = (await import(path.join(root, 'test', 'helpers', 'net-copy-rig.js'))) as typeof import('../../test/helpers/net-copy-rig.js');
const { ethFrame } = (await import(path.join(root, 'test', 'helpers', 'fake-net-driver.js'))) as typeof import('../../test/helpers/fake-net-driver.js');

const BURST = 32;
const BURSTS = 256;

const cases: [string, number, { a?: GuestOptions; b?: GuestOptions }][] = [
  ['64 B', 64, {}],
  ['1500 B', 1500, {}],
  ['1500 B, 3-piece TX, MRG_RXBUF 512 B RX', 1500, { a: { txPieces: [12, 40, 2000] }, b: { features: MRG, rxPieces: [512] } }],
];

const rows: string[][] = [];
for (const [name, len, opts] of cases) {
  const rig: Rig = new NetCopyRig(opts);
  const frame = ethFrame(rig.b.mac, rig.a.mac, len, 3);
  for (let c = 0; c < BURST; c++) rig.a.writeTxFrame(c, frame);
  let before = 0;
  const s = measure({
    setup: () => {
      before = rig.b.dev.counters.rxFrames;
      return rig;
    },
    run: (r) => {
      for (let i = 0; i < BURSTS; i++) r.sendBurst(BURST);
      return BURSTS * BURST;
    },
    check: (r, ops) => {
      if (r.b.dev.counters.rxFrames - before !== ops) throw new Error(`${name}: ${r.b.dev.counters.rxFrames - before} of ${ops} frames received`);
    },
    warmup: 10,
    samples: 40,
    trackAllocation: true,
  });
  const alloc = s.alloc!;
  rows.push([name, String(round(s.median)), String(round(s.p99)), String(round(s.min)), String(round(alloc.bytes / alloc.ops, 2)), String(alloc.gcs)]);
  rig.close();
}
console.log(table('device copy (NetDevice to NetDevice, bursts of 32)', ['case', 'ns/frame median', 'p99', 'min', 'B/frame', 'GCs'], rows));
