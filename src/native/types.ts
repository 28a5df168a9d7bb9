/**
 * The exact contract between TypeScript and the C addon in native/ (vhost_native.node).
 *
 * The addon does syscalls, plus one data-path primitive: copyBurst, a burst of checked memmoves between guest
 * mappings (docs/architecture.md, "The frame copy"). No parsing, no ring logic, no policy. Rules:
 * - Every fd it creates is O_NONBLOCK|O_CLOEXEC.
 * - EINTR is retried in C. EAGAIN/EWOULDBLOCK is a return value (-1), never an exception.
 * - Real failures throw an Error shaped like Node's system errors: { code: 'EBADF', errno: 9, syscall: 'recvmsg' }.
 * - Received fds belong to the caller the moment recvMsg returns; C never closes an fd it handed out,
 *   except on MSG_CTRUNC, where it closes what arrived and throws code 'ECTRUNC'.
 */

/** Readiness bits for watch() (values of uv_poll_event). */
export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;
export const POLL_DISCONNECT = 4;

/** copyBurst: doubles per op, and the longest op (native/copy.h). */
export const COPY_OP_FIELDS = 5;
export const COPY_MAX_LEN = 256 * 1024;

/** Most fds one vhost-user message may carry (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_FDS_PER_MSG = 8;

/** fstat(), fcntl(F_GETFL) and readlink(/proc/self/fd/N) of one fd. */
export interface FdStat {
  /** st_mode: type bits (S_IFMT) and permissions. */
  mode: number;
  /** st_size in bytes. */
  size: number;
  /** File status flags: access mode (O_ACCMODE bits) and O_NONBLOCK among others. */
  flags: number;
  /** The /proc/self/fd link, e.g. "anon_inode:[eventfd]", "pipe:[123]", "/memfd:guest (deleted)"; "" if unknown. */
  link: string;
}

/** An fd readiness watcher on Node's event loop (uv_poll_t). */
export interface FdWatcher {
  /** (Re)start watching for `events` (POLL_* bits). */
  start(events: number): void;
  /** Stop watching; start() may be called again. */
  stop(): void;
  /** Stop and release the handle. Does not close the fd. Idempotent. */
  close(): void;
}

