/**
 * virtio-blk request parsing (VIRTIO 1.2 §5.2.6): a walked descriptor
 * chain becomes one of a few plain request shapes, or a named failure with the status the spec asks for. Pure:
 * no I/O, no guest writes (the device writes the status byte), so every malformed case is unit-testable.
 *
 * Framing ignores descriptor boundaries (VERSION_1): the 16-byte header is gathered from the leading readable
 * bytes, the status byte is the last byte of the last writable descriptor, data is the rest of the readable bytes
 * (OUT, DISCARD, WRITE_ZEROES) or of the writable bytes (IN, GET_ID). Data buffers are views of guest memory:
 * the device reads and writes them straight from and to the image file.
 */
import type { SgList } from '../memory/sg-list.js';
import { sgCopyOut } from '../memory/sg-list.js';
import {
  BLK_REQ_HDR_SIZE,
  BLK_SEGMENT_SIZE,
  SECTOR_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_BARRIER,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_FLUSH_OUT,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from './virtio-blk-defs.js';

/** Why a request failed before any I/O (stable names: counters, logs and tests use them). */
export const BlkRequestError = {
  /** The descriptor chain broke a ring rule (DescriptorChain.error): no status byte may be written. */
  BAD_CHAIN: 'BAD_CHAIN',
  /** No device-writable byte: nowhere to put the status. */
  NO_STATUS: 'NO_STATUS',
  /** Fewer than 16 device-readable bytes: no complete header. */
  SHORT_HEADER: 'SHORT_HEADER',
  /** IN/OUT data length is not a multiple of 512. */
  UNALIGNED_LENGTH: 'UNALIGNED_LENGTH',
  /** The sector range ends past the capacity. */
  OUT_OF_RANGE: 'OUT_OF_RANGE',
  /** OUT, DISCARD or WRITE_ZEROES on a read-only disk. */
  READ_ONLY: 'READ_ONLY',
  /** A type the device does not implement (or did not offer). */
  UNSUPPORTED_TYPE: 'UNSUPPORTED_TYPE',
  /** DISCARD/WRITE_ZEROES data is empty or not a multiple of 16 bytes. */
  BAD_SEGMENTS: 'BAD_SEGMENTS',
  /** More segments than max_discard_seg / max_write_zeroes_seg. */
  TOO_MANY_SEGMENTS: 'TOO_MANY_SEGMENTS',
  /** A segment longer than max_discard_sectors / max_write_zeroes_sectors. */
  SEGMENT_TOO_LARGE: 'SEGMENT_TOO_LARGE',
  /** Reserved segment flag bits set. */
  SEGMENT_FLAGS: 'SEGMENT_FLAGS',
  /** DISCARD with the unmap flag (only WRITE_ZEROES may carry it). */
  DISCARD_UNMAP: 'DISCARD_UNMAP',
  /** GET_ID without a data buffer before the status byte. */
  NO_ID_BUFFER: 'NO_ID_BUFFER',
} as const;
export type BlkRequestErrorName = (typeof BlkRequestError)[keyof typeof BlkRequestError];

/** What the parser needs to know about the device. */
export interface BlkLimits {
  /** Capacity in 512-byte sectors. */
  capacitySectors: number;
  readOnly: boolean;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
}

/** The walked chain (DescriptorChain satisfies it). */
export interface ChainView {
  readonly readable: SgList;
  readonly writable: SgList;
  readonly readableBytes: number;
  readonly writableBytes: number;
  readonly error: string | null;
}

export interface BlkSegment {
  /** Byte offset and length on the disk. */
  offset: number;
  len: number;
  unmap: boolean;
}

export type BlkRequest =
  /** No status byte can be written: complete with used len 0 and touch nothing. */
  | { kind: 'drop'; error: BlkRequestErrorName; detail: string }
  /** Write `status` and complete (used len 1). */
  | { kind: 'fail'; type: number; status: number; error: BlkRequestErrorName; detail: string }
  | { kind: 'read' | 'write'; offset: number; len: number; bufs: Uint8Array[] }
  | { kind: 'flush' }
  | { kind: 'get-id'; bufs: Uint8Array[]; len: number }
  | { kind: 'discard' | 'write-zeroes'; segments: BlkSegment[] };

const TWO_32 = 2 ** 32;

/** Views of the logical range [pos, pos+len) of an SgList (the guest's own memory, no copy). */
export function sgViews(sg: SgList, pos: number, len: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < sg.count && len > 0; i++) {
    const segLen = sg.lens[i];
    if (pos >= segLen) {
      pos -= segLen;
      continue;
    }
    const n = Math.min(segLen - pos, len);
    const start = sg.offs[i] + pos;
    out.push(sg.bufs[i].subarray(start, start + n));
    len -= n;
    pos = 0;
  }
  return out;
}

