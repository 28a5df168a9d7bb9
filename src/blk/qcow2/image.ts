/**
 * Qcow2Image: a qcow2 (v2/v3) image as a Disk (docs/qcow2.md): open, translation, reads, writes, discard.
 *
 * Data goes straight between the file and the caller's buffers; only copy-on-write fills of partial clusters and
 * compressed clusters go through temporary buffers. Metadata lives in memory: the whole active L1, the refcounts
 * (refcounts.ts), and an LRU cache of L2 tables (l2-cache.ts). Dirty metadata is written back on flush() (or when the
 * L2 cache overflows) in crash-safe order by writeback.ts. Allocation appends at the end of the file (allocator.ts).
 *
 * Concurrency: reads and in-place writes (to COPIED clusters) hold a shared lock and run together. An allocating
 * write claims its guest clusters (inflight.ts), holds the lock exclusively only to plan its clusters and later to
 * link them, and writes its data in between without it. Discard, write-zeroes and flush hold it exclusively.
 */
import type { FileHandle } from 'node:fs/promises';
import { setImmediate } from 'node:timers/promises';
import { fileId, type Disk, type DiskFiles } from '../disk.js';
import { fileIo, type FileIo } from '../file-io.js';
import type { DiskEngineName } from '../uring-engine.js';
import { ImageFileError, openImageFile, type OpenedImageFile } from '../image-file.js';
import { newChain, openBacking, setAllowedDirs, type ChainState, type ImagePolicy } from './backing.js';
import { ImageError } from './errors.js';
import { rebuildRefcounts as rebuildFromMetadata } from './rebuild.js';
import { parseHeader, HDR_AUTOCLEAR_FEATURES, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, type Qcow2Header } from './header.js';
import { L2Cache, type L2Table } from './l2-cache.js';
import { Refcounts, type HostRange, type HostSpace } from './refcounts.js';
import { Allocator } from './allocator.js';
import { writeBack, type MetadataState } from './writeback.js';
import { InflightClusters } from './inflight.js';
import { Translator } from './translate.js';
import {
  classify,
  compressedLocation,
  COPIED_HI,
  entryOffset,
  makeEntry,
  readHi,
  readLo,
  reftableOffset,
  writeEntry,
  ZERO_LO,
} from './entries.js';
import {
  copyInto,
  fillZero,
  IovCursor,
  preadvFull,
  pwritevFull,
  readBacking,
  RwLock,
  totalLength,
  type BackingImage,
} from './io.js';

export interface Qcow2OpenOptions {
  readOnly: boolean;
  log?: { warn(o: object, m: string): void };
  /** Bytes of L2 tables kept in memory (default 32 MiB: a whole 256 GiB disk at 64 KiB clusters). */
  l2CacheBytes?: number;
  /** What the backing chain may reach (default: the top image's own directory tree only). */
  policy?: ImagePolicy;
}

export { MAX_BACKING_DEPTH } from './backing.js';
const DEFAULT_L2_CACHE_BYTES = 32 * 1024 * 1024;

/** One guest cluster's share of a write, as planned under the lock. */
interface WritePiece {
  gc: number;
  /** Host offset of the cluster the data goes to. */
  cluster: number;
  intra: number;
  views: Uint8Array[];
  /** Where the rest of a partly written new cluster comes from ('none': nothing to fill). */
  fill: 'none' | 'zero' | 'old' | 'backing' | 'compressed';
  /** The L2 entry found when planning (the source of an 'old' or 'compressed' fill). */
  hi: number;
  lo: number;
  /** The L2 entry to set once the data is in the file, and what it replaces; null for in-place writes. */
  link: { hi: number; lo: number; free: HostRange | null } | null;
}

export class Qcow2Image implements Disk, BackingImage {
  readonly format = 'qcow2';
  /** The disk I/O engine moving this image's bytes. */
  get engine(): DiskEngineName {
    return this.io.engine;
  }
  readonly size: number;
  readonly readOnly: boolean;
  readonly path: string;
  /** The parsed header (for status and tests). */
  readonly header: Qcow2Header;
  readonly backing: BackingImage | null;
  /** Set on the top image of a chain once the whole chain is open (a backing image has none). */
  files?: DiskFiles;

