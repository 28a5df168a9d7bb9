/**
 * UringEngine: disk I/O through one io_uring per process (native/uring.c), instead of node:fs on the libuv thread
 * pool. Requests issued in the same tick go to the kernel as one burst (one io_uring_enter, submitted from a
 * microtask); completions are reaped in batches right after the submit (those the kernel finished inline) and when
 * the ring's eventfd, watched on the event loop, says more arrived (docs/architecture.md "Disk I/O"). Each reap
 * drains the eventfd first, so completions reaped right after a submit do not wake the loop again.
 *
 * Request state lives in preallocated slots (typed arrays and slot-indexed arrays); a slot's tag is its index. The
 * promise calls (readv, writev, ...) serve the Disk contract; submitCb() is the allocation-free path for the
 * virtio-blk hot path: a completion calls a long-lived callback with the caller's own request object, the burst
 * goes to the kernel when the caller says its batch is done (kick()), and the listeners given to onBatchEnd() run
 * after each batch of completions (the device publishes its used entries there, once per batch). Policy is here, not in C: a result of
 * -EINTR or -EAGAIN is resubmitted (a few times), any other negative result rejects with a Node-style error
 * ({ code, errno, syscall }); short transfers are returned as they are and the caller continues them.
 * A slot holds its views until the completion is reaped: the kernel writes into them (guest memory) until then.
 */
import { getSystemErrorName } from 'node:util';
import { constants as osConstants } from 'node:os';
import { loadNative } from '../native/binding.js';
import {
  POLL_READABLE,
  URING_OP_FALLOCATE,
  URING_OP_FDATASYNC,
  URING_OP_READV,
  URING_OP_STRIDE,
  URING_OP_WRITEV,
  type FdWatcher,
  type NativeBinding,
  type NativeUring,
  type UringRing,
} from '../native/types.js';

/** Which engine moves a disk's bytes: io_uring in the addon, or node:fs on libuv's thread pool. */
export type DiskEngineName = 'io_uring' | 'threads';

/** The environment switch: auto (io_uring where the kernel allows it), io_uring (required), threads (forced). */
export const DISK_ENGINE_ENV = 'VHOSTD_DISK_ENGINE';

/** SQ entries asked for (the CQ gets twice that). Requests beyond it wait in a backlog for a free slot. */
const RING_ENTRIES = 256;
/** Linux IOV_MAX: a longer view list is submitted in parts (a short transfer the caller continues). */
export const IOV_MAX = 1024;
/** Resubmissions of a request that came back -EINTR/-EAGAIN before it fails. */
const MAX_RETRIES = 4;
const EINTR = osConstants.errno.EINTR;
const EAGAIN = osConstants.errno.EAGAIN;

const OP_NAMES = ['readv', 'writev', 'fdatasync', 'fallocate'];

type Resolve = (n: number) => void;
/** submitCb's completion: the request object it was given and the result (bytes, or a negative errno). */
export type UringCallback = (ctx: object, res: number) => void;
type Reject = (err: Error) => void;

/** fallocate(2) modes the addon accepts. */
export const FALLOC_PUNCH_HOLE = 0x02 | 0x01; // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
export const FALLOC_ZERO_RANGE = 0x10; // FALLOC_FL_ZERO_RANGE

interface Waiting {
  op: number;
  fd: number;
  offset: number;
  views: readonly Uint8Array[] | null;
  a: number;
  b: number;
  resolve: Resolve | null;
  reject: Reject | null;
  cb: UringCallback | null;
  ctx: object | null;
}

