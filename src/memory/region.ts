/**
 * MemoryRegion: one contiguous window of guest RAM visible to the backend as an ArrayBuffer.
 * Design: a frontend region (RegionDesc) may become several windows (≤ 1 GiB each, Node 20 caps
 * typed arrays at 4 GiB), so `origin` keeps the region as the frontend described it (REM_MEM_REG matches on it).
 * All addresses are plain numbers below 2^53 (docs/architecture.md §10); larger values are ERR_MEM_RANGE.
 * Spec: vhost-user "Memory region description" (guest_phys_addr, memory_size, userspace_addr, mmap_offset).
 */
import { VhostError } from '../util/errors.js';

/** Largest address (exclusive) representable exactly as a JS number. */
export const MAX_ADDR = 2 ** 53;

/** A memory region as the frontend described it in SET_MEM_TABLE / ADD_MEM_REG. */
export interface RegionDesc {
  gpa: number;
  size: number;
  uva: number;
  mmapOffset: number;
}

function checkRange(what: string, start: number, size: number): void {
  if (!Number.isSafeInteger(start) || start < 0 || !Number.isSafeInteger(size) || start + size > MAX_ADDR) {
    throw new VhostError('ERR_MEM_RANGE', `${what} range 0x${start.toString(16)}+0x${size.toString(16)} is not below 2^53`);
  }
}

/** One window of guest memory: [gpa, gpa+size) ↔ [uva, uva+size) ↔ u8[0, size). */
export class MemoryRegion {
  readonly gpa: number;
  readonly size: number;
  readonly uva: number;
  readonly mmapOffset: number;
  /** The backing ArrayBuffer (an mmap window in production, a plain ArrayBuffer in unit tests). */
  readonly buffer: ArrayBuffer;
  /** Exactly `size` bytes of guest memory; u8[0] is the byte at `gpa`. */
  readonly u8: Uint8Array;
  /** The region as the frontend described it (several windows may share one origin). */
  readonly origin: RegionDesc;
  /** copyBurst handle of the mapping (NativeBinding.mappingHandle), -1 when not an addon mapping at offset 0. */
  readonly handle: number;
  private u32Cache: Uint32Array | null = null;

  /**
   * @param byteOffset where guest byte `gpa` sits inside `buffer` (0 for mmap windows).
   * @param origin defaults to this window's own description.
   * @param handle the mapping's copyBurst handle; kept only when the window starts at the mapping's start, since
   *   SgList offsets into u8 are then offsets into the mapping.
   */
  constructor(desc: RegionDesc, buffer: ArrayBuffer, byteOffset = 0, origin?: RegionDesc, handle = -1) {
    const { gpa, size, uva, mmapOffset } = desc;
    checkRange('GPA', gpa, size);
    checkRange('UVA', uva, size);
    checkRange('mmap offset', mmapOffset, size);
    if (size <= 0) throw new VhostError('ERR_MEM_RANGE', `memory region at GPA 0x${gpa.toString(16)} has size 0`);
    if (byteOffset < 0 || byteOffset + size > buffer.byteLength) {
      throw new VhostError('ERR_MEM_RANGE', `memory region of 0x${size.toString(16)} bytes does not fit its buffer (0x${buffer.byteLength.toString(16)} bytes at offset ${byteOffset})`);
    }
    this.gpa = gpa;
    this.size = size;
    this.uva = uva;
    this.mmapOffset = mmapOffset;
    this.buffer = buffer;
    this.u8 = new Uint8Array(buffer, byteOffset, size);
    this.origin = origin ?? { gpa, size, uva, mmapOffset };
    this.handle = byteOffset === 0 && Number.isSafeInteger(handle) && handle >= 0 ? handle : -1;
  }

  /**
   * Uint32Array over the whole backing buffer (index = (u8.byteOffset + off) / 4). Created on first use; the chain
   * walker reads indirect tables in place through it without allocating a view per chain.
   */
  get bufU32(): Uint32Array {
    return (this.u32Cache ??= new Uint32Array(this.buffer, 0, Math.floor(this.buffer.byteLength / 4)));
  }

  /** True if [gpa, gpa+len) lies inside this region. */
  containsGpa(gpa: number, len: number): boolean {
    return gpa >= this.gpa && len >= 0 && gpa + len <= this.gpa + this.size;
  }

  /** True if [uva, uva+len) lies inside this region. */
  containsUva(uva: number, len: number): boolean {
    return uva >= this.uva && len >= 0 && uva + len <= this.uva + this.size;
  }

  /** "GPA [0x..-0x..) UVA [0x..-0x..)" for error messages and logs. */
  describe(): string {
    const hex = (n: number): string => '0x' + n.toString(16);
    return `GPA [${hex(this.gpa)}-${hex(this.gpa + this.size)}) UVA [${hex(this.uva)}-${hex(this.uva + this.size)})`;
  }
}
