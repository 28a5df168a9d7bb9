/**
 * Property test (seeded PRNG, no dependencies): random valid chains through a SplitQueue over 8 regions, with
 * random gaps, indirect tables, region-crossing buffers, batches and out-of-order completion. Checks bytes in
 * both directions and used lengths. A failing seed replays exactly.
 */
import { describe, test, expect } from 'vitest';
import { sgCopyIn, sgCopyOut } from '../../../src/memory/sg-list.js';
import { DescriptorChain } from '../../../src/virtqueue/descriptor-chain.js';
import { SplitQueue } from '../../../src/virtqueue/split-queue.js';
import { Rng, standardMemory } from '../../helpers/driver-memory.js';
import { DriverSplitQueue, type DriverBuf } from '../../helpers/driver-queue.js';

/**
 * Property: for random valid chains (direct or indirect, random lengths and gaps, some buffers across region
 * ends, random batch sizes and out-of-order completion), the device reads exactly the driver's bytes, and the
 * driver reads back exactly what the device wrote, with used len = bytes written. Seeded: a failure replays.
 */
for (const seed of [1, 2, 3, 0xbeef]) {
  describe(`random valid chains [seed ${seed}]`, () => {
    test('device sees the driver bytes and the driver sees the device bytes', () => {
      const rng = new Rng(seed);
      const mem = standardMemory(8, 0x100000);
      const size = 16;
      const drv = new DriverSplitQueue({ mem, size, eventIdx: rng.bool(), seed, maxGap: 48 });
      const q = new SplitQueue(mem, drv.queueOptions(true));
      const chain = new DescriptorChain(size);
      let acrossLeft = 7; // one straddle per region boundary
      let problems = 0;
      let popped = 0;
      let viaIndirect = 0;
      let split = 0;
      const expected = new Map<number, { readable: Uint8Array; written: Uint8Array }>();
      const pending: { head: number; len: number }[] = [];
      for (let round = 0; round < 400; round++) {
        // Driver: post a random number of chains while descriptors are free.
        const posts = rng.int(1, 4);
        for (let p = 0; p < posts; p++) {
          const nr = rng.int(0, 3);
          const nw = rng.int(nr === 0 ? 1 : 0, 3);
          const indirect = rng.bool(0.3);
          if (drv.freeCount < (indirect ? 1 : nr + nw)) break;
          const bufs: DriverBuf[] = [];
          for (let k = 0; k < nr + nw; k++) {
            const across = acrossLeft > 0 && rng.bool(0.02);
            if (across) acrossLeft--;
            bufs.push({ len: rng.int(across ? 2 : 1, 200), write: k >= nr, across });
          }
          const head = drv.addChain(bufs, { indirect, tableMisalign: indirect && rng.bool(0.2) ? 4 : 0 });
          const info = drv.chains.get(head)!;
          const readable = new Uint8Array(info.bufs.filter((b) => !b.write).reduce((s, b) => s + b.len, 0));
          let o = 0;
          for (const b of info.bufs) if (!b.write) (readable.set(b.data!, o), (o += b.len));
          expected.set(head, { readable, written: new Uint8Array(0) });
        }
        // Device: pop everything, check readable bytes, write a random prefix of the writable space.
        while (q.pop(chain)) {
          popped++;
          if (chain.indirect) viaIndirect++;
          if (chain.readable.count + chain.writable.count > chain.descCount - (chain.indirect ? 1 : 0)) split++;
          const e = expected.get(chain.head);
          if (!e || chain.error !== null || chain.readableBytes !== e.readable.length) {
            problems++;
            continue;
          }
          const got = new Uint8Array(chain.readableBytes);
          sgCopyOut(chain.readable, 0, got, 0, got.length);
          if (!got.every((v, i) => v === e.readable[i])) problems++;
          const n = rng.int(0, chain.writableBytes);
          e.written = rng.bytes(n);
          sgCopyIn(chain.writable, 0, e.written, 0, n);
          pending.push({ head: chain.head, len: n });
        }
        // Device: complete a random subset, in random order, then publish once.
        for (let c = rng.int(0, pending.length); c > 0; c--) {
          const [{ head, len }] = pending.splice(rng.int(0, pending.length - 1), 1);
          q.addUsed(head, len);
        }
        q.publishUsed();
        // Driver: reap and verify (readBuffer before collectUsed forgets the chain).
        const end = drv.usedIdx();
        for (let i = drv.lastUsed; i !== end; i = (i + 1) & 0xffff) {
          const { id, len } = drv.usedElem(i);
          const e = expected.get(id);
          if (!e || len !== e.written.length) problems++;
          else if (!drv.readBuffer(id, len).every((v, j) => v === e.written[j])) problems++;
          expected.delete(id);
        }
        drv.collectUsed();
      }
      expect(problems).toBe(0);
      expect(q.broken).toBe(false);
      expect(popped).toBeGreaterThan(500);
      expect(viaIndirect).toBeGreaterThan(50);
      expect(split).toBeGreaterThan(0);
    });
  });
}