export class UringEngine {
  readonly name: DiskEngineName = 'io_uring';
  private readonly slots: number;
  /** Each slot's request record (URING_OP_STRIDE doubles, the layout uringSubmit takes). */
  private readonly rec: Float64Array;
  private readonly slotViews: (readonly Uint8Array[] | null)[];
  private readonly resolves: (Resolve | null)[];
  private readonly rejects: (Reject | null)[];
  /** submitCb slots: the callback and its request object (null on promise slots). */
  private readonly cbs: (UringCallback | null)[];
  private readonly ctxs: (object | null)[];
  /** Views used of slotViews[s] (submitCb passes a reused array longer than the request). */
  private readonly viewCounts: Int32Array;
  private readonly batchEnd: (() => void)[] = [];
  private readonly retries: Uint8Array;
  private readonly freeSlots: Int32Array;
  private freeTop: number;
  /** Slots waiting to be submitted, in order (a ring of slot indices). */
  private readonly queue: Int32Array;
  private qHead = 0;
  private qLen = 0;
  /** The burst handed to uringSubmit, rebuilt from the queue on each flush (reused). */
  private readonly ops: Float64Array;
  /** The views of a burst, indexed by its records. Never truncated (length = 0 would drop the backing store, a new
   * one per burst); entries are cleared after each submit. */
  private readonly viewTable: (Uint8Array | null)[] = [];
  private readonly cqe: Float64Array;
  /** Requests that found no free slot (beyond RING_ENTRIES in flight). */
  private readonly backlog: Waiting[] = [];
  private flushQueued = false;
  /** The last submit took nothing (the kernel said EAGAIN/EBUSY): wait for a completion before trying again. */
  private stalled = false;
  private readonly flushFn = (): void => this.flush();
  private inflight = 0;
  private refs = 0;
  private closed = false;
  private readonly watcher: FdWatcher;
  /** Requests submitted, completions reaped, io_uring_enter calls, eventfd wakeups: for tests and `vhostctl status`. */
  readonly stats = { submitted: 0, completed: 0, bursts: 0, retried: 0, wakeups: 0 };

  private constructor(
    private readonly native: NativeBinding & NativeUring,
    private readonly ring: UringRing,
    private readonly efd: number,
  ) {
    this.slots = Math.min(ring.sqEntries, ring.cqEntries);
    this.rec = new Float64Array(this.slots * URING_OP_STRIDE);
    this.ops = new Float64Array(this.slots * URING_OP_STRIDE);
    this.slotViews = new Array<readonly Uint8Array[] | null>(this.slots).fill(null);
    this.resolves = new Array<Resolve | null>(this.slots).fill(null);
    this.rejects = new Array<Reject | null>(this.slots).fill(null);
    this.cbs = new Array<UringCallback | null>(this.slots).fill(null);
    this.ctxs = new Array<object | null>(this.slots).fill(null);
    this.viewCounts = new Int32Array(this.slots);
    this.retries = new Uint8Array(this.slots);
    this.freeSlots = new Int32Array(this.slots);
    for (let i = 0; i < this.slots; i++) this.freeSlots[i] = this.slots - 1 - i;
    this.freeTop = this.slots;
    this.queue = new Int32Array(this.slots);
    this.cqe = new Float64Array(2 * ring.cqEntries);
    this.watcher = native.watch(efd, POLL_READABLE, () => {
      this.stats.wakeups++;
      this.reap();
    });
  }

  /** Set up a ring; throws where io_uring_setup is refused (the caller falls back). */
  static create(native: NativeBinding & Partial<NativeUring> = loadNative()): UringEngine {
    if (typeof native.uringSetup !== 'function') throw new Error('the addon has no io_uring functions (stale build)');
    const n = native as NativeBinding & NativeUring;
    const efd = n.eventfd(0);
    let ring: UringRing;
    try {
      ring = n.uringSetup(RING_ENTRIES, efd);
    } catch (err) {
      n.close(efd);
      throw err;
    }
    return new UringEngine(n, ring, efd);
  }

  /** Requests submitted and not yet completed (tests). */
  get inFlight(): number {
    return this.inflight + this.qLen + this.backlog.length;
  }

  /** The engine a FastIo disk runs on (tests read its stats). */
  static shared(): UringEngine | null {
    return shared;
  }

