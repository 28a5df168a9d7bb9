/**
 * Disk: what the virtio-blk device reads and writes (raw files and qcow2 images implement it). I/O goes straight
 * between the image file and guest memory: callers pass views of guest buffers (scatter-gather), implementations
 * hand them to preadv/pwritev (io_uring, or node:fs readv/writev: src/blk/file-io.ts) without an intermediate copy. Requests may run concurrently;
 * an implementation serialises what must be serialised (e.g. qcow2 metadata updates).
 */
export interface Disk {
  /** Capacity in bytes (a multiple of 512). */
  readonly size: number;
  /** Opened read-only (the device then offers VIRTIO_BLK_F_RO and fails writes with IOERR). */
  readonly readOnly: boolean;
  /** Path of the image, for logs and status. */
  readonly path: string;
  /** Image format name for logs and status ("raw", "qcow2"). */
  readonly format: string;
  /** The I/O engine ("io_uring" or "threads", src/blk/uring-engine.ts), for logs and status; absent on test doubles. */
  readonly engine?: string;
  /**
   * The files this disk reads, by identity: set by the disks openDisk returns, absent on test doubles. The daemon
   * uses it to refuse a configuration in which one disk's image is a backing file of another disk.
   */
  readonly files?: DiskFiles;
  /** Read bytes [offset, offset + total length of bufs) into bufs, in order. Reads past the end are an error. */
  read(offset: number, bufs: readonly Uint8Array[]): Promise<void>;
  /** Write bufs, in order, at offset. */
  write(offset: number, bufs: readonly Uint8Array[]): Promise<void>;
  /** Make every completed write durable (data and metadata, in the order crash safety needs). */
  flush(): Promise<void>;
  /** Deallocate [offset, offset+len) if the format can; reads of it then return zeroes or old data (discard). */
  discard(offset: number, len: number): Promise<void>;
  /** Make [offset, offset+len) read as zeroes; `unmap` allows deallocation. */
  writeZeroes(offset: number, len: number, unmap: boolean): Promise<void>;
  /** Flush and close. */
  close(): Promise<void>;
}

/** Files by identity ("dev:ino", see fileId), whatever path they were opened by. */
export interface DiskFiles {
  /** The disk's own image. */
  readonly image: string;
  /** The image and every backing file below it. */
  readonly chain: ReadonlySet<string>;
}

/** "dev:ino" of a stat result: the identity of a file across paths, symlinks and hard links. */
export function fileId(st: { dev: number; ino: number }): string {
  return `${st.dev}:${st.ino}`;
}
