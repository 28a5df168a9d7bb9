/**
 * RawDisk: a raw image (a regular file or a block device) behind the Disk contract. Reads and writes go straight
 * between the file and the caller's views (guest memory) with preadv/pwritev on the disk I/O engine (io_uring, or
 * the libuv thread pool: src/blk/file-io.ts), so requests run concurrently; short transfers are continued until
 * done. FLUSH is fdatasync. With io_uring, discard punches a hole (fallocate PUNCH_HOLE) and write-zeroes uses
 * fallocate (PUNCH_HOLE when unmapping is allowed, ZERO_RANGE otherwise); where fallocate is not available (the
 * thread-pool engine, or a file system without it) discard keeps the old data (allowed: reads of a discarded range
 * return old data or zeroes) and write-zeroes writes zeroes.
 *
 * On io_uring the disk also offers FastIo (src/blk/fast-io.ts): the virtio-blk device's reads and writes go to the
 * engine's callback path with the device's own request objects, no promise per request. A short transfer there is
 * continued on the promise path (rare: end of file, or a signal).
 */
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { fileId, type Disk, type DiskFiles } from './disk.js';
import { fileIo, type FileIo } from './file-io.js';
import { openImageFile } from './image-file.js';
import type { FastIo, FastRequest } from './fast-io.js';
import { uringError, type UringEngine } from './uring-engine.js';

/** Zero buffer for write-zeroes, written repeatedly (never modified). */
const ZERO_CHUNK = 1 << 20;
let zeroes: Uint8Array | null = null;