  /** preadv: bytes read (short at end of file, 0 past it), or a rejection with the errno. */
  readv(fd: number, views: readonly Uint8Array[], offset: number): Promise<number> {
    if (views.length === 0) return Promise.resolve(0);
    if (views.length > IOV_MAX) views = views.slice(0, IOV_MAX);
    return this.request(URING_OP_READV, fd, offset, views, 0, views.length);
  }

  /** pwritev: bytes written (possibly short). */
  writev(fd: number, views: readonly Uint8Array[], offset: number): Promise<number> {
    if (views.length === 0) return Promise.resolve(0);
    if (views.length > IOV_MAX) views = views.slice(0, IOV_MAX);
    return this.request(URING_OP_WRITEV, fd, offset, views, 0, views.length);
  }

  fdatasync(fd: number): Promise<number> {
    return this.request(URING_OP_FDATASYNC, fd, 0, null, 0, 0);
  }

  /** fallocate(fd, mode, offset, len) with mode FALLOC_PUNCH_HOLE or FALLOC_ZERO_RANGE. */
  fallocate(fd: number, mode: number, offset: number, len: number): Promise<number> {
    return this.request(URING_OP_FALLOCATE, fd, offset, null, len, mode);
  }

  /**
   * readv (write false) or writev of views[0..nviews) with no promise: cb(ctx, res) runs on completion (res: bytes,
   * possibly short, or a negative errno after the retries). Queued until kick(). The views stay referenced until then.
   */
  submitCb(write: boolean, fd: number, views: readonly Uint8Array[], nviews: number, offset: number, cb: UringCallback, ctx: object): void {
    if (nviews > IOV_MAX) nviews = IOV_MAX;
    const op = write ? URING_OP_WRITEV : URING_OP_READV;
    if (this.closed) {
      cb(ctx, -osConstants.errno.EBADF);
      return;
    }
    if (this.freeTop === 0) {
      this.backlog.push({ op, fd, offset, views, a: 0, b: nviews, resolve: null, reject: null, cb, ctx });
      return;
    }
    this.fill(this.freeSlots[--this.freeTop]!, op, fd, offset, views, 0, nviews, null, null, cb, ctx, false);
  }

  /** Submit what submitCb() queued now (the end of the caller's batch: one io_uring_enter for all of it). */
  kick(): void {
    if (this.qLen > 0 && !this.stalled) this.flush();
  }

  /** fn runs after every batch of completions (a reap); removeBatchEnd() takes it off. */
  onBatchEnd(fn: () => void): void {
    this.batchEnd.push(fn);
  }

  removeBatchEnd(fn: () => void): void {
    const i = this.batchEnd.indexOf(fn);
    if (i >= 0) this.batchEnd.splice(i, 1);
  }

  acquire(): this {
    this.refs++;
    return this;
  }

  /** Drop a reference; the last one closes the ring once nothing is in flight. */
  release(): void {
    if (--this.refs > 0) return;
    if (shared === this) shared = null;
    this.closeIfIdle();
  }

  private closeIfIdle(): void {
    if (this.refs > 0 || this.closed || this.inFlight > 0) return;
    this.closed = true;
    this.watcher.close();
    this.native.uringClose(this.ring);
    this.native.close(this.efd);
  }

