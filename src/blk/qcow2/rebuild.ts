/**
 * Refcount rebuild of a dirty image (lazy refcounts), as QEMU does on a read-write open: every refcount is computed
 * from the metadata (header, active L1, snapshot table, each snapshot's L1, every L2 table reachable from an L1 (once
 * per reference) and the data clusters each such L2 table maps (compressed: every host cluster its range touches),
 * then the refcount table and refcount blocks themselves). Missing refcount blocks (and a larger table, if needed)
 * are placed at the end of the file. Order: refblocks (+ new table) → fdatasync → header switch → fdatasync → dirty
 * bit cleared → fdatasync. Until the last step the dirty bit stays set, so a crash part-way leaves an image that is
 * rebuilt again. The work is bounded: snapshots by readSnapshotL1s, each distinct L2 table read once, long L1 walks
 * yield to the event loop.
 */
import type { FileHandle } from 'node:fs/promises';
import { setImmediate } from 'node:timers/promises';
import { ImageError } from './errors.js';
import { HDR_INCOMPAT_FEATURES, HDR_REFTABLE_OFFSET, INCOMPAT_DIRTY, MAX_REFTABLE_BYTES, type Qcow2Header } from './header.js';
import { classify, compressedLocation, entryOffset, makeEntry, maxRefcount, readHi, readLo, reftableOffset, setRefcount, writeEntry } from './entries.js';
import { preadvFull, pwritevFull } from './io.js';
import { readSnapshotL1s } from './snapshots.js';

/** Distinct L2 tables counted at open (each costs a map entry and one read): 512 TiB of mappings at 64 KiB clusters. */
export const MAX_L2_TABLES_AT_OPEN = 1 << 20;

export interface RebuildInput {
  fh: FileHandle;
  path: string;
  header: Qcow2Header;
  /** The active L1 table and the refcount table as read at open. */
  l1: Buffer;
  reftable: Buffer;
  reftableOffset: number;
  /** End of the file, rounded up to a cluster. */
  fileEnd: number;
}

export interface RebuildResult {
  /** The refcount table now on disk, and where. */
  table: Buffer;
  tableOffset: number;
  /** Host offsets of every refcount block. */
  blockOffsets: number[];
  /** End of the metadata written (new blocks and table at the end of the file). */
  fileEnd: number;
  newBlocks: number;
  moved: boolean;
}