export interface NativeBinding {
  /** socket(AF_UNIX, SOCK_STREAM) + bind + listen. Unlinks nothing: the caller removes stale paths. */
  listenUnix(path: string, backlog: number): number;
  /** accept4(); returns the new fd, or -1 on EAGAIN. */
  acceptUnix(listenFd: number): number;
  /** socket + connect (blocking connect on a unix socket is immediate or ECONNREFUSED/ENOENT); fd is non-blocking. */
  connectUnix(path: string): number;
  /**
   * recvmsg() into buf[off, off+len). Ancillary SCM_RIGHTS fds (at most 8) are written to fdsOut[1..n] and
   * fdsOut[0] = n (0 when none). Returns bytes read, 0 on orderly EOF, -1 on EAGAIN.
   * MSG_CTRUNC: closes the fds that arrived and throws code 'ECTRUNC'.
   */
  recvMsg(fd: number, buf: Uint8Array, off: number, len: number, fdsOut: Int32Array): number;
  /** sendmsg() of buf[off, off+len) with fds (may be empty) as SCM_RIGHTS. Returns bytes sent or -1 on EAGAIN. */
  sendMsg(fd: number, buf: Uint8Array, off: number, len: number, fds: ArrayLike<number>): number;
  /**
   * mmap(MAP_SHARED) of fd bytes [offset, offset+size), size <= 4 GiB. The caller checks the fd's size first
   * (fdStat): bytes past the end of the file raise SIGBUS. C aligns the offset down to the page size internally; the returned external ArrayBuffer covers exactly the requested bytes. If never munmap()ed, a
   * finalizer unmaps it when collected.
   */
  mmapShared(fd: number, size: number, offset: number, writable: boolean): ArrayBuffer;
  /** munmap() and detach the ArrayBuffer: every view on it then has length 0. Idempotent. */
  munmap(ab: ArrayBuffer): void;
  /** memfd_create(name, MFD_CLOEXEC) + ftruncate(size). */
  memfdCreate(name: string, size: number): number;
  /** eventfd(initval, EFD_NONBLOCK|EFD_CLOEXEC). */
  eventfd(initval: number): number;
  /** read() 8 bytes: the counter value (as a number, < 2^53), or -1 when nothing is there (EAGAIN; checked with a
   * zero-timeout poll first, so a blocking fd never blocks). A short read (not an eventfd) throws EINVAL. */
  eventfdRead(fd: number): number;
  /** write() n (u64) to the eventfd. A full counter (EAGAIN, or not writable by a zero-timeout poll on a blocking
   * fd) is ignored: the reader is already woken. */
  eventfdWrite(fd: number, n: number): void;
  /** Watch fd for POLL_* events; cb(status, events) runs on the Node event loop. status < 0 is a libuv error. */
  watch(fd: number, events: number, cb: (status: number, events: number) => void): FdWatcher;
  /** close(); EBADF throws. */
  close(fd: number): void;
  /**
   * SIGBUS faults on mmapShared() memory since the process started. A front-end can truncate a region's file after
   * it was checked (or a sparse file's tmpfs can be full): the addon then maps a private zero page over the faulting
   * page instead of letting the daemon die, and counts the fault here and on the mapping (mappingFaults).
   */
  guestFaults(): number;
  /** SIGBUS faults counted on this mmapShared() ArrayBuffer (0 once unmapped). */
  mappingFaults(ab: ArrayBuffer): number;
  /**
   * The copyBurst handle of an mmapShared() ArrayBuffer: an integer >= 0 naming this mapping (slot and generation),
   * or -1 once it is unmapped. munmap makes every handle of the mapping stale for good; a later mapping never gets
   * an old handle back. Handles are per thread: copyBurst on another thread refuses them.
   */
  mappingHandle(ab: ArrayBuffer): number;
  /**
   * Run n copies, COPY_OP_FIELDS doubles each in `ops`: (dst handle, dst offset, src handle, src offset, length),
   * offsets relative to the start of the mappings' ArrayBuffers. Each op is checked (both handles live, current
   * and of this thread; offsets and length integers, 1 <= length <= COPY_MAX_LEN, both ranges inside their
   * mappings) before one memmove; an op that fails is skipped. Returns the number of ops skipped.
   * Throws only for a bad call (ops not a Float64Array, n * COPY_OP_FIELDS past its end).
   */
  copyBurst(ops: Float64Array, n: number): number;
  /** fstat(fd).st_size, for checks on received fds. */
  fdSize(fd: number): number;
  /** What a received fd is, for the checks in src/vhost-user/fd-checks.ts. Throws EBADF on a closed fd. */
  fdStat(fd: number): FdStat;
  /** Full memory barrier (__atomic_thread_fence(__ATOMIC_SEQ_CST)); used only by benchmarks for comparison. */
  fence(): void;
  /**
   * Create, or attach to, the TAP interface `name` (open /dev/net/tun + TUNSETIFF with IFF_TAP|IFF_NO_PI: no
   * packet-info and no virtio-net header, so one read()/write() is one whole Ethernet frame). `name` is at most
   * 15 bytes; "" lets the kernel pick tapN. When mtu > 0, also sets the interface MTU (SIOCSIFMTU) and brings it
   * up (IFF_UP via SIOCSIFFLAGS), each only if not so already, in the caller's network namespace. Returns the fd
   * (O_NONBLOCK|O_CLOEXEC) and the interface's actual name. The interface lives as long as the fd unless it was made persistent beforehand.
   */
  tapOpen(name: string, mtu: number): { fd: number; name: string };
  /** read() into buf[off, off+len) on any fd; bytes read, 0 on EOF, -1 on EAGAIN. On a tap: one frame. */
  read(fd: number, buf: Uint8Array, off: number, len: number): number;
  /** write() of buf[off, off+len) on any fd; bytes written, or -1 on EAGAIN. On a tap: one frame. */
  write(fd: number, buf: Uint8Array, off: number, len: number): number;
}

/** A ring from uringSetup(): opaque to TypeScript apart from its sizes. */
export interface UringRing {
  /** SQ entries the kernel gave (the request was clamped to what it allows). */
  readonly sqEntries: number;
  /** CQ entries (twice the SQ). */
  readonly cqEntries: number;
}

/** Doubles per request in uringSubmit()'s table: [op, tag, fd, offset, firstView | length, viewCount | mode]. */
export const URING_OP_STRIDE = 6;
export const URING_OP_READV = 0;
export const URING_OP_WRITEV = 1;
export const URING_OP_FDATASYNC = 2;
export const URING_OP_FALLOCATE = 3;

/** io_uring (native/uring.c): SQPOLL off, one io_uring_enter per burst, completions in batches. */
export interface NativeUring {
  /**
   * io_uring_setup(entries, 1..4096; CQ twice that), mapped; every completion signals `eventfd` (non-blocking;
   * -1: none). Completions may already be there when uringSubmit returns: reap (with drain) after submitting.
   * Throws (e.g. ENOSYS, EPERM, ENOTSUP) where the kernel or a container forbids it: the caller falls back.
   */
  uringSetup(entries: number, eventfd: number): UringRing;
  /**
   * Submit requests ops[0..count) (URING_OP_STRIDE doubles each; views[firstView..+viewCount) are the iovecs of a
   * readv/writev) with one io_uring_enter. Returns how many the kernel took; fewer when the SQ, the iovec scratch
   * or the free CQ entries run out (submit the rest after reaping). The views must stay referenced until the
   * request's completion is reaped. Every field is checked in C; a bad request throws RangeError, nothing submitted.
   */
  uringSubmit(ring: UringRing, ops: Float64Array, count: number, views: readonly Uint8Array[]): number;
  /**
   * Copy up to max completions into out as (tag, result) pairs; result is bytes, 0, or -errno. Returns how many.
   * drain: first read the eventfd, consuming the wake-ups of the completions this call returns.
   */
  uringReap(ring: UringRing, out: Float64Array, max: number, drain: boolean): number;
  /** Wait for requests in flight, unmap and close. Idempotent. */
  uringClose(ring: UringRing): void;
}