  private readonly fh: FileHandle;
  /** Data and metadata I/O after open, on the disk I/O engine (src/blk/file-io.ts). */
  private readonly io: FileIo;
  private readonly log: Qcow2OpenOptions['log'];
  private readonly cs: number;
  private readonly l2Entries: number;
  private readonly l1: Buffer;
  /** Cluster indices of header, L1, refcount table, refblocks and snapshot table: never written with data. */
  private readonly fixedMeta = new Set<number>();
  /** Cluster indices of L2 tables reachable from the active L1. */
  private readonly l2Clusters = new Set<number>();
  private readonly space: HostSpace;
  private readonly refs: Refcounts;
  private readonly alloc: Allocator;
  private readonly l2: L2Cache;
  /** Everything write-back reads and clears. */
  private readonly meta: MetadataState;
  private readonly lock = new RwLock();
  /** Guest clusters with an allocating write, discard or write-zeroes in flight. */
  private readonly inflight = new InflightClusters();
  /** fallocate ZERO_RANGE works on this file (false after the first refusal: zeros are written instead). */
  private zeroRange = true;
  /** One cluster of zeros, the source of zero fills where ZERO_RANGE is refused (never written into). */
  private zeroCluster: Uint8Array | null = null;
  private readonly tr: Translator;
  private closed = false;

  private constructor(init: {
    fh: FileHandle;
    path: string;
    readOnly: boolean;
    header: Qcow2Header;
    fileSize: number;
    l1: Buffer;
    reftable: Buffer;
    backing: BackingImage | null;
    opts: Qcow2OpenOptions;
  }) {
    const h = init.header;
    this.fh = init.fh;
    this.io = fileIo(init.fh);
    this.path = init.path;
    this.readOnly = init.readOnly;
    this.header = h;
    this.size = h.size;
    this.backing = init.backing;
    this.log = init.opts.log;
    this.cs = 2 ** h.clusterBits;
    this.l2Entries = this.cs / 8;
    this.l1 = init.l1;
    this.space = { end: Math.ceil(init.fileSize / this.cs) * this.cs };
    const corrupt = (m: string, offset: number, op: string): ImageError => this.corrupt(m, offset, op);
    this.refs = new Refcounts({
      io: this.io,
      path: this.path,
      clusterBits: h.clusterBits,
      refcountOrder: h.refcountOrder,
      table: init.reftable,
      tableOffset: h.refcountTableOffset,
      space: this.space,
      fixedMeta: this.fixedMeta,
      freeLater: (r) => this.meta.pendingDecrements.push(r),
      corrupt,
    });
    this.alloc = new Allocator(this.refs, this.space, this.cs, corrupt);
    this.l2 = new L2Cache(this.io, this.path, this.cs, Math.max(4, Math.floor((init.opts.l2CacheBytes ?? DEFAULT_L2_CACHE_BYTES) / this.cs)));
    this.tr = new Translator({
      io: this.io,
      path: this.path,
      header: h,
      l1: this.l1,
      l2: this.l2,
      backing: this.backing,
      space: this.space,
      fixedMeta: this.fixedMeta,
      l2Clusters: this.l2Clusters,
      corrupt,
    });
    this.meta = {
      io: this.io,
      path: this.path,
      cs: this.cs,
      refs: this.refs,
      l2: this.l2,
      l1: this.l1,
      l1Offset: h.l1TableOffset,
      l1Dirty: new Set(),
      unsynced: false,
      pendingDecrements: [],
      log: this.log,
    };
  }

  /** Open a qcow2 image; its backing chain is opened read-only. */
  static async open(path: string, opts: Qcow2OpenOptions): Promise<Qcow2Image> {
    let file: OpenedImageFile;
    try {
      file = await openImageFile(path, { readOnly: opts.readOnly });
    } catch (err) {
      if (err instanceof ImageFileError && err.reason === 'not-regular') throw new ImageError('InvalidFormat', err.message, { path, op: 'open' }, { cause: err });
      throw new ImageError('Io', `cannot open: ${(err as Error).message}`, { path, op: 'open' }, { cause: err });
    }
    const chain = await newChain(opts.policy);
    await setAllowedDirs(chain, file.resolved);
    const img = await Qcow2Image.openChain(path, file, opts, chain);
    // Every level adds itself to chain.seen as it opens: the set now holds the image and all its backing files.
    img.files = { image: fileId(file.stat), chain: new Set(chain.seen) };
    return img;
  }

