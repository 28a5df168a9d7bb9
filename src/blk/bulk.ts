/**
 * DISCARD / WRITE_ZEROES in bounded pieces: up to max_discard_seg segments of max_discard_sectors each (16 x 2 GiB)
 * is a lot of metadata work (qcow2 walks every cluster, mostly without real I/O, so nothing would yield).
 */
import { setImmediate } from 'node:timers/promises';
import type { Disk } from './disk.js';
import type { BlkSegment } from './request.js';

/** Discard / write-zeroes work per event-loop turn (bytes; a multiple of the largest qcow2 cluster, 2 MiB). */
export const BLK_BULK_CHUNK = 8 * 1024 * 1024;

/**
 * One device's discard and write-zeroes requests. The segments are cut at BLK_BULK_CHUNK-aligned offsets
 * (cluster-aligned for every qcow2 cluster size, so the result is the same as one call) and the device yields to
 * the event loop before every chunk; requests run one after another (tail), so one turn does at most one chunk per
 * device however many such requests are queued.
 */
export class BulkQueue {
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly disk: Disk) {}

  /** Queue one request behind the others; settles when its last chunk is done. */
  run(kind: 'discard' | 'write-zeroes', segments: readonly BlkSegment[]): Promise<void> {
    const run = this.tail.then(() => this.chunks(kind, segments));
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async chunks(kind: 'discard' | 'write-zeroes', segments: readonly BlkSegment[]): Promise<void> {
    const disk = this.disk;
    for (const s of segments) {
      const end = s.offset + s.len;
      let o = s.offset;
      do {
        await setImmediate(); // let timers, sockets and other devices run before the next chunk
        const next = Math.min(end, (Math.floor(o / BLK_BULK_CHUNK) + 1) * BLK_BULK_CHUNK);
        if (kind === 'discard') await disk.discard(o, next - o);
        else await disk.writeZeroes(o, next - o, s.unmap);
        o = next;
      } while (o < end);
    }
  }
}