  private request(op: number, fd: number, offset: number, views: readonly Uint8Array[] | null, a: number, b: number): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      if (this.closed) {
        reject(new Error('the io_uring engine is closed'));
        return;
      }
      if (this.freeTop === 0) {
        this.backlog.push({ op, fd, offset, views, a, b, resolve, reject, cb: null, ctx: null });
        return;
      }
      this.fill(this.freeSlots[--this.freeTop]!, op, fd, offset, views, a, b, resolve, reject, null, null, true);
    });
  }

  private fill(
    s: number, op: number, fd: number, offset: number, views: readonly Uint8Array[] | null, a: number, b: number,
    resolve: Resolve | null, reject: Reject | null, cb: UringCallback | null, ctx: object | null, schedule: boolean,
  ): void {
    const r = s * URING_OP_STRIDE;
    this.rec[r] = op;
    this.rec[r + 1] = s;
    this.rec[r + 2] = fd;
    this.rec[r + 3] = offset;
    this.rec[r + 4] = a;
    this.rec[r + 5] = b;
    this.slotViews[s] = views;
    this.viewCounts[s] = views === null ? 0 : b;
    this.resolves[s] = resolve;
    this.rejects[s] = reject;
    this.cbs[s] = cb;
    this.ctxs[s] = ctx;
    this.retries[s] = 0;
    this.enqueue(s, schedule);
  }

  /** Queue slot s; `schedule`: submit from a microtask (promise calls), else at the caller's kick(). */
  private enqueue(s: number, schedule: boolean): void {
    this.queue[(this.qHead + this.qLen) % this.slots] = s;
    this.qLen++;
    if (schedule && !this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushFn);
    }
  }

  /** Submit the queued burst; what the kernel did not take stays queued for the next flush. */
  private flush(): void {
    this.flushQueued = false;
    if (this.qLen === 0 || this.closed) return;
    const vt = this.viewTable;
    let nvt = 0;
    for (let i = 0; i < this.qLen; i++) {
      const s = this.queue[(this.qHead + i) % this.slots]!;
      const src = s * URING_OP_STRIDE;
      const dst = i * URING_OP_STRIDE;
      for (let k = 0; k < URING_OP_STRIDE; k++) this.ops[dst + k] = this.rec[src + k]!;
      const views = this.slotViews[s];
      if (views !== null) {
        this.ops[dst + 4] = nvt;
        const nv = this.viewCounts[s]!;
        for (let k = 0; k < nv; k++) {
          if (nvt < vt.length) vt[nvt] = views[k]!;
          else vt.push(views[k]!);
          nvt++;
        }
      }
    }
    let n: number;
    try {
      n = this.native.uringSubmit(this.ring, this.ops, this.qLen, vt as Uint8Array[]); // entries past the burst are null, never referenced
    } catch (err) {
      vt.fill(null, 0, nvt);
      this.failQueued(err as Error);
      return;
    }
    vt.fill(null, 0, nvt);
    this.stats.bursts++;
    this.stats.submitted += n;
    this.stalled = n === 0;
    this.qHead = (this.qHead + n) % this.slots;
    this.qLen -= n;
    this.inflight += n;
    this.reap();
  }

  /** A submit that threw (a bug in a request record, or the ring failed): every queued request fails with it. */
  private failQueued(err: Error): void {
    while (this.qLen > 0) {
      const s = this.queue[this.qHead]!;
      this.qHead = (this.qHead + 1) % this.slots;
      this.qLen--;
      this.inflight++; // settle() counts it out
      this.settle(s, err);
    }
    this.endBatch();
  }

  private endBatch(): void {
    const l = this.batchEnd;
    for (let i = 0; i < l.length; i++) l[i]!();
  }

  private reap(): void {
    if (this.closed) return;
    const max = this.cqe.length / 2;
    let reaped = 0;
    for (let drain = true; ; drain = false) {
      const k = this.native.uringReap(this.ring, this.cqe, max, drain);
      for (let i = 0; i < k; i++) this.complete(this.cqe[2 * i]!, this.cqe[2 * i + 1]!);
      reaped += k;
      if (k < max) break;
    }
    if (reaped > 0) this.endBatch();
    // Queued requests go in the next microtask, unless the kernel refused the last burst: then only once a
    // completion made room (retrying from a microtask at once would spin without ever reaching the event loop).
    if (this.qLen > 0 && !this.flushQueued && (reaped > 0 || !this.stalled)) {
      this.flushQueued = true;
      queueMicrotask(this.flushFn);
    }
    if (this.refs === 0) this.closeIfIdle();
  }

  private complete(s: number, res: number): void {
    this.stats.completed++;
    if ((res === -EINTR || res === -EAGAIN) && this.retries[s]! < MAX_RETRIES) {
      this.retries[s]!++;
      this.stats.retried++;
      this.inflight--;
      this.enqueue(s, true);
      return;
    }
    if (this.cbs[s] !== null) this.settle(s, res);
    else this.settle(s, res >= 0 ? res : uringError(OP_NAMES[this.rec[s * URING_OP_STRIDE]!] ?? 'io_uring', res));
  }

  /** Resolve or reject slot s and hand it to the next waiting request. */
  private settle(s: number, outcome: number | Error): void {
    const resolve = this.resolves[s];
    const reject = this.rejects[s];
    const cb = this.cbs[s];
    const ctx = this.ctxs[s];
    this.resolves[s] = null;
    this.rejects[s] = null;
    this.cbs[s] = null;
    this.ctxs[s] = null;
    this.slotViews[s] = null;
    this.inflight--;
    const w = this.backlog.length > 0 ? this.backlog.shift() : undefined;
    if (w !== undefined) this.fill(s, w.op, w.fd, w.offset, w.views, w.a, w.b, w.resolve, w.reject, w.cb, w.ctx, true);
    else this.freeSlots[this.freeTop++] = s;
    if (cb !== null) cb(ctx!, typeof outcome === 'number' ? outcome : -osConstants.errno.EIO);
    else if (typeof outcome === 'number') resolve!(outcome);
    else reject!(outcome);
  }
}

