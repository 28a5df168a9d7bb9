/**
 * The qcow2 snapshot table, read at open only when refcounts are rebuilt (a dirty image opened read-write): what
 * each snapshot's L1 table is. The table and what it points to are hostile and bounded here, so that opening a
 * crafted image costs a bounded amount of work: many snapshots naming one huge L1 table would otherwise make the
 * rebuild read and walk that table once per snapshot.
 *   - the table itself: at most MAX_SNAPSHOT_TABLE_BYTES, each entry's extra data at most MAX_SNAPSHOT_EXTRA_DATA
 *     (QEMU's limits), read in windows rather than one read per entry;
 *   - the L1 tables of all snapshots together: at most the file size (real snapshots have L1 tables of their own,
 *     in clusters of the file) and at most MAX_SNAPSHOT_L1_BYTES_AT_OPEN. Beyond that the open is refused.
 */
import type { FileHandle } from 'node:fs/promises';
import { ImageError } from './errors.js';
import { MAX_L1_BYTES, type Qcow2Header } from './header.js';
import { preadvFull } from './io.js';

/** QEMU: the snapshot table is at most 64 MiB, extra data at most 1 KiB per snapshot. */
export const MAX_SNAPSHOT_TABLE_BYTES = 64 * 1024 * 1024;
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;
/** Snapshot L1 bytes read and walked at open, all snapshots together: one largest L1 (a 1 TiB disk's is 16 KiB). */
export const MAX_SNAPSHOT_L1_BYTES_AT_OPEN = 32 * 1024 * 1024;

const ENTRY_HEADER = 40;
const WINDOW = 64 * 1024;

export interface SnapshotL1 {
  index: number;
  l1Offset: number;
  /** Entries. */
  l1Size: number;
}

/** The snapshots' L1 tables and the size of the snapshot table in bytes. Throws ImageError. */
export async function readSnapshotL1s(fh: FileHandle, h: Qcow2Header, fileEnd: number, path: string): Promise<{ l1s: SnapshotL1[]; tableBytes: number }> {
  const cs = 2 ** h.clusterBits;
  const corrupt = (m: string): never => {
    throw new ImageError('CorruptImage', m, { path, op: 'open' });
  };
  const refuse = (m: string): never => {
    throw new ImageError('Refused', m, { path, op: 'open' });
  };
  let win = Buffer.alloc(0);
  let winStart = 0;
  const entryHeader = async (pos: number): Promise<Buffer> => {
    if (pos + ENTRY_HEADER > fileEnd) corrupt(`snapshot table entry at 0x${pos.toString(16)} lies past the end of the file`);
    if (pos < winStart || pos + ENTRY_HEADER > winStart + win.length) {
      winStart = pos;
      win = Buffer.alloc(Math.min(WINDOW, fileEnd - pos));
      await preadvFull(fh, [win], pos, path);
    }
    return win.subarray(pos - winStart, pos - winStart + ENTRY_HEADER);
  };
  const budget = Math.min(fileEnd, MAX_SNAPSHOT_L1_BYTES_AT_OPEN);
  const l1s: SnapshotL1[] = [];
  let l1Bytes = 0;
  let pos = h.snapshotsOffset;
  for (let s = 0; s < h.nbSnapshots; s++) {
    const e = await entryHeader(pos);
    const l1Offset = Number(e.readBigUInt64BE(0));
    const l1Size = e.readUInt32BE(8);
    const extra = e.readUInt32BE(36);
    if (extra > MAX_SNAPSHOT_EXTRA_DATA) corrupt(`snapshot ${s} has ${extra} bytes of extra data (at most ${MAX_SNAPSHOT_EXTRA_DATA})`);
    const len = ENTRY_HEADER + extra + e.readUInt16BE(12) + e.readUInt16BE(14);
    pos += Math.ceil(len / 8) * 8;
    if (pos - h.snapshotsOffset > MAX_SNAPSHOT_TABLE_BYTES) refuse(`snapshot table larger than ${MAX_SNAPSHOT_TABLE_BYTES} bytes`);
    if (l1Size * 8 > MAX_L1_BYTES) corrupt(`snapshot ${s} has an oversized L1 table (${l1Size} entries)`);
    if (l1Size === 0) continue;
    if (l1Offset % cs !== 0 || l1Offset + l1Size * 8 > fileEnd) corrupt(`snapshot ${s} L1 table 0x${l1Offset.toString(16)} is invalid`);
    l1Bytes += l1Size * 8;
    if (l1Bytes > budget)
      refuse(
        `the L1 tables of the first ${s + 1} of ${h.nbSnapshots} snapshots total ${l1Bytes} bytes, more than ${budget === fileEnd ? `the file holds (${fileEnd} bytes; snapshots share L1 tables)` : `the ${budget} bytes read at open`}`,
      );
    l1s.push({ index: s, l1Offset, l1Size });
  }
  if (pos > fileEnd) corrupt('snapshot table runs past the end of the file');
  return { l1s, tableBytes: pos - h.snapshotsOffset };
}
