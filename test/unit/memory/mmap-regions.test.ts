/**
 * mapRegion without the addon: window layout (1 GiB-aligned GPA boundaries), fd offsets, origin sharing, and
 * cleanup when a later mmap fails, using a fake NativeBinding whose mmapShared returns plain ArrayBuffers.
 * The real-mmap counterpart is test/integration/mmap-regions.test.ts.
 */
import { describe, test, expect } from 'vitest';
import { mapRegion, regionWindows, unmapRegions, MAP_WINDOW } from '../../../src/memory/mmap-regions.js';
import type { NativeBinding } from '../../../src/native/types.js';
import { VhostError } from '../../../src/util/errors.js';

const GiB = 2 ** 30;

/** A NativeBinding whose mmapShared returns plain ArrayBuffers (records calls); everything else is unused. */
function fakeNative(failOnCall = -1): { native: NativeBinding; calls: [number, number, number][]; unmapped: ArrayBuffer[] } {
  const calls: [number, number, number][] = [];
  const unmapped: ArrayBuffer[] = [];
  const native = {
    mmapShared(fd: number, size: number, offset: number): ArrayBuffer {
      if (calls.length === failOnCall) throw Object.assign(new Error('mmap: ENOMEM'), { code: 'ENOMEM' });
      calls.push([fd, size, offset]);
      return new ArrayBuffer(size);
    },
    mappingHandle(): number {
      return -1;
    },
    munmap(ab: ArrayBuffer): void {
      unmapped.push(ab);
    },
  } as unknown as NativeBinding;
  return { native, calls, unmapped };
}

describe('region windows', () => {
  test('a region is split at 1 GiB-aligned guest physical addresses', () => {
    expect(regionWindows({ gpa: 0xc0000, size: 3 * GiB, uva: 0, mmapOffset: 0xc0000 })).toEqual([
      { gpa: 0xc0000, size: GiB - 0xc0000 },
      { gpa: GiB, size: GiB },
      { gpa: 2 * GiB, size: GiB },
      { gpa: 3 * GiB, size: 0xc0000 },
    ]);
    expect(regionWindows({ gpa: 4 * GiB, size: 8 * GiB, uva: 0, mmapOffset: 0 }).length).toBe(8);
    expect(MAP_WINDOW).toBe(GiB);
  });

  test('mapRegion maps each window at the matching fd offset with consecutive gpa/uva and a shared origin', () => {
    const { native, calls } = fakeNative();
    const desc = { gpa: GiB - 0x1000, size: 0x3000, uva: 0x7f00_0000_0000, mmapOffset: 0x20_0000 };
    const rs = mapRegion(native, desc, 42);
    expect(calls).toEqual([[42, 0x1000, 0x20_0000], [42, 0x2000, 0x20_1000]]);
    expect(rs.map((r) => [r.gpa, r.size, r.uva, r.mmapOffset])).toEqual([
      [GiB - 0x1000, 0x1000, 0x7f00_0000_0000, 0x20_0000],
      [GiB, 0x2000, 0x7f00_0000_1000, 0x20_1000],
    ]);
    expect(rs[0].origin).toEqual(desc);
    expect(rs[1].origin).toBe(rs[0].origin);
  });

  test('mapRegion unmaps the windows already mapped when a later mmap fails', () => {
    const { native, unmapped } = fakeNative(1);
    let err: unknown;
    try {
      mapRegion(native, { gpa: GiB - 0x1000, size: 0x2000, uva: 0, mmapOffset: 0 }, 3);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VhostError);
    expect((err as VhostError).code).toBe('ERR_MEM_MAP');
    expect(unmapped.length).toBe(1);
  });

  test('mapRegion rejects a zero size and addresses at or above 2^53', () => {
    const { native } = fakeNative();
    expect(() => mapRegion(native, { gpa: 0, size: 0, uva: 0, mmapOffset: 0 }, 3)).toThrow(VhostError);
    expect(() => mapRegion(native, { gpa: 2 ** 53, size: 16, uva: 0, mmapOffset: 0 }, 3)).toThrow(/2\^53/);
  });

  test('unmapRegions munmaps every window buffer', () => {
    const { native, unmapped } = fakeNative();
    const rs = mapRegion(native, { gpa: 2 * GiB - 16, size: 32, uva: 0, mmapOffset: 0 }, 3);
    unmapRegions(native, rs);
    expect(unmapped).toEqual(rs.map((r) => r.buffer));
  });
});