  /** Open the qcow2 image in `file` (the handle is owned from here on); its backing chain under `chain`'s rules. */
  private static async openChain(path: string, file: OpenedImageFile, opts: Qcow2OpenOptions, chain: ChainState): Promise<Qcow2Image> {
    const fh = file.fh;
    try {
      const st = file.stat;
      const id = `${st.dev}:${st.ino}`;
      if (chain.seen.has(id)) throw new ImageError('InvalidFormat', 'backing chain loops back to this image', { path, op: 'open' });
      chain.seen.add(id);
      const fileSize = st.size;
      const first = Buffer.alloc(Math.min(fileSize, 104));
      await preadvFull(fh, [first], 0, path);
      if (first.length < 24) throw new ImageError('InvalidFormat', 'file too small for a qcow2 header', { path, op: 'open' });
      const cb = first.readUInt32BE(20);
      const head = Buffer.alloc(Math.min(fileSize, cb >= 9 && cb <= 21 ? 2 ** cb : 104));
      await preadvFull(fh, [head], 0, path);
      const h = parseHeader(head, fileSize, path);
      if (!opts.readOnly) {
        if (h.incompatibleFeatures & INCOMPAT_CORRUPT)
          throw new ImageError('CorruptImage', 'image is marked corrupt; open it read-only or repair it with qemu-img check -r all', { path, op: 'open' });
      }
      const l1 = Buffer.alloc(h.l1Size * 8);
      if (l1.length) await preadvFull(fh, [l1], h.l1TableOffset, path);
      const reftable = Buffer.alloc(h.refcountTableClusters * 2 ** h.clusterBits);
      await preadvFull(fh, [reftable], h.refcountTableOffset, path);
      let backing: BackingImage | null = null;
      if (h.backingFile !== null) {
        const backingOpts: Qcow2OpenOptions = { readOnly: true, log: opts.log, l2CacheBytes: opts.l2CacheBytes };
        backing = await openBacking(path, file.resolved, h, chain, (f, c) => Qcow2Image.openChain(f.resolved, f, backingOpts, c));
      }
      const img = new Qcow2Image({ fh, path, readOnly: opts.readOnly, header: h, fileSize, l1, reftable, backing, opts });
      try {
        await img.validateTables();
        if (!opts.readOnly && h.version === 3 && h.autoclearFeatures !== 0n) {
          // A writer that does not maintain what autoclear bits describe must clear them before writing.
          const z = Buffer.alloc(8);
          await pwritevFull(fh, [z], HDR_AUTOCLEAR_FEATURES, path);
          await fh.datasync();
          h.autoclearFeatures = 0n;
        }
        // Dirty (lazy refcounts): the on-disk refcounts may be wrong; rebuild them before anything is written.
        if (!opts.readOnly && h.incompatibleFeatures & INCOMPAT_DIRTY) await img.rebuildRefcounts();
      } catch (err) {
        img.io.release();
        await backing?.close();
        throw err;
      }
      return img;
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Check every active L1 and refcount table entry: aligned, inside the file, not on top of fixed metadata. */
  private async validateTables(): Promise<void> {
    const cs = this.cs;
    const h = this.header;
    const addRange = (set: Set<number>, off: number, bytes: number): void => {
      for (let c = off / cs; c < (off + bytes) / cs; c++) set.add(c);
    };
    addRange(this.fixedMeta, 0, cs);
    addRange(this.fixedMeta, h.l1TableOffset, Math.ceil((h.l1Size * 8) / cs) * cs);
    addRange(this.fixedMeta, h.refcountTableOffset, h.refcountTableClusters * cs);
    if (h.nbSnapshots > 0) this.fixedMeta.add(h.snapshotsOffset / cs);
    const corrupt = (m: string): never => {
      throw new ImageError('CorruptImage', m, { path: this.path, op: 'open' });
    };
    const reftable = this.refs.table;
    const rtEntries = reftable.length / 8;
    for (let i = 0; i < rtEntries; i++) {
      const off = reftableOffset(readHi(reftable, i), readLo(reftable, i));
      if (off === 0) continue;
      if (off % cs !== 0) corrupt(`refcount block ${i} offset 0x${off.toString(16)} is not cluster-aligned`);
      if (off + cs > this.space.end) corrupt(`refcount block ${i} (0x${off.toString(16)}) lies past the end of the file`);
      if (this.fixedMeta.has(off / cs)) corrupt(`refcount block ${i} overlaps the header or another table`);
      this.fixedMeta.add(off / cs);
    }
    for (let i = 0; i < h.l1Size; i++) {
      if ((i & 0xffff) === 0xffff) await setImmediate(); // an L1 has up to 4M entries: no long stall at open
      const hi = readHi(this.l1, i);
      const lo = readLo(this.l1, i);
      const off = entryOffset(hi, lo);
      if (off === 0) continue;
      if (hi & 0x7f00_0000) corrupt(`L1 entry ${i} has reserved bits set`);
      if (off % cs !== 0) corrupt(`L2 table ${i} offset 0x${off.toString(16)} is not cluster-aligned`);
      if (off + cs > this.space.end) corrupt(`L2 table ${i} (0x${off.toString(16)}) lies past the end of the file`);
      if (this.fixedMeta.has(off / cs)) corrupt(`L2 table ${i} overlaps the header, L1, refcount table or a refcount block`);
      this.l2Clusters.add(off / cs);
    }
  }

  /** Rebuild the refcounts of a dirty image (rebuild.ts), then follow the rebuilt structures in memory. */
  private async rebuildRefcounts(): Promise<void> {
    const cs = this.cs;
    const h = this.header;
    const r = await rebuildFromMetadata({ fh: this.fh, path: this.path, header: h, l1: this.l1, reftable: this.refs.table, reftableOffset: this.refs.tableOffset, fileEnd: this.space.end });
    h.incompatibleFeatures &= ~INCOMPAT_DIRTY;
    h.refcountTableOffset = r.tableOffset;
    h.refcountTableClusters = r.table.length / cs;
    this.refs.replaceTable(r.table, r.tableOffset);
    for (let c = 0; c < r.table.length / cs; c++) this.fixedMeta.add(r.tableOffset / cs + c);
    for (const off of r.blockOffsets) this.fixedMeta.add(off / cs);
    this.space.end = Math.max(this.space.end, r.fileEnd);
    this.log?.warn(
      { path: this.path, refcountBlocks: r.blockOffsets.length, newRefcountBlocks: r.newBlocks, refcountTableMoved: r.moved },
      'qcow2: image was dirty (lazy refcounts); refcounts rebuilt from metadata and the dirty bit cleared (image repaired)',
    );
  }

  // ---------------------------------------------------------------- public Disk API

  async read(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    const len = totalLength(bufs);
    this.checkRange(offset, len, 'read');
    if (len === 0) return;
    await this.lock.shared();
    try {
      const extents = await this.tr.translate(offset, len);
      const cur = new IovCursor(bufs);
      const jobs: Promise<void>[] = [];
      let guest = offset;
      for (const e of extents) {
        const views = cur.take(e.len);
        if (e.kind === 'data') jobs.push(preadvFull(this.io, views, e.host, this.path));
        else if (e.kind === 'zero') fillZero(views);
        else if (e.kind === 'backing') jobs.push(readBacking(this.backing, e.guest, views));
        else {
          const data = await this.tr.inflate(e.hi, e.lo, guest);
          copyInto(data.subarray(e.intra, e.intra + e.len), views);
        }
        guest += e.len;
      }
      await Promise.all(jobs);
    } finally {
      this.lock.releaseShared();
    }
  }

  async write(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    this.checkWritable('write', offset);
    const len = totalLength(bufs);
    this.checkRange(offset, len, 'write');
    if (len === 0) return;
    // Fast path: every cluster already allocated with COPIED → in-place writes under the shared lock.
    await this.lock.shared();
    try {
      const hosts = await this.tr.inPlaceHosts(offset, len);
      if (hosts !== null) {
        const cur = new IovCursor(bufs);
        await Promise.all(hosts.map((e) => pwritevFull(this.io, cur.take(e.len), e.host, this.path)));
        this.meta.unsynced = true;
        return;
      }
    } finally {
      this.lock.releaseShared();
    }
    // Allocating write: only requests on the same clusters wait; the data goes to the file outside the lock.
    const release = await this.inflight.claim(Math.floor(offset / this.cs), Math.ceil((offset + len) / this.cs));
    try {
      await this.lock.exclusive();
      let pieces: WritePiece[];
      try {
        pieces = await this.planWrite(offset, bufs);
      } finally {
        this.lock.releaseExclusive();
      }
      await this.writeData(pieces);
      await this.lock.exclusive();
      try {
        await this.link(pieces);
        await this.maybeWriteBack();
      } finally {
        this.lock.releaseExclusive();
      }
    } finally {
      release();
    }
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await this.lock.exclusive();
    try {
      await writeBack(this.meta);
    } finally {
      this.lock.releaseExclusive();
    }
  }

  async discard(offset: number, len: number): Promise<void> {
    this.checkWritable('discard', offset);
    this.checkRange(offset, len, 'discard');
    // Only whole clusters are deallocated; partial clusters keep their data (allowed for discard).
    const [first, end] = this.wholeClusters(offset, len);
    if (first >= end) return;
    const release = await this.inflight.claim(first, end);
    await this.lock.exclusive();
    try {
      for (let c = first; c < end; c++) await this.unmapCluster(c, 'discard');
      await this.maybeWriteBack();
    } finally {
      this.lock.releaseExclusive();
      release();
    }
  }

  async writeZeroes(offset: number, len: number, unmap: boolean): Promise<void> {
    this.checkWritable('write-zeroes', offset);
    this.checkRange(offset, len, 'write-zeroes');
    if (len === 0) return;
    const release = await this.inflight.claim(Math.floor(offset / this.cs), Math.ceil((offset + len) / this.cs));
    await this.lock.exclusive();
    try {
      const cs = this.cs;
      const [first, end] = this.wholeClusters(offset, len);
      const zeroBuf = Buffer.alloc(Math.min(cs, len));
      const writeZeros = async (from: number, to: number): Promise<void> => {
        for (let o = from; o < to; o += zeroBuf.length) await this.writeLocked(o, [zeroBuf.subarray(0, Math.min(zeroBuf.length, to - o))]);
      };
      if (first >= end) {
        await writeZeros(offset, offset + len);
      } else {
        await writeZeros(offset, first * cs);
        for (let c = first; c < end; c++) {
          if (!(await this.unmapCluster(c, unmap ? 'zero-unmap' : 'zero'))) await writeZeros(c * cs, Math.min((c + 1) * cs, this.size));
        }
        await writeZeros(Math.min(end * cs, this.size), offset + len);
      }
      await this.maybeWriteBack();
    } finally {
      this.lock.releaseExclusive();
      release();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (!this.readOnly) await this.flush();
    this.closed = true;
    this.io.release();
    await this.fh.close();
    await this.backing?.close();
  }

  // ---------------------------------------------------------------- translation

  private checkRange(offset: number, len: number, op: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(len) || offset < 0 || len < 0 || offset + len > this.size)
      throw new ImageError('OutOfBounds', `${op} [${offset}, +${len}) outside the ${this.size}-byte disk`, { path: this.path, offset, op });
  }

  private checkWritable(op: string, offset: number): void {
    if (this.readOnly) throw new ImageError('ReadOnly', `${op} on an image opened read-only`, { path: this.path, offset, op });
  }

  private corrupt(m: string, offset: number, op: string): ImageError {
    this.log?.warn({ path: this.path, offset, op }, `qcow2 corruption: ${m}`);
    return new ImageError('CorruptImage', m, { path: this.path, offset, op });
  }

  /** Guest clusters [first, end) wholly inside [offset, offset+len) (the final partial cluster counts if the range reaches the disk end). */
  private wholeClusters(offset: number, len: number): [number, number] {
    const cs = this.cs;
    const first = Math.ceil(offset / cs);
    const endByte = offset + len;
    const end = endByte === this.size ? Math.ceil(endByte / cs) : Math.floor(endByte / cs);
    return [first, Math.max(first, end)];
  }

  /** L2 table of guest cluster `gc`, writable (allocated, or copied if shared with a snapshot). */
  private async writableL2(gc: number): Promise<L2Table> {
    const l1i = Math.floor(gc / this.l2Entries);
    const hi = readHi(this.l1, l1i);
    const lo = readLo(this.l1, l1i);
    const old = entryOffset(hi, lo);
    if (old !== 0 && hi & COPIED_HI) return (await this.tr.l2For(gc, 'write'))!.table;
    const at = await this.alloc.cluster();
    const buf = Buffer.alloc(this.cs);
    if (old !== 0) {
      // Shared with a snapshot: copy it; the data clusters it points to keep their (shared) refcounts.
      const src = await this.l2.load(old);
      src.buf.copy(buf);
      this.meta.pendingDecrements.push({ offset: old, len: this.cs });
    }
    const t = this.l2.add(at, buf);
    this.l2Clusters.add(at / this.cs);
    const [nhi, nlo] = makeEntry(at, true);
    writeEntry(this.l1, l1i, nhi, nlo);
    this.meta.l1Dirty.add(l1i);
    return t;
  }

  // ---------------------------------------------------------------- writes

  /**
   * Decide where each guest cluster of a write goes (under the exclusive lock): in place, or into a new cluster
   * (refcount 1 in memory) whose L2 entry link() sets once the data is in the file. The caller has claimed the clusters.
   */
  private async planWrite(offset: number, bufs: readonly Uint8Array[]): Promise<WritePiece[]> {
    const cs = this.cs;
    const cur = new IovCursor(bufs);
    const out: WritePiece[] = [];
    let pos = offset;
    const end = offset + totalLength(bufs);
    while (pos < end) {
      const gc = Math.floor(pos / cs);
      const intra = pos - gc * cs;
      const n = Math.min(cs - intra, end - pos);
      const views = cur.take(n);
      const t = await this.writableL2(gc);
      const i = gc % this.l2Entries;
      const hi = readHi(t.buf, i);
      const lo = readLo(t.buf, i);
      const kind = classify(hi, lo, this.header.version);
      const old = entryOffset(hi, lo);
      pos += n;
      if (kind === 'normal' && hi & COPIED_HI) {
        this.tr.checkDataCluster(old, gc, 'write', true);
        out.push({ gc, cluster: old, intra, views, fill: 'none', hi, lo, link: null });
        continue;
      }
      // Copy-on-write into a new cluster (or, for a preallocated zero cluster we own, in place).
      let host: number;
      let free: HostRange | null = null;
      if (kind === 'zero-alloc' && hi & COPIED_HI) {
        this.tr.checkDataCluster(old, gc, 'write', true);
        host = old;
      } else {
        host = await this.alloc.cluster();
        if (kind === 'normal' || kind === 'zero-alloc') free = { offset: old, len: cs };
        else if (kind === 'compressed') free = this.tr.compressedRange(hi, lo);
      }
      let fill: WritePiece['fill'] = 'none';
      if (intra > 0 || intra + n < cs) {
        if (kind === 'normal') {
          this.tr.checkDataCluster(old, gc, 'write', false);
          fill = 'old';
        } else if (kind === 'compressed') fill = 'compressed';
        else if (kind === 'unallocated' && this.backing) fill = 'backing';
        else fill = 'zero';
      }
      const [nhi, nlo] = makeEntry(host, true);
      out.push({ gc, cluster: host, intra, views, fill, hi, lo, link: { hi: nhi, lo: nlo, free } });
    }
    return out;
  }

  /**
   * Put a planned write's data in the file (no lock needed: its clusters are claimed and not yet linked). The untouched
   * part of a new cluster with nothing to copy is zeroed by fallocate ZERO_RANGE, or by writing zeros where refused.
   */
  private async writeData(pieces: WritePiece[]): Promise<void> {
    const cs = this.cs;
    const zeroed = new Set<WritePiece>();
    if (this.zeroRange) {
      const zp = pieces.filter((p) => p.fill === 'zero');
      const ok = await Promise.all(zp.map((p) => this.io.fallocate(p.cluster, cs, true)));
      ok.forEach((done, k) => (done ? zeroed.add(zp[k]!) : (this.zeroRange = false)));
    }
    const writes: Array<{ host: number; views: Uint8Array[] }> = [];
    for (const p of pieces) {
      if (p.fill === 'none' || zeroed.has(p)) {
        writes.push({ host: p.cluster + p.intra, views: p.views });
        continue;
      }
      let src: Uint8Array;
      if (p.fill === 'zero') src = this.zeroCluster ??= new Uint8Array(cs);
      else {
        const b = Buffer.alloc(cs);
        const old = entryOffset(p.hi, p.lo);
        if (p.fill === 'old') await preadvFull(this.io, [b], old, this.path);
        else if (p.fill === 'compressed') (await this.tr.inflate(p.hi, p.lo, p.gc * cs)).copy(b);
        else await readBacking(this.backing, p.gc * cs, [b]);
        src = b;
      }
      const tail = p.intra + totalLength(p.views);
      const v: Uint8Array[] = [];
      if (p.intra > 0) v.push(src.subarray(0, p.intra));
      v.push(...p.views);
      if (tail < cs) v.push(src.subarray(tail));
      writes.push({ host: p.cluster, views: v });
    }
    // Merge host-contiguous pieces into single pwritev calls, then write them all.
    const merged: Array<{ host: number; views: Uint8Array[]; len: number }> = [];
    for (const w of writes) {
      const l = totalLength(w.views);
      const last = merged[merged.length - 1];
      if (last && last.host + last.len === w.host) {
        last.views.push(...w.views);
        last.len += l;
      } else merged.push({ host: w.host, views: [...w.views], len: l });
    }
    await Promise.all(merged.map((m) => pwritevFull(this.io, m.views, m.host, this.path)));
  }

  /** The data is in the file: point the (cached, written back on flush) L2 entries at it. Under the exclusive lock. */
  private async link(pieces: WritePiece[]): Promise<void> {
    this.meta.unsynced = true; // the next write-back syncs this data before any L2 table that points to it
    for (const p of pieces) {
      if (!p.link) continue;
      // Looked up again: the table may have been written back and evicted while the data was being written.
      const t = await this.writableL2(p.gc);
      writeEntry(t.buf, p.gc % this.l2Entries, p.link.hi, p.link.lo);
      t.dirty = true;
      if (p.link.free) this.meta.pendingDecrements.push(p.link.free);
    }
    this.tr.forgetInflated();
  }

  /** A whole write under the exclusive lock (write-zeroes' partial clusters). */
  private async writeLocked(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    const pieces = await this.planWrite(offset, bufs);
    await this.writeData(pieces);
    await this.link(pieces);
  }

  /**
   * Deallocate or zero whole guest cluster `gc` through its L2 entry. Returns false when the caller must write real
   * zeros instead (v2 images, or write-zeroes without a zero flag available).
   */
  private async unmapCluster(gc: number, mode: 'discard' | 'zero' | 'zero-unmap'): Promise<boolean> {
    const v3 = this.header.version >= 3;
    const hasBacking = this.backing !== null;
    if (mode === 'discard' && !v3 && hasBacking) return true; // cannot hide backing data in v2: leave the data
    if (mode !== 'discard' && !v3 && (hasBacking || mode === 'zero')) return false;
    const l1i = Math.floor(gc / this.l2Entries);
    const l1off = entryOffset(readHi(this.l1, l1i), readLo(this.l1, l1i));
    if (l1off === 0 && !hasBacking) return true; // already reads as zeros
    const t = await this.writableL2(gc);
    const i = gc % this.l2Entries;
    const hi = readHi(t.buf, i);
    const lo = readLo(t.buf, i);
    const kind = classify(hi, lo, this.header.version);
    const old = entryOffset(hi, lo);
    let nhi = 0;
    let nlo = hasBacking ? ZERO_LO : 0;
    let free: HostRange | null = null;
    if (mode === 'zero' && (kind === 'normal' || kind === 'zero-alloc') && hi & COPIED_HI) {
      [nhi, nlo] = makeEntry(old, true, true); // keep the allocation, read as zeros
    } else if (kind === 'normal' || kind === 'zero-alloc') free = { offset: old, len: this.cs };
    else if (kind === 'compressed') free = this.tr.compressedRange(hi, lo);
    if (mode !== 'discard' && v3) nlo |= ZERO_LO;
    if (nhi === hi && nlo === lo) return true;
    writeEntry(t.buf, i, nhi, nlo);
    t.dirty = true;
    if (free) this.meta.pendingDecrements.push(free);
    this.tr.forgetInflated();
    return true;
  }

  // ---------------------------------------------------------------- write-back

  private async maybeWriteBack(): Promise<void> {
    if (this.l2.size > this.l2.maxTables || this.meta.pendingDecrements.length > 4096) {
      await writeBack(this.meta);
      this.l2.evictClean();
    }
  }
}
