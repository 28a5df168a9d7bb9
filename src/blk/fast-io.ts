/**
 * FastIo: the allocation-free read/write path a Disk may offer next to its promise-based contract (src/blk/disk.ts).
 * The caller owns the request objects (preallocated, reused); submit() queues one, kick() hands the caller's batch
 * to the kernel, and request.ioDone() runs on completion with no promise or closure made per request. Listeners
 * given to onBatchEnd() run after each batch of completions. RawDisk on the io_uring engine offers it; other disks
 * (and the thread-pool engine) do not, and their callers use the Disk promises.
 */

/** One read or write, owned and reused by the caller. bufs[0..nbufs) are the data views (guest memory). */
export interface FastRequest {
  write: boolean;
  /** Byte offset on the disk, and total bytes of bufs[0..nbufs). */
  offset: number;
  len: number;
  readonly bufs: Uint8Array[];
  nbufs: number;
  /** Completion: null when every byte moved, else the error. */
  ioDone(err: Error | null): void;
}

export interface FastIo {
  submit(req: FastRequest): void;
  kick(): void;
  onBatchEnd(fn: () => void): void;
  removeBatchEnd(fn: () => void): void;
}

/** A disk that may offer FastIo (null: use the promises). */
export interface FastDisk {
  readonly fastIo: FastIo | null;
}

/**
 * The disk's own FastIo, or null. Only an own property counts: a wrapper made with Object.create(disk) that
 * overrides read/write (a policy guard, a test double) inherits fastIo, and using it would bypass the override.
 */
export function fastIoOf(disk: object): FastIo | null {
  return Object.hasOwn(disk, 'fastIo') ? ((disk as FastDisk).fastIo ?? null) : null;
}
