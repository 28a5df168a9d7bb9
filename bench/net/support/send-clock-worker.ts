/**
 * Worker thread of SendClock (send-clock.ts): sleeps until each intended send time of a fixed-rate schedule
 * (Atomics.wait with a sub-millisecond timeout: a futex wait, about 50-100 µs late here, where a libuv timer has
 * millisecond granularity), publishes how many sends are due and writes the main thread's eventfd. It never
 * busy-waits. The schedule does not depend on when the main thread reacts (open loop).
 */
import { workerData } from 'node:worker_threads';
import { loadNative } from '../../../src/native/binding.js';

interface ClockData {
  /** [0] = sends due so far (written here), [1] = stop flag (written by the main thread). */
  shared: Int32Array;
  efd: number;
  /** process.hrtime.bigint() origin shared with the main thread. */
  base: bigint;
  /** First intended send, ns after base. */
  startNs: number;
  periodNs: number;
  count: number;
}

const d = workerData as ClockData;
const native = loadNative();
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const now = (): number => Number(process.hrtime.bigint() - d.base);

for (let k = 0; k < d.count && Atomics.load(d.shared, 1) === 0; k++) {
  const target = d.startNs + k * d.periodNs;
  for (let left = target - now(); left > 0; left = target - now()) Atomics.wait(sleeper, 0, 0, left / 1e6);
  Atomics.store(d.shared, 0, k + 1);
  native.eventfdWrite(d.efd, 1);
}
