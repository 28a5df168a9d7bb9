/**
 * Driver-side (guest) view of GuestMemory for tests: byte/field access by GPA (may straddle regions), a seeded
 * PRNG, and a bump allocator that leaves random gaps between buffers and can place one across a region end.
 * Works over any GuestMemory (plain ArrayBuffers in unit tests, memfd mappings in integration tests): it only
 * uses the MemoryRegion table, never how the regions were created.
 */
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { MemoryRegion } from '../../src/memory/region.js';
import { Rng } from './rng.js';

export { Rng };

/** GuestMemory over fresh ArrayBuffers: `[{gpa, size, uva?}]` (uva defaults to gpa). */
export function makeMemory(layout: readonly { gpa: number; size: number; uva?: number }[]): GuestMemory {
  return GuestMemory.fromArrayBuffers(layout.map((l) => ({ gpa: l.gpa, uva: l.uva, buffer: new ArrayBuffer(l.size) })));
}

/** Byte and little-endian field access by GPA, as the guest sees its RAM. */
export class DriverMemory {
  private readonly views = new Map<MemoryRegion, DataView>();
  constructor(readonly mem: GuestMemory) {}

  private loc(gpa: number, len: number): { dv: DataView; off: number } {
    const r = this.mem.gpaRange(gpa, len);
    if (r === null) throw new Error(`driver: GPA [0x${gpa.toString(16)}+${len}) is not inside one region`);
    let dv = this.views.get(r.region);
    if (!dv) {
      dv = new DataView(r.region.u8.buffer, r.region.u8.byteOffset, r.region.size);
      this.views.set(r.region, dv);
    }
    return { dv, off: r.offset };
  }

  /** Frontend virtual address of a GPA (what SET_VRING_ADDR carries). */
  gpaToUva(gpa: number): number {
    const r = this.mem.findGpa(gpa);
    if (r === null) throw new Error(`driver: GPA 0x${gpa.toString(16)} is outside guest memory`);
    return r.uva + (gpa - r.gpa);
  }

  u16(gpa: number): number {
    const { dv, off } = this.loc(gpa, 2);
    return dv.getUint16(off, true);
  }
  setU16(gpa: number, v: number): void {
    const { dv, off } = this.loc(gpa, 2);
    dv.setUint16(off, v & 0xffff, true);
  }
  u32(gpa: number): number {
    const { dv, off } = this.loc(gpa, 4);
    return dv.getUint32(off, true);
  }
  setU32(gpa: number, v: number): void {
    const { dv, off } = this.loc(gpa, 4);
    dv.setUint32(off, v >>> 0, true);
  }
  /** u64 as two u32 halves (v < 2^64 given as a number ≥ 2^53 is allowed for adversarial tests: hi = floor(v/2^32)). */
  setU64(gpa: number, v: number): void {
    this.setU32(gpa, v % 2 ** 32);
    this.setU32(gpa + 4, Math.floor(v / 2 ** 32));
  }

  /** Write bytes at gpa; may straddle regions. */
  write(gpa: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const r = this.mem.findGpa(gpa + done);
      if (r === null) throw new Error(`driver: GPA 0x${(gpa + done).toString(16)} is outside guest memory`);
      const off = gpa + done - r.gpa;
      const n = Math.min(data.length - done, r.size - off);
      r.u8.set(data.subarray(done, done + n), off);
      done += n;
    }
  }

  /** Read len bytes at gpa; may straddle regions. */
  read(gpa: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const r = this.mem.findGpa(gpa + done);
      if (r === null) throw new Error(`driver: GPA 0x${(gpa + done).toString(16)} is outside guest memory`);
      const off = gpa + done - r.gpa;
      const n = Math.min(len - done, r.size - off);
      out.set(r.u8.subarray(off, off + n), done);
      done += n;
    }
    return out;
  }
}

/**
 * Bump allocator over the regions (sorted by GPA): random gaps of 0..maxGap bytes between allocations, and
 * `allocAcross` for a buffer that starts in one region and ends in the next GPA-contiguous one.
 */
export class GuestAllocator {
  private readonly cursor: number[];
  private readonly regions: readonly MemoryRegion[];
  constructor(mem: GuestMemory, private readonly rng: Rng, private readonly maxGap = 64) {
    this.regions = mem.regions;
    this.cursor = this.regions.map((r) => r.gpa);
  }

  /** Allocate len bytes aligned to `align`, inside one region, after a random gap. */
  alloc(len: number, align = 1, gap = true): number {
    for (let i = 0; i < this.regions.length; i++) {
      const r = this.regions[i];
      let at = this.cursor[i] + (gap ? this.rng.int(0, this.maxGap) : 0);
      at = Math.ceil(at / align) * align;
      if (at + len <= r.gpa + r.size) {
        this.cursor[i] = at + len;
        return at;
      }
    }
    throw new Error(`driver allocator: no room for ${len} bytes (align ${align})`);
  }

  /** Allocate len ≥ 2 bytes straddling the end of a region whose successor starts at that end (GPA-contiguous). */
  allocAcross(len: number): number {
    for (let i = 0; i + 1 < this.regions.length; i++) {
      const a = this.regions[i];
      const b = this.regions[i + 1];
      const end = a.gpa + a.size;
      if (b.gpa !== end) continue;
      const head = Math.max(1, Math.min(len - 1, this.rng.int(1, len - 1)));
      const at = end - head;
      if (this.cursor[i] <= at && this.cursor[i + 1] === b.gpa && len - head <= b.size) {
        this.cursor[i] = end;
        this.cursor[i + 1] = at + len;
        return at;
      }
    }
    throw new Error(`driver allocator: no free GPA-contiguous region boundary for a ${len}-byte straddling buffer`);
  }
}

/**
 * The default unit-test layout: `count` GPA-contiguous regions of `size` bytes starting at GPA 0x100000, with UVAs
 * far from their GPAs and not contiguous (so GPA and UVA translation cannot be confused).
 */
export function standardMemory(count = 2, size = 0x40000): GuestMemory {
  const layout = [];
  for (let i = 0; i < count; i++) layout.push({ gpa: 0x100000 + i * size, size, uva: 0x7f00_0000_0000 + i * 2 * size });
  return makeMemory(layout);
}