/** Write the status byte: the last byte of the last writable segment. Caller checked writableBytes > 0. */
export function writeStatus(chain: ChainView, status: number): void {
  const w = chain.writable;
  const i = w.count - 1;
  w.bufs[i][w.offs[i] + w.lens[i] - 1] = status;
}

/** The plain fields parseRw() fills (BlkSlot in the device: reused, never reallocated). */
export interface RwTarget {
  write: boolean;
  offset: number;
  len: number;
  readonly bufs: Uint8Array[];
  nbufs: number;
}

const u32le = (b: Uint8Array, o: number): number => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;

/**
 * The allocation-free parse of the common request: a well-formed IN or OUT with data, into `out` (header read into
 * plain fields, the data views into out.bufs, a view reused when it is the same guest range as last time). Returns
 * false for anything else, which the caller hands to parseBlkRequest() (same checks, named failures). `scratch` is
 * a 16-byte buffer for a header split across descriptors.
 */
export function parseRw(chain: ChainView, limits: BlkLimits, scratch: Uint8Array, out: RwTarget, cache: (Uint8Array | null)[]): boolean {
  if (chain.error !== null || chain.writableBytes === 0 || chain.readableBytes < BLK_REQ_HDR_SIZE) return false;
  const r = chain.readable;
  let h: Uint8Array;
  let ho: number;
  if (r.lens[0]! >= BLK_REQ_HDR_SIZE) {
    h = r.bufs[0]!;
    ho = r.offs[0]!;
  } else {
    sgCopyOut(r, 0, scratch, 0, BLK_REQ_HDR_SIZE);
    h = scratch;
    ho = 0;
  }
  const type = (u32le(h, ho) & ~VIRTIO_BLK_T_BARRIER) >>> 0;
  if (type !== VIRTIO_BLK_T_IN && type !== VIRTIO_BLK_T_OUT) return false;
  const hi = u32le(h, ho + 12);
  if (hi >= 0x200000) return false;
  const sector = hi * TWO_32 + u32le(h, ho + 8);
  const write = type === VIRTIO_BLK_T_OUT;
  const len = write ? chain.readableBytes - BLK_REQ_HDR_SIZE : chain.writableBytes - 1;
  if (len === 0 || (write && limits.readOnly) || len % SECTOR_SIZE !== 0 || !rangeOk(sector, len / SECTOR_SIZE, limits)) return false;
  out.write = write;
  out.offset = sector * SECTOR_SIZE;
  out.len = len;
  out.nbufs = sgViewsInto(write ? r : chain.writable, write ? BLK_REQ_HDR_SIZE : 0, len, out.bufs, cache);
  return true;
}

/**
 * Entries of the view cache (a power of two): a direct-mapped table of data views by guest page. Drivers that reuse
 * their buffers (a guest doing direct I/O from fixed buffers) then get their views back instead of a new
 * Uint8Array per segment; others pay one subarray per segment, as before.
 */
export const VIEW_CACHE_SIZE = 512;

const sameView = (v: Uint8Array | null, buf: Uint8Array, start: number, n: number): v is Uint8Array =>
  v !== null && v.buffer === buf.buffer && v.byteOffset === buf.byteOffset + start && v.length === n;

