/**
 * GuestMemory: region validation (overlap in GPA or UVA, size, 2^53 range) and translation (findGpa with MRU,
 * mapGpa splitting at region ends, uvaRange/gpaRange for rings). Plain ArrayBuffers, no addon.
 * Spec: vhost-user spec, "Memory access".
 */
import { describe, test, expect } from 'vitest';
import { GuestMemory } from '../../../src/memory/guest-memory.js';
import { MemoryRegion } from '../../../src/memory/region.js';
import { SgList, sgCopyOut } from '../../../src/memory/sg-list.js';
import { VhostError } from '../../../src/util/errors.js';

function region(gpa: number, size: number, uva = gpa): MemoryRegion {
  return new MemoryRegion({ gpa, size, uva, mmapOffset: 0 }, new ArrayBuffer(size));
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(VhostError);
    return (e as VhostError).code;
  }
  return undefined;
}

describe('GuestMemory construction', () => {
  test('overlapping regions in GPA space are rejected with both ranges named in hex', () => {
    expect(() => new GuestMemory([region(0x1000, 0x1000, 0x10000), region(0x1800, 0x1000, 0x20000)])).toThrow(
      /GPA space: GPA \[0x1000-0x2000\).*and GPA \[0x1800-0x2800\)/,
    );
    expect(codeOf(() => new GuestMemory([region(0x1000, 0x1000, 0x10000), region(0x1800, 0x1000, 0x20000)]))).toBe('ERR_MEM_OVERLAP');
  });

  test('overlapping regions in UVA space are rejected even when their GPAs are disjoint', () => {
    expect(codeOf(() => new GuestMemory([region(0x0, 0x1000, 0x5000), region(0x10000, 0x1000, 0x5fff)]))).toBe('ERR_MEM_OVERLAP');
  });

  test('an overlap between regions that are not neighbours in the given order is found, in GPA and in UVA space', () => {
    // A big region swallowing a later one: sorted by start, the overlap is between neighbours.
    const shuffled = [region(0x40000, 0x1000, 0x900000), region(0x0, 0x1000, 0x800000), region(0x10000, 0x40000, 0x700000)];
    expect(() => new GuestMemory(shuffled)).toThrow(/GPA space: GPA \[0x10000-0x50000\).*and GPA \[0x40000-0x41000\)/);
    const uva = [region(0x0, 0x1000, 0x10000), region(0x100000, 0x1000, 0x30000), region(0x200000, 0x40000, 0x0)];
    expect(() => new GuestMemory(uva)).toThrow(/UVA space/);
  });

  test('thousands of disjoint windows (as a TiB region makes) are accepted and sorted by GPA', () => {
    const buf = new ArrayBuffer(0x1000);
    const windows: MemoryRegion[] = [];
    for (let i = 4095; i >= 0; i--) windows.push(new MemoryRegion({ gpa: i * 0x1000, size: 0x1000, uva: 2 ** 46 - i * 0x1000, mmapOffset: 0 }, buf));
    const m = new GuestMemory(windows);
    expect(m.regions.map((r) => r.gpa / 0x1000)).toEqual(Array.from({ length: 4096 }, (_, i) => i));
  });

  test('adjacent regions are accepted', () => {
    const m = new GuestMemory([region(0x1000, 0x1000), region(0x2000, 0x1000)]);
    expect(m.regions.length).toBe(2);
  });

  test('a zero-size region is rejected', () => {
    expect(codeOf(() => new MemoryRegion({ gpa: 0, size: 0, uva: 0, mmapOffset: 0 }, new ArrayBuffer(8)))).toBe('ERR_MEM_RANGE');
  });

  test('addresses at or above 2^53 are rejected with ERR_MEM_RANGE', () => {
    expect(codeOf(() => new MemoryRegion({ gpa: 2 ** 53 - 8, size: 16, uva: 0, mmapOffset: 0 }, new ArrayBuffer(16)))).toBe('ERR_MEM_RANGE');
    expect(codeOf(() => new MemoryRegion({ gpa: 0, size: 16, uva: 2 ** 60, mmapOffset: 0 }, new ArrayBuffer(16)))).toBe('ERR_MEM_RANGE');
  });

  test('a region larger than its buffer is rejected', () => {
    expect(codeOf(() => new MemoryRegion({ gpa: 0, size: 32, uva: 0, mmapOffset: 0 }, new ArrayBuffer(16)))).toBe('ERR_MEM_RANGE');
  });

  test('fromArrayBuffers defaults uva to gpa and keeps regions sorted by GPA', () => {
    const m = GuestMemory.fromArrayBuffers([
      { gpa: 0x20000, buffer: new ArrayBuffer(0x1000) },
      { gpa: 0x10000, uva: 0x7f0000000000, buffer: new ArrayBuffer(0x1000) },
    ]);
    expect(m.regions.map((r) => r.gpa)).toEqual([0x10000, 0x20000]);
    expect(m.regions[1].uva).toBe(0x20000);
    expect(m.regions[0].u8.length).toBe(0x1000);
    expect(m.regions[0].origin).toEqual({ gpa: 0x10000, size: 0x1000, uva: 0x7f0000000000, mmapOffset: 0 });
  });
});

