/**
 * ProbedRawGuard: a raw disk whose format was probed (no `format` in the configuration) must not let the guest
 * change what the next probe finds. Without it, a guest writes a qcow2 header naming a host file into sector 0, and
 * at the next start or reload the disk opens as qcow2 over that file. As QEMU does for probed raw images, a write
 * that would make the first bytes of the disk carry the qcow2 magic is refused (IOERR to the guest), counted, and
 * logged (rate-limited). Configuring `format raw` removes the restriction.
 *
 * The decision is made on a private copy of the bytes that reach offsets [0, 4): they are copied out of the
 * caller's buffers (guest memory) first, checked, and that very copy is what is written, so a second vCPU that
 * rewrites the buffer after the check cannot slip the magic through.
 */
import type { Disk, DiskFiles } from './disk.js';
import { QCOW2_MAGIC } from './qcow2/header.js';
import { IovCursor, totalLength } from './qcow2/io.js';
import { ImageError } from './qcow2/errors.js';
import { RateLimitedLog, type Logger } from '../util/log.js';

/** Bytes the format probe looks at (the qcow2 magic). */
const PROBE_BYTES = 4;
/** Bytes copied out when a write starts in the probed area: one sector. */
const SECTOR = 512;

export class ProbedRawGuard implements Disk {
  /** Writes refused because they would have made the disk probe as qcow2. */
  refusedFormatChanges = 0;
  private readonly limited: RateLimitedLog;

  constructor(
    private readonly inner: Disk,
    log: Logger,
  ) {
    this.limited = new RateLimitedLog(log);
  }

  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get path(): string {
    return this.inner.path;
  }
  get format(): string {
    return this.inner.format;
  }
  get engine(): string | undefined {
    return this.inner.engine;
  }
  get files(): DiskFiles | undefined {
    return this.inner.files;
  }

  read(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    return this.inner.read(offset, bufs);
  }

  async write(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    if (offset >= PROBE_BYTES || offset < 0) return this.inner.write(offset, bufs);
    // Private copy first (synchronously, before any await): everything below decides on and writes this copy.
    const len = totalLength(bufs);
    const headLen = Math.min(len, SECTOR - offset);
    const cur = new IovCursor(bufs);
    const head = new Uint8Array(headLen);
    let o = 0;
    for (const v of cur.take(headLen)) {
      head.set(v, o);
      o += v.length;
    }
    const rest = cur.take(len - headLen);
    // The probe's view after this write: the new bytes over the old ones they do not cover.
    const probe = new Uint8Array(PROBE_BYTES);
    if (offset > 0 || headLen < PROBE_BYTES) await this.inner.read(0, [probe]);
    probe.set(head.subarray(0, PROBE_BYTES - offset), offset);
    if (new DataView(probe.buffer).getUint32(0) === QCOW2_MAGIC) {
      this.refusedFormatChanges++;
      this.limited.warn(
        'probed-format-change',
        { image: this.inner.path, offset, refused: this.refusedFormatChanges },
        'write refused: it would make a disk whose format was probed as raw look like qcow2 (set format raw in the configuration to allow it)',
      );
      throw new ImageError('Refused', 'write to sector 0 would change the probed format of this raw disk to qcow2', { path: this.inner.path, offset, op: 'write' });
    }
    return this.inner.write(offset, [head, ...rest]);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }
  discard(offset: number, len: number): Promise<void> {
    return this.inner.discard(offset, len);
  }
  writeZeroes(offset: number, len: number, unmap: boolean): Promise<void> {
    return this.inner.writeZeroes(offset, len, unmap);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