/** sgViews into a reused array, through the view cache. Returns the count. */
function sgViewsInto(sg: SgList, pos: number, len: number, out: Uint8Array[], cache: (Uint8Array | null)[]): number {
  let k = 0;
  for (let i = 0; i < sg.count && len > 0; i++) {
    const segLen = sg.lens[i]!;
    if (pos >= segLen) {
      pos -= segLen;
      continue;
    }
    const n = Math.min(segLen - pos, len);
    const buf = sg.bufs[i]!;
    const start = sg.offs[i]! + pos;
    const old = k < out.length ? out[k]! : null;
    if (!sameView(old, buf, start, n)) {
      const at = (start / 4096) & (VIEW_CACHE_SIZE - 1);
      let v = cache[at]!;
      if (!sameView(v, buf, start, n)) {
        v = buf.subarray(start, start + n);
        cache[at] = v;
      }
      if (k < out.length) out[k] = v;
      else out.push(v);
    }
    k++;
    len -= n;
    pos = 0;
  }
  return k;
}

const fail = (type: number, status: number, error: BlkRequestErrorName, detail: string): BlkRequest => ({ kind: 'fail', type, status, error, detail });

/** Parse one chain. `scratch` is a reusable 16-byte buffer for the header. */
export function parseBlkRequest(chain: ChainView, limits: BlkLimits, scratch: Uint8Array = new Uint8Array(BLK_REQ_HDR_SIZE)): BlkRequest {
  if (chain.error !== null) return { kind: 'drop', error: BlkRequestError.BAD_CHAIN, detail: chain.error };
  if (chain.writableBytes === 0) return { kind: 'drop', error: BlkRequestError.NO_STATUS, detail: 'no device-writable byte for the status' };
  if (chain.readableBytes < BLK_REQ_HDR_SIZE) {
    return fail(-1, VIRTIO_BLK_S_IOERR, BlkRequestError.SHORT_HEADER, `${chain.readableBytes} device-readable bytes, the header needs ${BLK_REQ_HDR_SIZE}`);
  }
  sgCopyOut(chain.readable, 0, scratch, 0, BLK_REQ_HDR_SIZE);
  const dv = new DataView(scratch.buffer, scratch.byteOffset, BLK_REQ_HDR_SIZE);
  const type = (dv.getUint32(0, true) & ~VIRTIO_BLK_T_BARRIER) >>> 0;
  const hi = dv.getUint32(12, true);
  // Above 2^53 bytes nothing can be in range: keep the arithmetic exact by saturating.
  const sector = hi >= 0x200000 ? Infinity : hi * TWO_32 + dv.getUint32(8, true);
  const dataIn = chain.readableBytes - BLK_REQ_HDR_SIZE; // driver → device
  const dataOut = chain.writableBytes - 1; // device → driver, before the status byte

  switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
      const write = type === VIRTIO_BLK_T_OUT;
      const len = write ? dataIn : dataOut;
      if (write && limits.readOnly) return fail(type, VIRTIO_BLK_S_IOERR, BlkRequestError.READ_ONLY, `write of ${len} bytes at sector ${sector} to a read-only disk`);
      if (len % SECTOR_SIZE !== 0) return fail(type, VIRTIO_BLK_S_IOERR, BlkRequestError.UNALIGNED_LENGTH, `data length ${len} is not a multiple of ${SECTOR_SIZE}`);
      if (!rangeOk(sector, len / SECTOR_SIZE, limits)) {
        return fail(type, VIRTIO_BLK_S_IOERR, BlkRequestError.OUT_OF_RANGE, `sectors [${sector}, ${sector + len / SECTOR_SIZE}) past capacity ${limits.capacitySectors}`);
      }
      const offset = sector * SECTOR_SIZE;
      const bufs = write ? sgViews(chain.readable, BLK_REQ_HDR_SIZE, len) : sgViews(chain.writable, 0, len);
      return { kind: write ? 'write' : 'read', offset, len, bufs };
    }
    case VIRTIO_BLK_T_FLUSH:
    case VIRTIO_BLK_T_FLUSH_OUT:
      return { kind: 'flush' };
    case VIRTIO_BLK_T_GET_ID: {
      if (dataOut === 0) return fail(type, VIRTIO_BLK_S_IOERR, BlkRequestError.NO_ID_BUFFER, 'GET_ID without a buffer for the id');
      const len = Math.min(dataOut, VIRTIO_BLK_ID_BYTES);
      return { kind: 'get-id', len, bufs: sgViews(chain.writable, 0, len) };
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
      return parseSegments(chain, type, dataIn, limits);
    default:
      return fail(type, VIRTIO_BLK_S_UNSUPP, BlkRequestError.UNSUPPORTED_TYPE, `request type ${type}`);
  }
}

