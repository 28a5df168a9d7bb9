/**
 * Translation of guest ranges through the active L1 and the cached L2 tables: extents for reads, host ranges for
 * in-place writes, and compressed clusters inflated (docs/qcow2.md, "I/O path"). Every host offset is checked before use.
 */
import { inflateRaw, constants as zc } from 'node:zlib';
import { promisify } from 'node:util';
import type { FileIo } from '../file-io.js';
import { ImageError } from './errors.js';
import { classify, compressedLocation, COPIED_HI, entryOffset, readHi, readLo } from './entries.js';
import type { Qcow2Header } from './header.js';
import { preadvFull, type BackingImage } from './io.js';
import type { L2Cache, L2Table } from './l2-cache.js';
import type { HostRange, HostSpace } from './refcounts.js';

/** zlib on the libuv thread pool: a compressed cluster never inflates on the event loop. */
const inflateRawAsync = promisify(inflateRaw);

/** One piece of a request after translation. */
export type Extent =
  | { kind: 'data'; host: number; len: number }
  | { kind: 'zero'; len: number }
  | { kind: 'backing'; guest: number; len: number }
  | { kind: 'compressed'; hi: number; lo: number; intra: number; len: number };

export interface TranslatorInit {
  io: FileIo;
  path: string;
  header: Qcow2Header;
  l1: Buffer;
  l2: L2Cache;
  backing: BackingImage | null;
  space: HostSpace;
  fixedMeta: Set<number>;
  l2Clusters: Set<number>;
  corrupt: (m: string, offset: number, op: string) => ImageError;
}

export class Translator {
  private readonly io: FileIo;
  private readonly path: string;
  private readonly header: Qcow2Header;
  private readonly l1: Buffer;
  private readonly l2: L2Cache;
  private readonly backing: BackingImage | null;
  private readonly space: HostSpace;
  private readonly fixedMeta: Set<number>;
  private readonly l2Clusters: Set<number>;
  private readonly corrupt: TranslatorInit['corrupt'];
  private readonly cs: number;
  private readonly cb: number;
  private readonly l2Entries: number;
  private lastInflated: { offset: number; data: Buffer } | null = null;

  constructor(o: TranslatorInit) {
    this.io = o.io;
    this.path = o.path;
    this.header = o.header;
    this.l1 = o.l1;
    this.l2 = o.l2;
    this.backing = o.backing;
    this.space = o.space;
    this.fixedMeta = o.fixedMeta;
    this.l2Clusters = o.l2Clusters;
    this.corrupt = o.corrupt;
    this.cb = o.header.clusterBits;
    this.cs = 2 ** this.cb;
    this.l2Entries = this.cs / 8;
  }

  /** Drop the cached inflated cluster (after any L2 entry changed). */
  forgetInflated(): void {
    this.lastInflated = null;
  }

  /** L2 table for guest cluster `gc`, or null when the L1 entry is empty. */
  async l2For(gc: number, op: string): Promise<{ table: L2Table; l1i: number } | null> {
    const l1i = Math.floor(gc / this.l2Entries);
    if (l1i >= this.header.l1Size) throw this.corrupt(`guest cluster ${gc} beyond the L1 table`, gc * this.cs, op);
    const off = entryOffset(readHi(this.l1, l1i), readLo(this.l1, l1i));
    if (off === 0) return null;
    return { table: await this.l2.load(off), l1i };
  }

  /** Check a data cluster's host offset before it is used. */
  checkDataCluster(host: number, gc: number, op: string, writing: boolean): void {
    if (host % this.cs !== 0) throw this.corrupt(`L2 entry of guest cluster ${gc} has an unaligned offset 0x${host.toString(16)}`, gc * this.cs, op);
    if (host + this.cs > this.space.end) throw this.corrupt(`guest cluster ${gc} maps past the end of the file (0x${host.toString(16)})`, gc * this.cs, op);
    const hc = host / this.cs;
    if (writing && (this.fixedMeta.has(hc) || this.l2Clusters.has(hc)))
      throw this.corrupt(`guest cluster ${gc} maps onto image metadata (0x${host.toString(16)})`, gc * this.cs, op);
  }