/** A Node-style system error for a negative io_uring result. */
export function uringError(syscall: string, res: number): Error & { code: string; errno: number; syscall: string } {
  let code: string;
  try {
    code = getSystemErrorName(res);
  } catch {
    code = `E${-res}`;
  }
  return Object.assign(new Error(`${syscall} failed: ${code}`), { code, errno: res, syscall });
}

let shared: UringEngine | null = null;

/** The engine a disk opened now uses, and why (for the start-up log line). */
export interface EngineChoice {
  engine: UringEngine | null;
  name: DiskEngineName;
  reason: string;
}

/**
 * Pick the engine for a disk being opened, from VHOSTD_DISK_ENGINE (auto when unset): the shared io_uring engine
 * (acquired: release() it when the disk closes), or null for node:fs. `io_uring` makes a refused setup an error.
 */
export function chooseEngine(env: NodeJS.ProcessEnv = process.env, create: () => UringEngine = () => UringEngine.create()): EngineChoice {
  const c = choose(env, create);
  lastReason = c.reason;
  return c;
}

let lastReason = '';

/** Why the last disk opened got its engine (for the start-up log line). */
export function lastEngineReason(): string {
  return lastReason;
}

function choose(env: NodeJS.ProcessEnv, create: () => UringEngine): EngineChoice {
  const mode = env[DISK_ENGINE_ENV] ?? 'auto';
  if (mode === 'threads') return { engine: null, name: 'threads', reason: `${DISK_ENGINE_ENV}=threads` };
  if (mode !== 'auto' && mode !== 'io_uring') throw new Error(`${DISK_ENGINE_ENV} must be auto, io_uring or threads, not ${JSON.stringify(mode)}`);
  if (shared === null) {
    try {
      shared = create();
    } catch (err) {
      if (mode === 'io_uring') throw new Error(`${DISK_ENGINE_ENV}=io_uring but io_uring is not available: ${(err as Error).message}`, { cause: err });
      return { engine: null, name: 'threads', reason: `io_uring unavailable: ${(err as Error).message}` };
    }
  }
  return { engine: shared.acquire(), name: 'io_uring', reason: mode === 'auto' ? 'io_uring available' : `${DISK_ENGINE_ENV}=io_uring` };
}