export async function rebuildRefcounts(img: RebuildInput): Promise<RebuildResult> {
  const h = img.header;
  const cs = 2 ** h.clusterBits;
  const path = img.path;
  const refBits = 2 ** h.refcountOrder;
  const rbEntries = (cs * 8) / refBits;
  const l2Entries = cs / 8;
  const sync = async (): Promise<void> => {
    try {
      await img.fh.datasync();
    } catch (err) {
      throw new ImageError('Io', `fdatasync failed: ${(err as Error).message}`, { path, op: 'flush' }, { cause: err });
    }
  };
  const compressedRange = (hi: number, lo: number): { offset: number; len: number } => {
    const loc = compressedLocation(hi, lo, h.clusterBits);
    const start = Math.floor(loc.offset / cs) * cs;
    return { offset: start, len: loc.offset + loc.size - start };
  };
  const maxRc = maxRefcount(refBits);
  const origEnd = img.fileEnd;
  const fail = (m: string): never => {
    throw new ImageError('CorruptImage', `cannot rebuild the refcounts of a dirty image: ${m}`, { path, op: 'open' });
  };
  let counts = new Uint32Array(img.fileEnd / cs + 16);
  let used = 0; // clusters [0, used) may hold a nonzero count
  const bump = (c: number, delta: number): void => {
    if (c >= counts.length) {
      const grown = new Uint32Array(Math.max(c + 1, counts.length * 2));
      grown.set(counts);
      counts = grown;
    }
    const v = counts[c]! + delta;
    if (v > maxRc) fail(`host cluster ${c} is referenced ${v} times, more than ${refBits}-bit refcounts can hold`);
    counts[c] = v;
    if (v > 0 && c >= used) used = c + 1;
  };
  // Metadata references: must lie inside the file (a compressed range may run up to two clusters past its end).
  const inc = (off: number, bytes: number, what: string, times = 1): void => {
    if (off < 0 || off + bytes > img.fileEnd + 2 * cs) fail(`${what} (0x${off.toString(16)}) lies past the end of the file`);
    for (let c = Math.floor(off / cs); c * cs < off + bytes; c++) bump(c, times);
  };
  // Each L1 table adds one reference to each L2 table it names; each distinct L2 table is then read once and its
  // clusters counted once per reference, so L2 tables shared by many L1 tables cost one read.
  const l2Refs = new Map<number, number>();
  const collectL1 = async (l1: Buffer, entries: number, name: string): Promise<void> => {
    for (let i = 0; i < entries; i++) {
      if ((i & 0xffff) === 0xffff) await setImmediate();
      const off = entryOffset(readHi(l1, i), readLo(l1, i));
      if (off === 0) continue;
      if (off % cs !== 0 || off + cs > img.fileEnd) fail(`${name} entry ${i} points to an invalid L2 table 0x${off.toString(16)}`);
      const n = l2Refs.get(off);
      if (n === undefined && l2Refs.size >= MAX_L2_TABLES_AT_OPEN)
        throw new ImageError('Refused', `more than ${MAX_L2_TABLES_AT_OPEN} distinct L2 tables to count at open; repair the image with qemu-img check -r all`, { path, op: 'open' });
      l2Refs.set(off, (n ?? 0) + 1);
    }
  };
  const countL2s = async (): Promise<void> => {
    const l2 = Buffer.alloc(cs);
    for (const [off, times] of l2Refs) {
      inc(off, cs, `L2 table 0x${off.toString(16)}`, times);
      await preadvFull(img.fh, [l2], off, path);
      for (let j = 0; j < l2Entries; j++) {
        const hi = readHi(l2, j);
        const lo = readLo(l2, j);
        const kind = classify(hi, lo, h.version);
        if (kind === 'normal' || kind === 'zero-alloc') {
          const d = entryOffset(hi, lo);
          if (d % cs !== 0 || d + cs > img.fileEnd) fail(`L2 table 0x${off.toString(16)} entry ${j} points to an invalid cluster 0x${d.toString(16)}`);
          inc(d, cs, 'data cluster', times);
        } else if (kind === 'compressed') {
          const r = compressedRange(hi, lo);
          if (r.offset < cs || r.offset >= img.fileEnd) fail(`L2 table 0x${off.toString(16)} entry ${j}: compressed cluster outside the file`);
          inc(r.offset, r.len, 'compressed cluster', times);
        }
      }
    }
  };

  // 1. Everything the image's metadata references (snapshots bounded by readSnapshotL1s).
  inc(0, cs, 'header');
  if (h.l1Size > 0) inc(h.l1TableOffset, h.l1Size * 8, 'L1 table');
  await collectL1(img.l1, h.l1Size, 'L1');
  if (h.nbSnapshots > 0) {
    const { l1s, tableBytes } = await readSnapshotL1s(img.fh, h, img.fileEnd, path);
    const l1 = Buffer.alloc(l1s.reduce((m, s) => Math.max(m, s.l1Size * 8), 0));
    for (const s of l1s) {
      const bytes = s.l1Size * 8;
      inc(s.l1Offset, bytes, `snapshot ${s.index} L1 table`);
      await preadvFull(img.fh, [l1.subarray(0, bytes)], s.l1Offset, path);
      await collectL1(l1, s.l1Size, `snapshot ${s.index} L1`);
    }
    inc(h.snapshotsOffset, tableBytes, 'snapshot table');
  }
  await countL2s();

  // 2. The existing refcount structures: reused in place unless they collide with the metadata counted above.
  const oldTableClusters = img.reftable.length / cs;
  const blockAt = new Map<number, number>();
  for (let c = 0; c < oldTableClusters; c++) if ((counts[img.reftableOffset / cs + c] ?? 0) > 0) fail('the refcount table overlaps other metadata or data');
  for (let rt = 0; rt < img.reftable.length / 8; rt++) {
    const off = reftableOffset(readHi(img.reftable, rt), readLo(img.reftable, rt));
    if (off === 0) continue;
    if ((counts[off / cs] ?? 0) > 0) fail(`refcount block ${rt} overlaps other metadata or data`);
    blockAt.set(rt, off);
    bump(off / cs, 1);
  }
  for (let c = 0; c < oldTableClusters; c++) bump(img.reftableOffset / cs + c, 1);

  // 3. Refcount blocks for every range that has counts, and a table large enough; new ones at the end of the file.
  let end = Math.max(img.fileEnd, used * cs);
  let tableOff = img.reftableOffset;
  let tableEntries = img.reftable.length / 8;
  let moved = false;
  for (;;) {
    let changed = false;
    const needed = Math.ceil(used / rbEntries);
    for (let rt = 0; rt < needed; rt++) {
      if (blockAt.has(rt)) continue;
      let any = false;
      for (let c = rt * rbEntries; c < Math.min(used, (rt + 1) * rbEntries); c++) if (counts[c]) { any = true; break; }
      if (!any) continue;
      blockAt.set(rt, end);
      bump(end / cs, 1);
      end += cs;
      changed = true;
    }
    let wantEntries = needed;
    for (const rt of blockAt.keys()) wantEntries = Math.max(wantEntries, rt + 1);
    if (wantEntries > tableEntries) {
      const clusters = Math.ceil((Math.max(wantEntries + 64, tableEntries * 2) * 8) / cs);
      if (clusters * cs > MAX_REFTABLE_BYTES) fail('the refcount table would exceed 8 MiB');
      // The table in use (old, or one placed in an earlier round) is no longer referenced once the header moves.
      for (let c = 0; c < (tableEntries * 8) / cs; c++) bump(tableOff / cs + c, -1);
      tableOff = end;
      tableEntries = (clusters * cs) / 8;
      for (let c = 0; c < clusters; c++) bump(end / cs + c, 1);
      end += clusters * cs;
      moved = true;
      changed = true;
    }
    if (!changed) break;
  }

  // 4. Encode and write: blocks (+ new table) → sync → table switch → sync → dirty bit cleared → sync.
  const table = Buffer.alloc(tableEntries * 8);
  const blocks: Array<[number, Buffer]> = [];
  for (const [rt, off] of blockAt) {
    const rb = Buffer.alloc(cs);
    const base = rt * rbEntries;
    for (let i = 0; i < rbEntries && base + i < used; i++) {
      const v = counts[base + i]!;
      if (v) setRefcount(rb, i, refBits, v);
    }
    blocks.push([off, rb]);
    const [hi, lo] = makeEntry(off, false);
    writeEntry(table, rt, hi, lo);
  }
  await Promise.all(blocks.map(([off, rb]) => pwritevFull(img.fh, [rb], off, path)));
  if (moved) {
    await pwritevFull(img.fh, [table], tableOff, path);
    await sync();
    const hdr = Buffer.alloc(12);
    hdr.writeBigUInt64BE(BigInt(tableOff), 0);
    hdr.writeUInt32BE(table.length / cs, 8);
    await pwritevFull(img.fh, [hdr], HDR_REFTABLE_OFFSET, path);
  } else {
    await sync();
    await pwritevFull(img.fh, [table], tableOff, path);
  }
  await sync();
  const incompat = Buffer.alloc(8);
  incompat.writeBigUInt64BE(h.incompatibleFeatures & ~INCOMPAT_DIRTY, 0);
  await pwritevFull(img.fh, [incompat], HDR_INCOMPAT_FEATURES, path);
  await sync();

  return { table, tableOffset: tableOff, blockOffsets: [...blockAt.values()], fileEnd: end, newBlocks: blocks.filter(([off]) => off >= origEnd).length, moved };
}
