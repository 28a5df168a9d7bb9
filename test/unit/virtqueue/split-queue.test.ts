/**
 * SplitQueue (VIRTIO 1.2 §2.7): ring address/size validation, queue-fatal guest errors, batching, and the
 * notification-suppression behaviours run once with EVENT_IDX off and once on (§2.7.7, §2.7.10), including
 * more than 3 x 65536 chains through size-2 and size-256 queues (16-bit wrap).
 */
import { describe, test, expect, afterEach } from 'vitest';
import { VhostError } from '../../../src/util/errors.js';
import { setTestHooks } from '../../../src/virtqueue/barrier.js';
import { DescriptorChain } from '../../../src/virtqueue/descriptor-chain.js';
import { VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY } from '../../../src/virtqueue/defs.js';
import { SplitQueue } from '../../../src/virtqueue/split-queue.js';
import { InflightQueue, inflightQueueBytes } from '../../../src/virtqueue/inflight.js';
import { makeMemory, standardMemory } from '../../helpers/driver-memory.js';
import { DriverSplitQueue } from '../../helpers/driver-queue.js';

afterEach(() => setTestHooks(null));

function setup(size: number, eventIdx: boolean, seed = 1) {
  const mem = standardMemory();
  const drv = new DriverSplitQueue({ mem, size, eventIdx, seed });
  const q = new SplitQueue(mem, drv.queueOptions());
  return { mem, drv, q, chain: new DescriptorChain(size) };
}

function ringError(fn: () => unknown): VhostError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(VhostError);
    return e as VhostError;
  }
  throw new Error('expected a VhostError');
}

describe('SplitQueue construction', () => {
  test('queue sizes that are not a power of 2 in 1..32768 are rejected', () => {
    const { mem, drv } = setup(8, false);
    for (const size of [0, 3, 65536, 1.5, -2]) {
      expect(ringError(() => new SplitQueue(mem, { ...drv.queueOptions(), size })).code).toBe('ERR_VQ_SIZE');
    }
    expect(new SplitQueue(mem, { ...drv.queueOptions(), size: 1 }).size).toBe(1);
  });

  test('unaligned ring addresses are rejected', () => {
    const { mem, drv } = setup(8, false);
    const o = drv.queueOptions();
    expect(ringError(() => new SplitQueue(mem, { ...o, descUva: o.descUva + 8 })).message).toMatch(/descriptor ring .* 16-byte aligned/);
    expect(ringError(() => new SplitQueue(mem, { ...o, availUva: o.availUva + 1 })).code).toBe('ERR_VQ_RING_ADDR');
    expect(ringError(() => new SplitQueue(mem, { ...o, usedUva: o.usedUva + 2 })).message).toMatch(/used ring .* 4-byte aligned/);
  });

  test('a ring outside guest memory is rejected', () => {
    const { mem, drv } = setup(8, false);
    const e = ringError(() => new SplitQueue(mem, { ...drv.queueOptions(), usedUva: 0xdead0000 }));
    expect(e.code).toBe('ERR_VQ_RING_ADDR');
    expect(e.message).toMatch(/outside guest memory/);
    // A GPA is not a UVA: ring addresses are translated as frontend virtual addresses.
    expect(ringError(() => new SplitQueue(mem, { ...drv.queueOptions(), descUva: drv.descGpa })).code).toBe('ERR_VQ_RING_ADDR');
  });

  test('a ring straddling two regions is rejected even when both regions are contiguous', () => {
    const mem = makeMemory([{ gpa: 0, size: 0x1000 }, { gpa: 0x1000, size: 0x1000 }]);
    const e = ringError(() => new SplitQueue(mem, { size: 16, descUva: 0x1000 - 128, availUva: 0x1800, usedUva: 0x1900, eventIdx: false, indirect: false }));
    expect(e.code).toBe('ERR_VQ_RING_ADDR');
    expect(e.message).toMatch(/straddles/);
  });

  test('the used index shadow starts from used.idx in guest memory', () => {
    const { mem, drv } = setup(8, false);
    drv.dm.setU16(drv.usedGpa + 2, 1234);
    const q = new SplitQueue(mem, drv.queueOptions());
    expect(q.usedIdx).toBe(1234);
    q.addUsed(0, 0);
    expect(q.publishUsed()).toBe(true);
    expect(drv.usedIdx()).toBe(1235);
  });
});