  async translate(offset: number, len: number): Promise<Extent[]> {
    const cs = this.cs;
    const out: Extent[] = [];
    const push = (e: Extent): void => {
      const last = out[out.length - 1];
      if (last && last.kind === e.kind) {
        if (e.kind === 'zero') return void (last.len += e.len);
        if (e.kind === 'data' && (last as { host: number }).host + last.len === e.host) return void (last.len += e.len);
        if (e.kind === 'backing') return void (last.len += e.len);
      }
      out.push(e);
    };
    let pos = offset;
    const end = offset + len;
    while (pos < end) {
      const gc = Math.floor(pos / cs);
      const intra = pos - gc * cs;
      const n = Math.min(cs - intra, end - pos);
      const t = await this.l2For(gc, 'read');
      if (t === null) {
        push(this.backing ? { kind: 'backing', guest: pos, len: n } : { kind: 'zero', len: n });
      } else {
        const i = gc % this.l2Entries;
        const hi = readHi(t.table.buf, i);
        const lo = readLo(t.table.buf, i);
        const k = classify(hi, lo, this.header.version);
        if (k === 'normal') {
          const host = entryOffset(hi, lo);
          this.checkDataCluster(host, gc, 'read', false);
          push({ kind: 'data', host: host + intra, len: n });
        } else if (k === 'unallocated') push(this.backing ? { kind: 'backing', guest: pos, len: n } : { kind: 'zero', len: n });
        else if (k === 'compressed') push({ kind: 'compressed', hi, lo, intra, len: n });
        else push({ kind: 'zero', len: n });
      }
      pos += n;
    }
    return out;
  }

  /** Host extents for an in-place write, or null if any cluster needs allocation or copy-on-write. */
  async inPlaceHosts(offset: number, len: number): Promise<Array<{ host: number; len: number }> | null> {
    const cs = this.cs;
    const out: Array<{ host: number; len: number }> = [];
    let pos = offset;
    const end = offset + len;
    while (pos < end) {
      const gc = Math.floor(pos / cs);
      const intra = pos - gc * cs;
      const n = Math.min(cs - intra, end - pos);
      const l1i = Math.floor(gc / this.l2Entries);
      if (!(readHi(this.l1, l1i) & COPIED_HI)) return null;
      const t = await this.l2For(gc, 'write');
      if (t === null) return null;
      const i = gc % this.l2Entries;
      const hi = readHi(t.table.buf, i);
      const lo = readLo(t.table.buf, i);
      if (!(hi & COPIED_HI) || classify(hi, lo, this.header.version) !== 'normal') return null;
      const host = entryOffset(hi, lo);
      this.checkDataCluster(host, gc, 'write', true);
      const last = out[out.length - 1];
      if (last && last.host + last.len === host + intra) last.len += n;
      else out.push({ host: host + intra, len: n });
      pos += n;
    }
    return out;
  }

  /** Decompress the compressed cluster of an L2 entry (the last one is kept for sequential reads). */
  async inflate(hi: number, lo: number, guest: number): Promise<Buffer> {
    const loc = compressedLocation(hi, lo, this.cb);
    if (this.lastInflated?.offset === loc.offset) return this.lastInflated.data;
    if (loc.offset < this.cs || loc.offset >= this.space.end) throw this.corrupt(`compressed cluster at 0x${loc.offset.toString(16)} outside the file`, guest, 'read');
    const size = Math.min(loc.size, this.space.end - loc.offset);
    const src = Buffer.alloc(size);
    await preadvFull(this.io, [src], loc.offset, this.path);
    let data: Buffer;
    try {
      // Z_SYNC_FLUSH: trailing bytes after the stream are tolerated; the output is bounded to one cluster.
      data = await inflateRawAsync(src, { finishFlush: zc.Z_SYNC_FLUSH, maxOutputLength: this.cs });
    } catch (err) {
      // maxOutputLength overflow means the stream holds more than one cluster: keep the first cluster only.
      if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw this.corrupt('compressed cluster inflates past the cluster size', guest, 'read');
      throw new ImageError('CorruptImage', `compressed cluster at 0x${loc.offset.toString(16)} does not inflate: ${(err as Error).message}`, { path: this.path, offset: guest, op: 'read' }, { cause: err });
    }
    if (data.length !== this.cs) throw this.corrupt(`compressed cluster inflates to ${data.length} bytes, not ${this.cs}`, guest, 'read');
    this.lastInflated = { offset: loc.offset, data };
    return data;
  }


  /** Host clusters touched by a compressed cluster (each counted once per reference). */
  compressedRange(hi: number, lo: number): HostRange {
    const loc = compressedLocation(hi, lo, this.cb);
    const start = Math.floor(loc.offset / this.cs) * this.cs;
    return { offset: start, len: loc.offset + loc.size - start };
  }
}
