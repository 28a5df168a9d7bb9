/**
 * Fuzz target: recovery from a hostile inflight region (src/virtqueue/inflight.ts, vhost-user "Inflight I/O
 * tracking"): the front-end hands the region over with SET_INFLIGHT_FD and its bytes are whatever it wrote.
 * Input: byte 0 queue size log2 (& 7), bytes 1-2 the ring's used.idx (LE), then the used ring's ids (u16 each,
 * zero-padded to the queue size), then the region (zero-padded). Contract: recover() throws only the RangeError
 * it documents (vring.ts then runs the ring without tracking); what it resubmits are distinct heads below the
 * queue size, each in flight, in ascending counter order.
 */
import { inflightQueueBytes, InflightQueue } from '../../src/virtqueue/inflight.js';
import type { FuzzTarget } from './engine.js';

function fail(m: string): never {
  throw new Error(`inflight contract: ${m}`);
}

export const target: FuzzTarget = {
  name: 'inflight',
  maxLen: 3 + 2 * 128 + inflightQueueBytes(128),
  allowed: (err) => err instanceof RangeError && /^inflight region /.test(err.message),
  run(data) {
    if (data.length < 3) return;
    const size = 1 << (data[0] & 7);
    const usedIdx = data[1] | (data[2] << 8);
    const ids = new Uint16Array(size);
    new Uint8Array(ids.buffer).set(data.subarray(3, 3 + 2 * size));
    const region = new ArrayBuffer(inflightQueueBytes(size));
    new Uint8Array(region).set(data.subarray(3 + 2 * size, 3 + 2 * size + region.byteLength));
    const q = new InflightQueue(region, 0, size);
    const r = q.recover(usedIdx, (slot) => ids[slot % size]);
    const seen = new Set<number>();
    let last = -1;
    for (const h of r.resubmit) {
      if (!(h >= 0 && h < size) || seen.has(h)) fail(`resubmits head ${h} (queue size ${size})`);
      if (!q.isInflight(h)) fail(`resubmits head ${h} that is not in flight`);
      if (q.counterOf(h) < last) fail('resubmit order is not ascending by counter');
      last = q.counterOf(h);
      seen.add(h);
    }
    if (r.fresh && r.resubmit.length) fail('a fresh region resubmits');
  },
};