describe('SplitQueue guest errors that break the queue', () => {
  test('avail idx jump over size marks the queue broken', () => {
    const { drv, q, chain } = setup(8, false);
    drv.setAvailIdx(9);
    expect(q.availCount()).toBe(0);
    expect(q.broken).toBe(true);
    expect(q.brokenReason).toMatch(/avail idx jumped by 9 > queue size 8/);
    expect(q.pop(chain)).toBe(false);
    expect(q.enableNotification()).toBe(false);
  });

  test('avail idx jump detected by pop marks the queue broken', () => {
    const { drv, q, chain } = setup(8, false);
    drv.setAvailIdx(0x8000);
    expect(q.pop(chain)).toBe(false);
    expect(q.broken).toBe(true);
  });

  test('head >= size marks the queue broken', () => {
    const { drv, q, chain } = setup(8, false);
    drv.setAvailRing(0, 8);
    drv.setAvailIdx(1);
    expect(q.pop(chain)).toBe(false);
    expect(q.broken).toBe(true);
    expect(q.brokenReason).toMatch(/head 8 >= queue size 8/);
  });

  test('exactly size outstanding heads is not an error', () => {
    const { drv, q, chain } = setup(4, false);
    for (let i = 0; i < 4; i++) drv.addChain([{ len: 8, write: true }]);
    expect(q.availCount()).toBe(4);
    let n = 0;
    while (q.pop(chain)) n++;
    expect(n).toBe(4);
    expect(q.broken).toBe(false);
  });
});

describe('SplitQueue basics', () => {
  test('lastAvailIdx can be set (SET_VRING_BASE) and pop continues from there', () => {
    const { drv, q, chain } = setup(4, false);
    for (let i = 0; i < 3; i++) drv.addChain([{ len: 8, write: true }]);
    q.lastAvailIdx = 2;
    expect(q.availCount()).toBe(1);
    expect(q.pop(chain)).toBe(true);
    expect(q.lastAvailIdx).toBe(3);
    expect(q.pop(chain)).toBe(false);
  });

  test('batching: three addUsed and one publishUsed store used.idx once', () => {
    const { drv, q, chain } = setup(8, false);
    for (let i = 0; i < 3; i++) drv.addChain([{ len: 8, write: true }]);
    let stores = 0;
    setTestHooks({ onPublishWindow: () => stores++ });
    const heads: number[] = [];
    while (q.pop(chain)) {
      heads.push(chain.head);
      q.addUsed(chain.head, 8);
    }
    expect(drv.usedIdx()).toBe(0);
    expect(q.publishUsed()).toBe(true);
    expect(q.publishUsed()).toBe(false);
    expect(stores).toBe(1);
    expect(drv.usedIdx()).toBe(3);
    expect(drv.collectUsed()).toEqual(heads.map((id) => ({ id, len: 8 })));
  });

  test('publishUsed with nothing added returns false and stores nothing', () => {
    const { q } = setup(8, true);
    let stores = 0;
    setTestHooks({ onPublishWindow: () => stores++ });
    expect(q.publishUsed()).toBe(false);
    expect(stores).toBe(0);
  });
});

/** Driver interrupt policy: on = wants an interrupt for the next used entry; off = suppressed. */
function driverInterrupts(drv: DriverSplitQueue, on: boolean): void {
  if (drv.eventIdx) drv.setUsedEvent(on ? drv.lastUsed : (drv.lastUsed + 0x8000) & 0xffff); // OpenBSD "off"
  else drv.setNoInterrupt(!on);
}

