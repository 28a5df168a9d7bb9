/**
 * mapRegion/unmapRegions over real memfd mappings (the addon), and the split queue running over them.
 * Skipped only when the addon cannot load and CI !== 'true'; in CI a missing addon fails.
 */
import { afterEach, describe, expect, test } from 'vitest';

import { GuestMemory } from '../../src/memory/guest-memory.js';
import { mapRegion, unmapRegions } from '../../src/memory/mmap-regions.js';
import type { MemoryRegion } from '../../src/memory/region.js';
import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import { DescriptorChain } from '../../src/virtqueue/descriptor-chain.js';
import { SplitQueue } from '../../src/virtqueue/split-queue.js';
import { sgCopyOut } from '../../src/memory/sg-list.js';
import { DriverSplitQueue } from '../helpers/driver-queue.js';

const available = nativeAvailable();
const skip = !available.ok && process.env.CI !== 'true';
if (skip) console.warn(`skipping mmap-regions tests: ${available.reason}`);

const GiB = 2 ** 30;
const MiB = 2 ** 20;

describe.skipIf(skip)('mapRegion over memfd', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    while (cleanup.length > 0) cleanup.pop()!();
  });

  function memfd(size: number): number {
    const n = loadNative();
    const fd = n.memfdCreate('guest-ram', size);
    cleanup.push(() => n.close(fd));
    return fd;
  }

  function map(desc: { gpa: number; size: number; uva: number; mmapOffset: number }, fd: number): MemoryRegion[] {
    const n = loadNative();
    const rs = mapRegion(n, desc, fd);
    cleanup.push(() => unmapRegions(n, rs));
    return rs;
  }

  test('a region crossing a 1 GiB GPA boundary becomes two windows that share the fd bytes', () => {
    const fd = memfd(4 * MiB);
    const desc = { gpa: GiB - MiB, size: 2 * MiB, uva: 0x7f12_0000_0000, mmapOffset: 0x1000 };
    const rs = map(desc, fd);
    expect(rs.map((r) => [r.gpa, r.size, r.uva, r.mmapOffset])).toEqual([
      [GiB - MiB, MiB, 0x7f12_0000_0000, 0x1000],
      [GiB, MiB, 0x7f12_0000_0000 + MiB, 0x1000 + MiB],
    ]);
    rs[0].u8[MiB - 1] = 0x5a;
    rs[1].u8[0] = 0xa5;
    // A second, independent mapping of the whole fd sees both bytes at their file offsets.
    const [whole] = map({ gpa: 0, size: 4 * MiB, uva: 0, mmapOffset: 0 }, fd);
    expect(whole.u8[0x1000 + MiB - 1]).toBe(0x5a);
    expect(whole.u8[0x1000 + MiB]).toBe(0xa5);
  });

  test('a split queue runs over mapped windows, with a buffer crossing the window boundary', () => {
    const fd = memfd(2 * MiB);
    const mem = new GuestMemory(map({ gpa: GiB - MiB, size: 2 * MiB, uva: 0x5555_0000_0000, mmapOffset: 0 }, fd));
    expect(mem.regions.length).toBe(2);
    const drv = new DriverSplitQueue({ mem, size: 64, eventIdx: true, seed: 11 });
    const q = new SplitQueue(mem, drv.queueOptions());
    const chain = new DescriptorChain(64);
    const data = drv.rng.bytes(5000);
    const head = drv.addChain([{ len: 5000, write: false, data, across: true }, { len: 100, write: true }]);
    expect(q.pop(chain)).toBe(true);
    expect(chain.error).toBeNull();
    expect(chain.readable.count).toBe(2);
    const got = new Uint8Array(5000);
    sgCopyOut(chain.readable, 0, got, 0, 5000);
    expect(got).toEqual(data);
    q.addUsed(chain.head, 0);
    expect(q.publishUsed()).toBe(true);
    expect(drv.collectUsed()).toEqual([{ id: head, len: 0 }]);
  });

  test('a 5 GiB region maps as five windows (beyond the Node 20 4 GiB typed-array limit)', () => {
    const fd = memfd(5 * GiB);
    const rs = map({ gpa: 4 * GiB, size: 5 * GiB, uva: 0x7000_0000_0000, mmapOffset: 0 }, fd);
    expect(rs.length).toBe(5);
    expect(rs.every((r) => r.u8.length === GiB)).toBe(true);
    rs[4].u8[GiB - 1] = 7;
    const mem = new GuestMemory(rs);
    expect(mem.findGpa(9 * GiB - 1)?.u8[GiB - 1]).toBe(7);
  });

  test('unmapRegions detaches every window buffer', () => {
    const n = loadNative();
    const fd = memfd(MiB);
    const rs = mapRegion(n, { gpa: 0, size: MiB, uva: 0, mmapOffset: 0 }, fd);
    unmapRegions(n, rs);
    expect(rs[0].u8.length).toBe(0);
    unmapRegions(n, rs);
  });
});