export class RawDisk implements Disk {
  readonly format = 'raw';
  private closed = false;
  private readonly io: FileIo;
  /** The callback path (io_uring only). */
  readonly fastIo: RawFastIo | null;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly size: number,
    readonly readOnly: boolean,
    readonly files: DiskFiles,
  ) {
    this.io = fileIo(fh);
    this.fastIo = this.io.uring !== null ? new RawFastIo(this, this.io.uring, this.io.fd) : null;
  }

  /** The disk I/O engine moving this disk's bytes. */
  get engine(): string {
    return this.io.engine;
  }

  /**
   * Open a raw image; the capacity is the file size rounded down to 512 bytes. The file is checked (regular file or
   * block device) on an O_PATH handle before it is opened, so a FIFO or character device is never opened.
   */
  static async open(path: string, opts: { readOnly: boolean }): Promise<RawDisk> {
    const { fh, stat: st } = await openImageFile(path, { readOnly: opts.readOnly, allowBlockDevice: true });
    try {
      let bytes: number;
      if (st.isFile()) bytes = st.size;
      else if (st.isBlockDevice()) bytes = blockDeviceSize(st);
      else throw new Error(`${path} is neither a regular file nor a block device`);
      const id = fileId(st);
      return new RawDisk(fh, path, bytes - (bytes % 512), opts.readOnly, { image: id, chain: new Set([id]) });
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async read(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    await this.transfer(offset, bufs, false);
  }

  async write(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    if (this.readOnly) throw new Error(`${this.path} is read-only`);
    await this.transfer(offset, bufs, true);
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await this.io.datasync();
  }

  async discard(offset: number, len: number): Promise<void> {
    this.checkRange(offset, len);
    if (this.readOnly || len === 0) return;
    await this.io.fallocate(offset, len, false);
  }

  async writeZeroes(offset: number, len: number, unmap = false): Promise<void> {
    if (this.readOnly) throw new Error(`${this.path} is read-only`);
    this.checkRange(offset, len);
    if (len === 0 || (await this.io.fallocate(offset, len, !unmap))) return;
    zeroes ??= new Uint8Array(ZERO_CHUNK);
    while (len > 0) {
      const n = Math.min(len, ZERO_CHUNK);
      await this.transfer(offset, [zeroes.subarray(0, n)], true);
      offset += n;
      len -= n;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.flush();
    } finally {
      this.fastIo?.release();
      this.io.release();
      await this.fh.close();
    }
  }

  /** The rest of a fast request after a short transfer of n > 0 bytes, on the promise path. */
  continueShort(req: FastRequest, n: number): Promise<void> {
    return this.transfer(req.offset + n, skip(req.bufs.slice(0, req.nbufs), n), req.write);
  }

  private checkRange(offset: number, len: number): void {
    if (offset < 0 || len < 0 || offset + len > this.size) throw new Error(`range [${offset}, ${offset + len}) past the end of ${this.path} (${this.size} bytes)`);
  }

  /** preadv/pwritev until every byte moved; a read that hits end of file is an error. */
  private async transfer(offset: number, bufs: readonly Uint8Array[], write: boolean): Promise<void> {
    let total = 0;
    for (const b of bufs) total += b.length;
    this.checkRange(offset, total);
    let list = bufs as Uint8Array[];
    let pos = offset;
    for (;;) {
      const n = write ? await this.io.writev(list, pos) : await this.io.readv(list, pos);
      total -= n;
      if (total === 0) return;
      if (n === 0) throw new Error(`${write ? 'write' : 'read'} at ${pos} of ${this.path} made no progress (file shrunk?)`);
      pos += n;
      list = skip(list, n);
    }
  }
}

/** FastIo on the shared io_uring engine: one long-lived completion callback, the request object as its context. */
class RawFastIo implements FastIo {
  private readonly listeners: (() => void)[] = [];
  private readonly done = (ctx: object, res: number): void => {
    const req = ctx as FastRequest;
    if (res === req.len) req.ioDone(null);
    else if (res < 0) req.ioDone(uringError(req.write ? 'writev' : 'readv', res));
    else if (res === 0) req.ioDone(new Error(`${req.write ? 'write' : 'read'} at ${req.offset} of ${this.disk.path} made no progress (file shrunk?)`));
    else this.continueShort(req, res);
  };

  /** Apart from done(): closures capturing req there would allocate their context on every completion. */
  private continueShort(req: FastRequest, n: number): void {
    this.disk.continueShort(req, n).then(
      () => this.outside(req, null),
      (err: unknown) => this.outside(req, err as Error),
    );
  }

  /** A completion outside an engine batch (a continued short transfer, a refused submit): its own batch end. */
  private outside(req: FastRequest, err: Error | null): void {
    req.ioDone(err);
    for (const fn of this.listeners) fn();
  }

  constructor(
    private readonly disk: RawDisk,
    private readonly eng: UringEngine,
    private readonly fd: number,
  ) {}

  /** The caller checked the range (the virtio-blk parser does) and that the disk is writable for a write. */
  submit(req: FastRequest): void {
    if (req.offset < 0 || req.offset + req.len > this.disk.size || (req.write && this.disk.readOnly)) {
      this.outside(req, new Error(`bad fast request at ${req.offset} (${req.len} bytes) on ${this.disk.path}`));
      return;
    }
    this.eng.submitCb(req.write, this.fd, req.bufs, req.nbufs, req.offset, this.done, req);
  }

  kick(): void {
    this.eng.kick();
  }

  onBatchEnd(fn: () => void): void {
    this.listeners.push(fn);
    this.eng.onBatchEnd(fn);
  }

  removeBatchEnd(fn: () => void): void {
    const i = this.listeners.indexOf(fn);
    if (i >= 0) this.listeners.splice(i, 1);
    this.eng.removeBatchEnd(fn);
  }

  /** The disk closed: its listeners leave the shared engine. */
  release(): void {
    for (const fn of this.listeners) this.eng.removeBatchEnd(fn);
    this.listeners.length = 0;
  }
}

/** The views after dropping the first n bytes (rare path: short transfers). */
function skip(list: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of list) {
    if (n >= b.length) {
      n -= b.length;
      continue;
    }
    out.push(n > 0 ? b.subarray(n) : b);
    n = 0;
  }
  return out;
}

/** Size of a block device from sysfs (Node cannot ioctl BLKGETSIZE64). */
function blockDeviceSize(st: fs.Stats): number {
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | (Math.floor(st.rdev / 4096) & 0xfff00);
  const sectors = Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim());
  return sectors * 512;
}
