/**
 * Write-back of an image's dirty metadata, in the crash-safe order of docs/qcow2.md ("Crash safety"):
 *   data and refcount increments (refblocks, a moved refcount table + synced header switch) → fdatasync
 *   → L2 tables → fdatasync → L1 entries → fdatasync → refcount decrements of replaced clusters → fdatasync.
 * A crash at any point leaves at most leaked clusters: no pointer reaches the disk before what it points to, and no
 * refcount drops before the last pointer to its cluster is gone.
 */
import type { FileIo } from '../file-io.js';
import { ImageError } from './errors.js';
import { HDR_REFTABLE_OFFSET } from './header.js';
import { pwritevFull } from './io.js';
import type { L2Cache } from './l2-cache.js';
import type { HostRange, Refcounts } from './refcounts.js';

/** What write-back reads and clears; owned by the image. */
export interface MetadataState {
  io: FileIo;
  path: string;
  cs: number;
  refs: Refcounts;
  l2: L2Cache;
  l1: Buffer;
  l1Offset: number;
  l1Dirty: Set<number>;
  /** Data was written since the last fdatasync. */
  unsynced: boolean;
  pendingDecrements: HostRange[];
  log?: { warn(o: object, m: string): void };
}

async function sync(s: MetadataState): Promise<void> {
  try {
    await s.io.datasync();
  } catch (err) {
    throw new ImageError('Io', `fdatasync failed: ${(err as Error).message}`, { path: s.path, op: 'flush' }, { cause: err });
  }
}

/** Refblocks, then the refcount table (a moved one: written, synced, header switched, old table freed later). */
async function writeRefcounts(s: MetadataState): Promise<boolean> {
  const refs = s.refs;
  if (!refs.dirty) return false;
  await refs.writeBlocks();
  if (refs.moved) {
    await refs.writeMovedTable();
    await sync(s);
    const hdr = Buffer.alloc(12);
    hdr.writeBigUInt64BE(BigInt(refs.tableOffset), 0);
    hdr.writeUInt32BE(refs.table.length / s.cs, 8);
    await pwritevFull(s.io, [hdr], HDR_REFTABLE_OFFSET, s.path);
    s.pendingDecrements.push({ offset: refs.moved.oldOffset, len: refs.moved.oldClusters * s.cs });
    refs.moved = null;
  } else await refs.writeTableEntries();
  return true;
}

/** Write back all dirty metadata in crash-safe order and make it durable. The caller holds the image's exclusive lock. */
export async function writeBack(s: MetadataState): Promise<void> {
  // 1. Refcount increments (new clusters, new refblocks) together with the data written so far.
  const wroteRef = await writeRefcounts(s);
  if (wroteRef || s.unsynced) await sync(s);
  s.unsynced = false;
  // 2. L2 tables (new ones included) before the L1 entries that point to them.
  const dirtyL2 = s.l2.dirtyTables();
  if (dirtyL2.length > 0) {
    // Each table is written from a snapshot and marked clean first: an entry linked meanwhile dirties it again and is
    // written by the next write-back, never torn or lost by this one.
    const snaps = dirtyL2.map(([off, t]) => {
      t.dirty = false;
      return { off, t, buf: Buffer.from(t.buf) };
    });
    try {
      await Promise.all(snaps.map((x) => pwritevFull(s.io, [x.buf], x.off, s.path)));
    } catch (err) {
      for (const x of snaps) x.t.dirty = true;
      throw err;
    }
    await sync(s);
  }
  if (s.l1Dirty.size > 0) {
    await Promise.all([...s.l1Dirty].map((i) => pwritevFull(s.io, [s.l1.subarray(i * 8, i * 8 + 8)], s.l1Offset + i * 8, s.path)));
    s.l1Dirty.clear();
    await sync(s);
  }
  // 3. Decrements of replaced clusters only once nothing on disk points to them any more.
  if (s.pendingDecrements.length > 0) {
    const list = s.pendingDecrements;
    s.pendingDecrements = [];
    for (const d of list) {
      for (let c = Math.floor(d.offset / s.cs); c * s.cs < d.offset + d.len; c++) {
        if ((await s.refs.of(c * s.cs)) === 0) {
          s.log?.warn({ path: s.path, cluster: c }, 'qcow2: freeing a cluster whose refcount is already 0');
          continue;
        }
        await s.refs.adjust(c * s.cs, -1);
      }
    }
    await writeRefcounts(s);
    await sync(s);
  }
}
