/**
 * FileIo: positional vectored I/O on one open image file, through the io_uring engine (src/blk/uring-engine.ts)
 * or, where io_uring is unavailable or switched off, node:fs on the libuv thread pool. Both return the byte count
 * of one preadv/pwritev (possibly short); callers continue short transfers.
 */
import type { FileHandle } from 'node:fs/promises';
import { chooseEngine, FALLOC_PUNCH_HOLE, FALLOC_ZERO_RANGE, type DiskEngineName, type UringEngine } from './uring-engine.js';

export interface FileIo {
  readonly engine: DiskEngineName;
  /** Why this engine (logged when a disk opens). */
  readonly reason: string;
  readv(views: Uint8Array[] | readonly Uint8Array[], pos: number): Promise<number>;
  writev(views: Uint8Array[] | readonly Uint8Array[], pos: number): Promise<number>;
  datasync(): Promise<void>;
  /**
   * fallocate PUNCH_HOLE|KEEP_SIZE (zeroRange false) or ZERO_RANGE (true). Resolves false when the engine or the
   * file system cannot (the caller then writes zeroes or keeps the data).
   */
  fallocate(offset: number, len: number, zeroRange: boolean): Promise<boolean>;
  /** The io_uring engine and the file's fd, for the callback path (UringEngine.submitCb); null on node:fs. */
  readonly uring: UringEngine | null;
  readonly fd: number;
  /** Stop using the engine (the FileHandle is closed by its owner). */
  release(): void;
}

/** The FileIo for fh, on the engine VHOSTD_DISK_ENGINE selects. */
export function fileIo(fh: FileHandle): FileIo {
  const c = chooseEngine();
  return c.engine ? new UringFileIo(fh.fd, c.engine, c.reason) : new ThreadsFileIo(fh, c.reason);
}

class UringFileIo implements FileIo {
  readonly engine = 'io_uring';
  private released = false;
  constructor(
    readonly fd: number,
    private readonly eng: UringEngine,
    readonly reason: string,
  ) {}
  get uring(): UringEngine {
    return this.eng;
  }
  readv(views: readonly Uint8Array[], pos: number): Promise<number> {
    return this.eng.readv(this.fd, views, pos);
  }
  writev(views: readonly Uint8Array[], pos: number): Promise<number> {
    return this.eng.writev(this.fd, views, pos);
  }
  async datasync(): Promise<void> {
    await this.eng.fdatasync(this.fd);
  }
  async fallocate(offset: number, len: number, zeroRange: boolean): Promise<boolean> {
    try {
      await this.eng.fallocate(this.fd, zeroRange ? FALLOC_ZERO_RANGE : FALLOC_PUNCH_HOLE, offset, len);
      return true;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'EINVAL' || code === 'ENODEV') return false;
      throw err;
    }
  }
  release(): void {
    if (this.released) return;
    this.released = true;
    this.eng.release();
  }
}

class ThreadsFileIo implements FileIo {
  readonly engine = 'threads';
  readonly uring = null;
  constructor(
    private readonly fh: FileHandle,
    readonly reason: string,
  ) {}
  get fd(): number {
    return this.fh.fd;
  }
  async readv(views: readonly Uint8Array[], pos: number): Promise<number> {
    return (await this.fh.readv(views as Uint8Array[], pos)).bytesRead;
  }
  async writev(views: readonly Uint8Array[], pos: number): Promise<number> {
    return (await this.fh.writev(views as Uint8Array[], pos)).bytesWritten;
  }
  datasync(): Promise<void> {
    return this.fh.datasync();
  }
  async fallocate(): Promise<boolean> {
    return false; // node:fs has no fallocate
  }
  release(): void {}
}