describe('GuestMemory translation', () => {
  const mem = new GuestMemory([region(0x0, 0x1000, 0x7000_0000), region(0x1000, 0x1000, 0x9000_0000), region(0x10000, 0x100)]);

  test('findGpa finds each region, returns null in holes, and caches the last hit', () => {
    expect(mem.findGpa(0x10)).toBe(mem.regions[0]);
    expect(mem.findGpa(0x1fff)).toBe(mem.regions[1]);
    expect(mem.findGpa(0x10050)).toBe(mem.regions[2]);
    expect(mem.findGpa(0x10050)).toBe(mem.regions[2]);
    expect(mem.findGpa(0x2000)).toBeNull();
    expect(mem.findGpa(0x10100)).toBeNull();
    expect(mem.findGpa(0x0)).toBe(mem.regions[0]);
  });

  test('mapGpa splits a buffer crossing a region end into two entries with the right bytes', () => {
    mem.regions[0].u8.fill(0xaa, 0xff0);
    mem.regions[1].u8.fill(0xbb, 0, 0x10);
    const sg = new SgList(4);
    expect(mem.mapGpa(0xff8, 0x10, sg)).toBe(true);
    expect(sg.count).toBe(2);
    expect(Array.from(sg.lens.subarray(0, 2))).toEqual([8, 8]);
    expect(sg.totalLen).toBe(0x10);
    const out = new Uint8Array(16);
    sgCopyOut(sg, 0, out, 0, 16);
    expect(Array.from(out)).toEqual([...Array(8).fill(0xaa), ...Array(8).fill(0xbb)]);
  });

  test('mapGpa refuses zero length, bytes outside memory, and a full SgList', () => {
    expect(mem.mapGpa(0x10, 0, new SgList(4))).toBe(false);
    expect(mem.mapGpa(0x1ff0, 0x20, new SgList(4))).toBe(false);
    expect(mem.mapGpa(0x5000, 1, new SgList(4))).toBe(false);
    expect(mem.mapGpa(0xff8, 0x10, new SgList(1))).toBe(false);
    expect(mem.mapGpa(2 ** 53 - 1, 16, new SgList(4))).toBe(false);
  });

  test('uvaRange and gpaRange accept ranges inside one region only', () => {
    expect(mem.uvaRange(0x9000_0010, 0x20)).toEqual({ region: mem.regions[1], offset: 0x10 });
    expect(mem.uvaRange(0x7000_0ff0, 0x20)).toBeNull();
    expect(mem.uvaRange(0x1234, 4)).toBeNull();
    expect(mem.gpaRange(0x1010, 0x20)).toEqual({ region: mem.regions[1], offset: 0x10 });
    expect(mem.gpaRange(0xff0, 0x20)).toBeNull();
    expect(mem.findUva(0x7000_0ff0)).toBe(mem.regions[0]);
  });
});
