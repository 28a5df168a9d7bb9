/**
 * The store→load ordering point of notification suppression (barrier.ts): what each way of getting it costs,
 * measured in one process. Justifies doing it in JS (Atomics RMW on a SharedArrayBuffer cell) rather than with a
 * call into the addon (native fence()): the addon is only worth it if this benchmark says so.
 */
import { loadNative } from '../../src/native/binding.js';
import { fullFence } from '../../src/virtqueue/barrier.js';
import { report, type BenchRow } from '../support/report.js';

const N = 5_000_000;
const ring = new Uint16Array(new ArrayBuffer(4096));
const native = loadNative();

function time(name: string, body: (i: number) => number): BenchRow {
  let sink = 0;
  for (let w = 0; w < 2; w++) for (let i = 0; i < N / 10; i++) sink += body(i); // warm-up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) sink += body(i);
  const ns = Number(process.hrtime.bigint() - t0) / N;
  if (sink === -1) process.stdout.write(''); // keep `sink` alive
  return { bench: 'virtqueue/fence', case: name, unit: 'ns/op', value: Number(ns.toFixed(2)) };
}

const rows = [
  time('plain store + load (no ordering)', (i) => ((ring[1] = i & 0xffff), ring[600])),
  time('Atomics.store + load', (i) => (Atomics.store(ring, 1, i & 0xffff), ring[600])),
  time('Atomics.store + fullFence + load (vhostd)', (i) => (Atomics.store(ring, 1, i & 0xffff), fullFence(), ring[600])),
  time('Atomics.store + native fence() + load', (i) => (Atomics.store(ring, 1, i & 0xffff), native.fence(), ring[600])),
];
for (const r of rows) if (!(r.value > 0)) throw new Error(`bad measurement ${JSON.stringify(r)}`);
report(rows);
process.stderr.write(`\nvirtqueue/fence (${N} iterations)\n${rows.map((r) => `${String(r.value).padStart(8)} ns  ${r.case}`).join('\n')}\n`);
