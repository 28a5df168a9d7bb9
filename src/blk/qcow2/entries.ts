/**
 * L1/L2/refcount entry codecs (qcow2 spec). 64-bit entries are handled as two u32 halves so the data path
 * stays on plain numbers (host offsets < 2^56; anything above 2^53 is past any real file and refused as such).
 */

export const COPIED_HI = 0x8000_0000;
export const COMPRESSED_HI = 0x4000_0000;
export const ZERO_LO = 1;
const TWO32 = 0x1_0000_0000;

export function readHi(buf: Buffer, idx: number): number {
  return buf.readUInt32BE(idx * 8);
}
export function readLo(buf: Buffer, idx: number): number {
  return buf.readUInt32BE(idx * 8 + 4);
}
/** Bits 9..55: the host offset of an L1 entry or a standard L2 entry. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ff_ffff) * TWO32 + ((lo & 0xffff_fe00) >>> 0);
}
/** Bits 9..63 of a refcount table entry. */
export function reftableOffset(hi: number, lo: number): number {
  return hi * TWO32 + ((lo & 0xffff_fe00) >>> 0);
}
export function writeEntry(buf: Buffer, idx: number, hi: number, lo: number): void {
  buf.writeUInt32BE(hi >>> 0, idx * 8);
  buf.writeUInt32BE(lo >>> 0, idx * 8 + 4);
}
/** Split a host offset (cluster-aligned, < 2^53) plus flags into [hi, lo]. */
export function makeEntry(offset: number, copied: boolean, zero = false): [number, number] {
  const hi = Math.floor(offset / TWO32) | (copied ? COPIED_HI : 0);
  const lo = (offset % TWO32) | (zero ? ZERO_LO : 0);
  return [hi >>> 0, lo >>> 0];
}

export interface CompressedLocation {
  offset: number;
  size: number;
}

/** Compressed descriptor (qcow2 spec, "Cluster mapping"): x = 62 - (cluster_bits - 8). */
export function compressedLocation(hi: number, lo: number, clusterBits: number): CompressedLocation {
  const x = 62 - (clusterBits - 8);
  const hiBits = x - 32; // offset bits that live in the high word
  const offset = (hi & ((1 << hiBits) - 1)) * TWO32 + lo;
  const nsect = ((hi >>> hiBits) & ((1 << (clusterBits - 8)) - 1)) + 1;
  return { offset, size: nsect * 512 - (offset % 512) };
}

export type ClusterKind = 'unallocated' | 'zero-plain' | 'zero-alloc' | 'normal' | 'compressed';

/** Classification order as qcow2_get_cluster_type(): compressed first, then the zero bit, then offset 0. */
export function classify(hi: number, lo: number, version: number): ClusterKind {
  if (hi & COMPRESSED_HI) return 'compressed';
  const off = entryOffset(hi, lo);
  if (version >= 3 && lo & ZERO_LO) return off === 0 ? 'zero-plain' : 'zero-alloc';
  return off === 0 ? 'unallocated' : 'normal';
}

/** Refcount of entry `idx` in a refblock of `bits`-bit entries (sub-byte widths: bit 0 = least significant). */
export function getRefcount(rb: Buffer, idx: number, bits: number): number {
  switch (bits) {
    case 8:
      return rb[idx]!;
    case 16:
      return rb.readUInt16BE(idx * 2);
    case 32:
      return rb.readUInt32BE(idx * 4);
    case 64:
      return rb.readUInt32BE(idx * 8) * TWO32 + rb.readUInt32BE(idx * 8 + 4);
    default: {
      const bit = idx * bits;
      return (rb[bit >> 3]! >> (bit & 7)) & ((1 << bits) - 1);
    }
  }
}

export function setRefcount(rb: Buffer, idx: number, bits: number, v: number): void {
  switch (bits) {
    case 8:
      rb[idx] = v;
      return;
    case 16:
      rb.writeUInt16BE(v, idx * 2);
      return;
    case 32:
      rb.writeUInt32BE(v, idx * 4);
      return;
    case 64:
      rb.writeUInt32BE(Math.floor(v / TWO32), idx * 8);
      rb.writeUInt32BE(v % TWO32, idx * 8 + 4);
      return;
    default: {
      const bit = idx * bits;
      const mask = ((1 << bits) - 1) << (bit & 7);
      rb[bit >> 3] = (rb[bit >> 3]! & ~mask) | ((v << (bit & 7)) & mask);
    }
  }
}

export function maxRefcount(bits: number): number {
  return bits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** bits - 1;
}