function completeOne(drv: DriverSplitQueue, q: SplitQueue, chain: DescriptorChain): boolean {
  drv.addChain([{ len: 16, write: true }]);
  expect(q.pop(chain)).toBe(true);
  q.addUsed(chain.head, 16);
  const notify = q.publishUsed();
  drv.collectUsed();
  return notify;
}

for (const eventIdx of [false, true]) {
  describe(`notification suppression [EVENT_IDX ${eventIdx ? 'on' : 'off'}]`, () => {
    test('publishUsed notifies when the driver wants interrupts', () => {
      const { drv, q, chain } = setup(8, eventIdx);
      for (let i = 0; i < 5; i++) {
        driverInterrupts(drv, true);
        expect(completeOne(drv, q, chain)).toBe(true);
      }
    });

    test('publishUsed does not notify while the driver suppresses interrupts (after the first signal)', () => {
      const { drv, q, chain } = setup(8, eventIdx);
      driverInterrupts(drv, true);
      expect(completeOne(drv, q, chain)).toBe(true);
      for (let i = 0; i < 5; i++) {
        driverInterrupts(drv, false);
        expect(completeOne(drv, q, chain)).toBe(false);
      }
      driverInterrupts(drv, true);
      expect(completeOne(drv, q, chain)).toBe(true);
    });

    test('the first publish after start notifies (EVENT_IDX: even with used_event behind, DPDK 2f706027c8)', () => {
      const { drv, q, chain } = setup(8, eventIdx);
      if (eventIdx) drv.setUsedEvent(0xfff0);
      else driverInterrupts(drv, true);
      expect(completeOne(drv, q, chain)).toBe(true);
      if (eventIdx) {
        expect(completeOne(drv, q, chain)).toBe(false);
        q.invalidateSignalled();
        expect(completeOne(drv, q, chain)).toBe(true);
        q.resetSignalled();
        expect(completeOne(drv, q, chain)).toBe(true);
      }
    });

    test('disableNotification stops kicks and enableNotification re-arms them', () => {
      const { drv, q, chain } = setup(8, eventIdx);
      drv.addChain([{ len: 8, write: true }]);
      expect(drv.needsKick()).toBe(true);
      q.disableNotification();
      drv.addChain([{ len: 8, write: true }]);
      expect(drv.needsKick()).toBe(false); // NO_NOTIFY, or avail_event (0) already behind the driver
      expect(q.pop(chain)).toBe(true); // device is now behind by one
      drv.addChain([{ len: 8, write: true }]);
      expect(drv.needsKick()).toBe(false);
      while (q.pop(chain)) q.addUsed(chain.head, 0);
      expect(q.enableNotification()).toBe(false);
      if (!eventIdx) expect(drv.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
      drv.addChain([{ len: 8, write: true }]);
      expect(drv.needsKick()).toBe(true);
    });

    test('enableNotification returns true when the driver published concurrently', () => {
      const { drv, q, chain } = setup(8, eventIdx);
      q.disableNotification();
      drv.addChain([{ len: 8, write: true }]);
      expect(q.pop(chain)).toBe(true);
      drv.addChain([{ len: 8, write: true }]); // lands before the re-check
      expect(q.enableNotification()).toBe(true);
      expect(q.pop(chain)).toBe(true);
      expect(q.enableNotification()).toBe(false);
    });

    test('16-bit index wrap: more than 3 x 65536 chains through size-2 and size-256 queues', () => {
      for (const size of [2, 256]) {
        const { drv, q, chain } = setup(size, eventIdx, size);
        const buf = drv.alloc.alloc(64 * size, 8);
        for (let d = 0; d < size; d++) drv.writeDesc(d, buf + 64 * d, 64, VIRTQ_DESC_F_WRITE, 0);
        const total = 3 * 65536 + 1234;
        let done = 0;
        let calls = 0;
        let batch = 1;
        let bad = 0; // per-iteration checks are counted, not expect()ed: vitest's expect is slow at this volume
        const heads: number[] = [];
        while (done < total) {
          const n = Math.min(batch, size, total - done);
          heads.length = 0;
          for (let k = 0; k < n; k++) heads.push((done + k) % size);
          drv.publish(heads);
          driverInterrupts(drv, true);
          if (q.availCount() !== n) bad++;
          for (let k = 0; k < n; k++) {
            if (!q.pop(chain) || chain.head !== heads[k] || chain.error !== null) bad++;
            q.addUsed(chain.head, k + 1);
          }
          if (q.pop(chain)) bad++;
          if (q.publishUsed()) calls++;
          else bad++; // the driver asked for an interrupt every batch
          const used = drv.collectUsed();
          if (used.length !== n || used[n - 1].id !== heads[n - 1] || used[n - 1].len !== n) bad++;
          done += n;
          batch = ((batch * 7 + 3) % 13) + 1; // varying batch sizes
        }
        expect(bad).toBe(0);
        expect(q.broken).toBe(false);
        expect(q.lastAvailIdx).toBe(total & 0xffff);
        expect(drv.usedIdx()).toBe(total & 0xffff);
        expect(q.usedIdx).toBe(total & 0xffff);
        expect(calls).toBeGreaterThan(0);
        expect(q.enableNotification()).toBe(false);
        if (eventIdx) expect(drv.availEvent()).toBe(total & 0xffff);
      }
    });
  });
}

describe('EVENT_IDX specifics', () => {
  test('pop leaves avail_event alone; enableNotification writes avail_event = lastAvailIdx', () => {
    const { drv, q, chain } = setup(8, true);
    drv.setUsedEvent(0);
    drv.dm.setU16(drv.usedGpa + 4 + 8 * 8, 0x1234); // whatever the device last wrote
    drv.addChain([{ len: 8, write: true }]);
    drv.addChain([{ len: 8, write: true }]);
    expect(q.pop(chain)).toBe(true);
    expect(q.pop(chain)).toBe(true);
    expect(drv.availEvent()).toBe(0x1234);
    expect(q.enableNotification()).toBe(false);
    expect(drv.availEvent()).toBe(2);
    expect(q.pop(chain)).toBe(false);
    expect(drv.availEvent()).toBe(2);
  });

  test('kicks off: a driver refilling what the device used (net RX) gets no kick over 3 x 65536 refills', () => {
    // Each round the device uses 1..all of the posted buffers, and the driver reposts them in one publish and kicks
    // only when avail_event says so. Rounds where the device had caught up are the ones a moving avail_event kicks.
    for (const size of [2, 256]) {
      const { drv, q, chain } = setup(size, true, size);
      const buf = drv.alloc.alloc(64 * size, 8);
      for (let d = 0; d < size; d++) drv.writeDesc(d, buf + 64 * d, 64, VIRTQ_DESC_F_WRITE, 0);
      drv.publish(Array.from({ length: size }, (_, d) => d));
      drv.needsKick(); // the initial fill
      q.disableNotification();
      let kicks = 0;
      let refills = 0;
      let caughtUp = 0;
      const used: number[] = [];
      for (let round = 0; refills < 3 * 65536; round++) {
        const k = round % 3 === 0 ? size : 1 + ((round * 7) % size);
        used.length = 0;
        for (let i = 0; i < k && q.pop(chain); i++) {
          q.addUsed(chain.head, 64);
          used.push(chain.head);
        }
        if (q.availCount() === 0) caughtUp++;
        q.publishUsed();
        drv.collectUsed();
        drv.publish(used);
        refills += used.length;
        if (drv.needsKick()) kicks++;
      }
      expect(caughtUp).toBeGreaterThan(300);
      expect(kicks).toBe(0);
      // Kicks on again: the next post after the device caught up kicks.
      while (q.pop(chain)) q.addUsed(chain.head, 64);
      q.publishUsed();
      expect(q.enableNotification()).toBe(false);
      drv.collectUsed();
      drv.publish([0]);
      expect(drv.needsKick()).toBe(true);
    }
  });

  test('kicks off: a driver that stores avail.idx per buffer gets no kick when the device pops and reloads mid-batch', () => {
    // Linux virtqueue_add_split stores avail.idx for every buffer and decides on the kick once per batch (old = the
    // index before the batch). A receiver that uses buffers of the batch while it is being posted, and reloads
    // avail.idx more than once, would re-park avail_event inside [old, new) if it parked one behind lastAvailIdx.
    for (const size of [8, 256]) {
      const { drv, q, chain } = setup(size, true, size);
      const buf = drv.alloc.alloc(64 * size, 8);
      for (let d = 0; d < size; d++) drv.writeDesc(d, buf + 64 * d, 64, VIRTQ_DESC_F_WRITE, 0);
      drv.publish([0, 1, 2, 3]);
      drv.needsKick();
      q.disableNotification();
      const free: number[] = [];
      for (let d = 4; d < size; d++) free.push(d);
      let kicks = 0;
      for (let round = 0; round < 3 * 65536 / 4; round++) {
        while (q.pop(chain)) q.addUsed(chain.head, 64);
        q.publishUsed();
        for (const u of drv.collectUsed()) free.push(u.id);
        for (let i = 0; i < 4; i++) {
          drv.publish([free.shift()!]);
          if (i >= 1 && q.pop(chain)) q.addUsed(chain.head, 64); // a frame arrives between two stores
        }
        if (drv.needsKick()) kicks++;
      }
      expect(kicks).toBe(0);
    }
  });

  test('disableNotification parks avail_event a queue size behind lastAvailIdx, and re-parks as the ring moves', () => {
    const { drv, q, chain } = setup(8, true);
    q.lastAvailIdx = 100;
    drv.setAvailIdx(100);
    drv.needsKick(); // the driver's previous kick decision was at 100
    q.disableNotification();
    expect(drv.availEvent()).toBe(100 - 1 - 8);
    for (let i = 0; i < 3; i++) drv.addChain([{ len: 8, write: true }]);
    expect(drv.needsKick()).toBe(false);
    while (q.pop(chain)) q.addUsed(chain.head, 0);
    q.publishUsed();
    drv.collectUsed();
    drv.addChain([{ len: 8, write: true }]);
    expect(q.pop(chain)).toBe(true); // reloads avail.idx: re-parks behind 103
    expect(drv.availEvent()).toBe(103 - 1 - 8);
  });

  test('unpop gives chains back: lastAvailIdx, parked avail_event, and the same heads pop again', () => {
    const { drv, q } = setup(8, true);
    const chains = [new DescriptorChain(8), new DescriptorChain(8), new DescriptorChain(8)];
    const heads = [0, 1, 2, 3].map(() => drv.addChain([{ len: 8, write: true }]));
    q.disableNotification();
    expect(q.pop(chains[0])).toBe(true);
    expect(q.pop(chains[0])).toBe(true);
    expect(q.pop(chains[1])).toBe(true);
    expect(q.pop(chains[2])).toBe(true);
    expect(q.lastAvailIdx).toBe(4);
    q.unpop([chains[1], chains[2]], 2);
    expect(q.lastAvailIdx).toBe(2);
    expect(drv.availEvent()).toBe((2 - 1 - 8) & 0xffff); // parked a queue size behind the rewound lastAvailIdx
    expect(q.pop(chains[1])).toBe(true);
    expect(chains[1].head).toBe(heads[2]);
    expect(q.pop(chains[2])).toBe(true);
    expect(chains[2].head).toBe(heads[3]);
    expect(q.pop(chains[2])).toBe(false);
    expect(() => q.unpop(chains, 4)).toThrow(RangeError);
  });

  test('unpop undoes inflight takes and hands resubmitted heads out again, in order', () => {
    const { drv, q } = setup(8, false);
    const inflight = new InflightQueue(new ArrayBuffer(inflightQueueBytes(8)), 0, 8);
    inflight.recover(0, () => 0);
    q.attachInflight(inflight);
    q.setResubmit([5, 6]);
    q.lastAvailIdx = 2;
    drv.setAvailIdx(2);
    const a = drv.addChain([{ len: 8, write: true }]);
    const b = drv.addChain([{ len: 8, write: true }]);
    const chains = [0, 1, 2, 3].map(() => new DescriptorChain(8));
    expect(q.pop(chains[0])).toBe(true); // resubmit 5
    q.addUsed(chains[0].head, 0); // completed: stays out of the rewind
    for (let i = 1; i < 4; i++) expect(q.pop(chains[i])).toBe(true); // resubmit 6, then avail a, b
    expect(chains.map((c) => c.head)).toEqual([5, 6, a, b]);
    expect([6, a, b].every((h) => inflight.isInflight(h))).toBe(true);
    q.unpop(chains.slice(1), 3);
    expect([6, a, b].some((h) => inflight.isInflight(h))).toBe(false);
    expect(inflight.isInflight(5)).toBe(true);
    expect(q.lastAvailIdx).toBe(2);
    expect(q.pendingResubmit()).toEqual([6]);
    const again = [0, 1, 2].map(() => new DescriptorChain(8));
    for (const c of again) expect(q.pop(c)).toBe(true);
    expect(again.map((c) => c.head)).toEqual([6, a, b]);
    expect([6, a, b].every((h) => inflight.isInflight(h))).toBe(true);
    expect(inflight.counterOf(b)).toBeGreaterThan(inflight.counterOf(6));
  });

  test('resubmitted heads stay out of unpop once `size` avail pops followed them (no re-hand-out after a wrap)', () => {
    const { drv, q } = setup(4, false);
    q.setResubmit([3]);
    const c = new DescriptorChain(4);
    const two = [new DescriptorChain(4), new DescriptorChain(4)];
    expect(q.pop(c)).toBe(true);
    expect(c.head).toBe(3);
    q.addUsed(3, 0);
    const buf = drv.alloc.alloc(64, 8);
    for (let d = 0; d < 4; d++) drv.writeDesc(d, buf, 64, VIRTQ_DESC_F_WRITE, 0);
    // 65536 + 1 avail pops: the u16 distance to where the resubmitted head was popped is 1 again.
    for (let i = 0; i < 65536; i++) {
      drv.publish([i % 3]);
      expect(q.pop(c)).toBe(true);
      q.addUsed(c.head, 0);
      q.publishUsed();
      drv.collectUsed();
    }
    drv.publish([0]);
    expect(q.pop(two[1])).toBe(true);
    two[0].head = 1;
    q.unpop(two, 2); // the last two pops were both avail entries
    expect(q.pendingResubmit()).toEqual([]);
    expect(q.pop(c)).toBe(true);
    expect(c.head).not.toBe(3);
  });

  test('publishUsed notifies exactly when used.idx crosses used_event', () => {
    const { drv, q, chain } = setup(16, true);
    driverInterrupts(drv, true);
    expect(completeOne(drv, q, chain)).toBe(true); // used.idx 1, first signal
    drv.setUsedEvent(3); // "interrupt me when entry 3 is used" (used.idx becomes 4)
    const decisions = [];
    for (let i = 0; i < 4; i++) decisions.push(completeOne(drv, q, chain)); // used.idx 2,3,4,5
    expect(decisions).toEqual([false, false, true, false]);
  });

  test('a batch that jumps over used_event notifies once', () => {
    const { drv, q, chain } = setup(16, true);
    driverInterrupts(drv, true);
    expect(completeOne(drv, q, chain)).toBe(true);
    drv.setUsedEvent(2);
    for (let i = 0; i < 5; i++) drv.addChain([{ len: 8, write: true }]);
    while (q.pop(chain)) q.addUsed(chain.head, 8);
    expect(q.publishUsed()).toBe(true);
  });

  test('without EVENT_IDX, disableNotification sets used.flags NO_NOTIFY', () => {
    const { drv, q } = setup(8, false);
    q.disableNotification();
    expect(drv.usedFlags()).toBe(VIRTQ_USED_F_NO_NOTIFY);
    q.enableNotification();
    expect(drv.usedFlags()).toBe(0);
  });
});
