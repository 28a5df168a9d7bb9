/**
 * DescriptorChain: one popped request, walked into reusable readable/writable SgLists (no allocation per chain).
 * Design: the walk copies each descriptor's fields into locals exactly once (TOCTOU), bounds everything the guest
 * controls, and reports a bad chain as `error` with `head` still set, so the device completes it with used len 0
 * (per-request guest error, docs/architecture.md §6); only a bad *head* is queue-fatal and that is SplitQueue's job.
 * Capacity: each SgList holds min(queue size, 1024) + 16 entries (1024 = QEMU/libvhost-user VIRTQUEUE_MAX_SIZE;
 * +16 for region splits); a chain needing more segments fails with "too many segments".
 * Spec: VIRTIO 1.2 §2.7.5 (descriptor table), §2.7.5.3 (indirect), §2.7.4.1 (writable after readable).
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { SgList, sgCopyOut } from '../memory/sg-list.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from './defs.js';

/** Most segments per SgList regardless of queue size (QEMU VIRTQUEUE_MAX_SIZE). */
export const MAX_CHAIN_SEGMENTS = 1024;

const TWO_32 = 2 ** 32;

/** Why a chain was refused (constant strings: no allocation on the error path either). */
export const ChainError = {
  LOOP: 'descriptor chain is looped or longer than the queue size (§2.7.5.3.1)',
  NEXT_OUT_OF_RANGE: 'descriptor next index is not below the table size (§2.7.5)',
  ZERO_LENGTH: 'zero-length descriptor (§2.7.5)',
  READABLE_AFTER_WRITABLE: 'device-readable descriptor after a device-writable one (§2.7.4.1)',
  INDIRECT_NOT_NEGOTIATED: 'INDIRECT descriptor but VIRTIO_F_INDIRECT_DESC was not negotiated (§2.7.5.3.2)',
  NESTED_INDIRECT: 'INDIRECT descriptor inside an indirect table (§2.7.5.3.1)',
  INDIRECT_WITH_NEXT: 'descriptor has both INDIRECT and NEXT set (§2.7.5.3.1)',
  INDIRECT_BAD_LEN: 'indirect table length is zero or not a multiple of 16 (§2.7.5.3)',
  INDIRECT_TOO_LONG: 'indirect table has more entries than the queue size (§2.7.5.3.1)',
  INDIRECT_UNMAPPED: 'indirect table is not inside guest memory',
  TOO_LONG: 'total descriptor chain length is 2^32 bytes or more',
  UNMAPPED: 'descriptor buffer is not inside guest memory',
  TOO_MANY_SEGMENTS: 'descriptor chain needs more scatter-gather segments than the queue allows',
} as const;

export class DescriptorChain {
  /** Head descriptor index (what addUsed must return), -1 before the first pop. */
  head = -1;
  /** Device-readable buffers (driver → device), in chain order. */
  readonly readable: SgList;
  /** Device-writable buffers (device → driver), in chain order. */
  readonly writable: SgList;
  readableBytes = 0;
  writableBytes = 0;
  /** Non-null if the chain is invalid: complete it with used len 0 and do not touch its buffers. */
  error: string | null = null;
  /** Descriptors visited, including the one pointing to an indirect table. */
  descCount = 0;
  /** True if the chain went through an indirect table. */
  indirect = false;

  private readonly queueSize: number;
  private scratchU32: Uint32Array | null = null;
  private scratchU8: Uint8Array | null = null;
  private readonly scratchSg = new SgList(8);

  /**
   * @param queueSize the size of the queue this chain is used with (bounds the indirect-table scratch).
   * @param maxSegments capacity of each SgList.
   */
  constructor(queueSize: number, maxSegments = Math.min(queueSize, MAX_CHAIN_SEGMENTS) + 16) {
    this.queueSize = queueSize;
    this.readable = new SgList(maxSegments);
    this.writable = new SgList(maxSegments);
  }

  /** Forget the previous chain (keeps the SgList storage). */
  reset(): void {
    this.head = -1;
    this.readable.reset();
    this.writable.reset();
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.error = null;
    this.descCount = 0;
    this.indirect = false;
  }

  private fail(msg: string): false {
    this.error = msg;
    return false;
  }