function rangeOk(sector: number, count: number, limits: BlkLimits): boolean {
  return sector <= limits.capacitySectors && count <= limits.capacitySectors - sector;
}

function parseSegments(chain: ChainView, type: number, dataIn: number, limits: BlkLimits): BlkRequest {
  const discard = type === VIRTIO_BLK_T_DISCARD;
  const name = discard ? 'DISCARD' : 'WRITE_ZEROES';
  if (limits.readOnly) return fail(type, VIRTIO_BLK_S_IOERR, BlkRequestError.READ_ONLY, `${name} on a read-only disk`);
  if (dataIn === 0 || dataIn % BLK_SEGMENT_SIZE !== 0) {
    return fail(type, VIRTIO_BLK_S_IOERR, BlkRequestError.BAD_SEGMENTS, `${name} data of ${dataIn} bytes is not a non-zero multiple of ${BLK_SEGMENT_SIZE}`);
  }
  const n = dataIn / BLK_SEGMENT_SIZE;
  const maxSeg = discard ? limits.maxDiscardSeg : limits.maxWriteZeroesSeg;
  const maxSectors = discard ? limits.maxDiscardSectors : limits.maxWriteZeroesSectors;
  if (n > maxSeg) return fail(type, VIRTIO_BLK_S_IOERR, BlkRequestError.TOO_MANY_SEGMENTS, `${name} with ${n} segments, at most ${maxSeg}`);
  const raw = new Uint8Array(dataIn);
  sgCopyOut(chain.readable, BLK_REQ_HDR_SIZE, raw, 0, dataIn);
  const dv = new DataView(raw.buffer);
  const segments: BlkSegment[] = [];
  for (let i = 0; i < n; i++) {
    const o = i * BLK_SEGMENT_SIZE;
    const hi = dv.getUint32(o + 4, true);
    const sector = hi >= 0x200000 ? Infinity : hi * TWO_32 + dv.getUint32(o, true);
    const count = dv.getUint32(o + 8, true);
    const flags = dv.getUint32(o + 12, true);
    if (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) return fail(type, VIRTIO_BLK_S_UNSUPP, BlkRequestError.SEGMENT_FLAGS, `${name} segment ${i} has reserved flags 0x${flags.toString(16)}`);
    const unmap = (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0;
    if (discard && unmap) return fail(type, VIRTIO_BLK_S_UNSUPP, BlkRequestError.DISCARD_UNMAP, `DISCARD segment ${i} has the unmap flag`);
    if (count > maxSectors) return fail(type, VIRTIO_BLK_S_IOERR, BlkRequestError.SEGMENT_TOO_LARGE, `${name} segment ${i} of ${count} sectors, at most ${maxSectors}`);
    if (!rangeOk(sector, count, limits)) {
      return fail(type, VIRTIO_BLK_S_IOERR, BlkRequestError.OUT_OF_RANGE, `${name} segment ${i}: sectors [${sector}, ${sector + count}) past capacity ${limits.capacitySectors}`);
    }
    segments.push({ offset: sector * SECTOR_SIZE, len: count * SECTOR_SIZE, unmap });
  }
  return { kind: discard ? 'discard' : 'write-zeroes', segments };
}
