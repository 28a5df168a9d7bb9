/**
 * Refcounts: the refcount table and the refcount blocks of an image in memory, with their dirty sets. Increments and
 * decrements only change memory; writeback.ts decides when they reach the file. New refblocks and a grown refcount
 * table are placed at the end of the host file (HostSpace) and count themselves.
 */
import type { FileIo } from '../file-io.js';
import { ImageError } from './errors.js';
import { getRefcount, makeEntry, maxRefcount, readHi, readLo, reftableOffset, setRefcount, writeEntry } from './entries.js';
import { MAX_REFTABLE_BYTES } from './header.js';
import { preadvFull, pwritevFull } from './io.js';

/** The end of the host file as allocation sees it (cluster-aligned; may run ahead of the file's real size). */
export interface HostSpace {
  end: number;
}

/** A host byte range whose refcounts drop once nothing on disk points to it any more. */
export interface HostRange {
  offset: number;
  len: number;
}

export interface RefcountsInit {
  io: FileIo;
  path: string;
  clusterBits: number;
  refcountOrder: number;
  table: Buffer;
  tableOffset: number;
  space: HostSpace;
  /** Cluster indices never written with data (refblocks and tables are added as they are made). */
  fixedMeta: Set<number>;
  /** Ranges freed later, by write-back (an old refcount table after a second move). */
  freeLater: (r: HostRange) => void;
  corrupt: (m: string, offset: number, op: string) => ImageError;
}

export class Refcounts {
  table: Buffer;
  tableOffset: number;
  /** Set when the table moved (grew): write-back writes it whole, then switches the header. */
  moved: { oldOffset: number; oldClusters: number } | null = null;
  private readonly blocks = new Map<number, Buffer>();
  private readonly blockDirty = new Set<number>();
  private readonly tableDirty = new Set<number>();
  private readonly cs: number;
  private readonly bits: number;
  private readonly rbEntries: number;

  constructor(private readonly o: RefcountsInit) {
    this.cs = 2 ** o.clusterBits;
    this.bits = 2 ** o.refcountOrder;
    this.rbEntries = (this.cs * 8) / this.bits;
    this.table = o.table;
    this.tableOffset = o.tableOffset;
  }

  get dirty(): boolean {
    return this.blockDirty.size > 0 || this.tableDirty.size > 0 || this.moved !== null;
  }

  /** Follow a table rebuilt on disk (rebuild.ts): everything cached is dropped. */
  replaceTable(table: Buffer, offset: number): void {
    this.table = table;
    this.tableOffset = offset;
    this.blocks.clear();
    this.blockDirty.clear();
    this.tableDirty.clear();
  }

  private entries(): number {
    return this.table.length / 8;
  }

  private async block(rt: number, create: boolean): Promise<Buffer | null> {
    const hit = this.blocks.get(rt);
    if (hit) return hit;
    if (rt >= this.entries()) {
      if (!create) return null;
      await this.grow(rt);
      const made = this.blocks.get(rt); // growing may already have created this very block
      if (made) return made;
    }
    const off = reftableOffset(readHi(this.table, rt), readLo(this.table, rt));
    if (off === 0) {
      if (!create) return null;
      // New refblock placed at the end of the file; it is counted by itself or by an existing refblock.
      const at = this.o.space.end;
      this.o.space.end += this.cs;
      const rb = Buffer.alloc(this.cs);
      this.blocks.set(rt, rb);
      this.blockDirty.add(rt);
      const [hi, lo] = makeEntry(at, false);
      writeEntry(this.table, rt, hi, lo);
      this.tableDirty.add(rt);
      this.o.fixedMeta.add(at / this.cs);
      await this.adjust(at, 1);
      return rb;
    }
    const rb = Buffer.alloc(this.cs);
    await preadvFull(this.o.io, [rb], off, this.o.path);
    this.blocks.set(rt, rb);
    return rb;
  }

  /** Make sure the refblock covering host offset `host` exists (it may itself take the cluster at the end). */
  async ensureBlockFor(host: number): Promise<void> {
    await this.block(Math.floor(host / this.cs / this.rbEntries), true);
  }

  /** Grow the refcount table so that index `rt` exists: new table at the end of the file, header switched on write-back. */
  private async grow(rt: number): Promise<void> {
    const cs = this.cs;
    const oldEntries = this.entries();
    const wantEntries = Math.max(oldEntries * 2, rt + 1 + 64);
    const clusters = Math.ceil((wantEntries * 8) / cs);
    if (clusters * cs > MAX_REFTABLE_BYTES) throw new ImageError('CorruptImage', 'refcount table would exceed 8 MiB', { path: this.o.path, op: 'allocate' });
    const at = this.o.space.end;
    this.o.space.end += clusters * cs;
    const table = Buffer.alloc(clusters * cs);
    this.table.copy(table);
    if (!this.moved) this.moved = { oldOffset: this.tableOffset, oldClusters: oldEntries / (cs / 8) };
    else this.o.freeLater({ offset: this.tableOffset, len: this.table.length });
    this.table = table;
    this.tableOffset = at;
    for (let c = 0; c < clusters; c++) {
      this.o.fixedMeta.add(at / cs + c);
      await this.adjust(at + c * cs, 1);
    }
  }

  async adjust(host: number, delta: number): Promise<number> {
    const hc = Math.floor(host / this.cs);
    const rt = Math.floor(hc / this.rbEntries);
    const rb = await this.block(rt, true);
    const i = hc % this.rbEntries;
    const v = getRefcount(rb!, i, this.bits) + delta;
    if (v < 0) throw this.o.corrupt(`refcount of host cluster ${hc} would drop below 0`, host, 'refcount');
    if (v > maxRefcount(this.bits)) throw this.o.corrupt(`refcount of host cluster ${hc} overflows ${this.bits} bits`, host, 'refcount');
    setRefcount(rb!, i, this.bits, v);
    this.blockDirty.add(rt);
    return v;
  }

  async of(host: number): Promise<number> {
    const hc = Math.floor(host / this.cs);
    const rt = Math.floor(hc / this.rbEntries);
    const rb = await this.block(rt, false);
    return rb === null ? 0 : getRefcount(rb, hc % this.rbEntries, this.bits);
  }

  /** Write every dirty refblock in place (no sync). */
  async writeBlocks(): Promise<void> {
    const jobs: Promise<void>[] = [];
    for (const rt of this.blockDirty) {
      const off = reftableOffset(readHi(this.table, rt), readLo(this.table, rt));
      jobs.push(pwritevFull(this.o.io, [this.blocks.get(rt)!], off, this.o.path));
    }
    this.blockDirty.clear();
    await Promise.all(jobs);
  }

  /** Write the changed entries of a table that did not move (no sync). */
  async writeTableEntries(): Promise<void> {
    const jobs = [...this.tableDirty].map((rt) => pwritevFull(this.o.io, [this.table.subarray(rt * 8, rt * 8 + 8)], this.tableOffset + rt * 8, this.o.path));
    this.tableDirty.clear();
    await Promise.all(jobs);
  }

  /** Write a moved table whole (no sync); the caller switches the header. */
  async writeMovedTable(): Promise<void> {
    this.tableDirty.clear();
    await pwritevFull(this.o.io, [this.table], this.tableOffset, this.o.path);
  }
}