  /**
   * Walk the chain starting at `head` (< size, checked by the caller) of the descriptor table viewed as `d32`
   * (a Uint32Array starting at the table; flags|next are read as one little-endian u32 word). Returns true if
   * valid; otherwise `error` says why. Never throws on guest data.
   */
  walk(mem: GuestMemory, d32: Uint32Array, size: number, head: number, indirectOk: boolean): boolean {
    this.reset();
    this.head = head;
    let t32 = d32;
    let b32 = 0; // table base, in u32 units, inside t32
    let tableLen = size;
    let ttl = size; // §2.7.5.3.1: a chain is at most queue-size long; also bounds a looped chain
    let i = head;
    let inIndirect = false;
    let seenWrite = false;
    let total = 0;
    for (;;) {
      if (ttl === 0) return this.fail(ChainError.LOOP);
      ttl--;
      // Copy the descriptor once: the guest may rewrite it while we look (TOCTOU).
      const o32 = b32 + i * 4;
      const lo = t32[o32];
      const hi = t32[o32 + 1];
      const len = t32[o32 + 2];
      const flagsNext = t32[o32 + 3];
      const flags = flagsNext & 0xffff;
      const next = flagsNext >>> 16;
      this.descCount++;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!indirectOk) return this.fail(ChainError.INDIRECT_NOT_NEGOTIATED);
        if (inIndirect) return this.fail(ChainError.NESTED_INDIRECT);
        if (flags & VIRTQ_DESC_F_NEXT) return this.fail(ChainError.INDIRECT_WITH_NEXT);
        if (len === 0 || (len & 15) !== 0) return this.fail(ChainError.INDIRECT_BAD_LEN);
        const n = len >>> 4;
        if (n > size) return this.fail(ChainError.INDIRECT_TOO_LONG);
        if (hi >= 0x200000) return this.fail(ChainError.INDIRECT_UNMAPPED);
        const addr = lo + hi * TWO_32;
        // In place when the table is in one region and 4-byte aligned in its buffer, else copied to scratch
        // (a table may straddle regions). Either way each entry is read once below.
        const r = mem.findGpa(addr);
        const off = r === null ? 0 : r.u8.byteOffset + (addr - r.gpa);
        if (r !== null && addr + len <= r.gpa + r.size && (off & 3) === 0) {
          t32 = r.bufU32;
          b32 = off >>> 2;
        } else {
          if (!this.copyTable(mem, addr, len)) return this.fail(ChainError.INDIRECT_UNMAPPED);
          t32 = this.scratchU32!;
          b32 = 0;
        }
        tableLen = n;
        ttl = n;
        i = 0;
        inIndirect = true;
        this.indirect = true;
        continue;
      }
      if (len === 0) return this.fail(ChainError.ZERO_LENGTH);
      if (hi >= 0x200000) return this.fail(ChainError.UNMAPPED);
      const addr = lo + hi * TWO_32;
      // Lengths are u32 and the used len is u32: a chain totalling 2^32 bytes or more cannot be completed.
      total += len;
      if (total >= TWO_32) return this.fail(ChainError.TOO_LONG);
      // §2.7.4.1 / §2.7.5: device-writable descriptors follow all device-readable ones.
      if (flags & VIRTQ_DESC_F_WRITE) {
        seenWrite = true;
        if (!mem.mapGpa(addr, len, this.writable)) return this.fail(this.mapError(this.writable));
        this.writableBytes += len;
      } else {
        if (seenWrite) return this.fail(ChainError.READABLE_AFTER_WRITABLE);
        if (!mem.mapGpa(addr, len, this.readable)) return this.fail(this.mapError(this.readable));
        this.readableBytes += len;
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return true;
      if (next >= tableLen) return this.fail(ChainError.NEXT_OUT_OF_RANGE);
      i = next;
    }
  }

  private mapError(sg: SgList): string {
    return sg.count >= sg.capacity ? ChainError.TOO_MANY_SEGMENTS : ChainError.UNMAPPED;
  }

  /** Copy an indirect table into the per-chain scratch (rare path: straddling or unaligned tables). */
  private copyTable(mem: GuestMemory, addr: number, len: number): boolean {
    if (this.scratchU8 === null) {
      const ab = new ArrayBuffer(16 * this.queueSize);
      this.scratchU8 = new Uint8Array(ab);
      this.scratchU32 = new Uint32Array(ab);
    }
    const sg = this.scratchSg;
    sg.reset();
    if (len > this.scratchU8.length || !mem.mapGpa(addr, len, sg)) return false;
    return sgCopyOut(sg, 0, this.scratchU8, 0, len) === len;
  }
}
