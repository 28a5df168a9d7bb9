/**
 * BlkDevice: a virtio-blk device (VIRTIO 1.2 §5.2) over a Disk.
 *
 * Each started queue is drained of available chains on start and on every kick; each chain becomes a request
 * that runs on its own, so requests on a queue run concurrently and complete out of order. A completion writes the
 * status byte and a used entry; completions are published in batches with one used.idx store and at most one
 * interrupt. Request slots (BlkSlot: the chain, plain header fields, data views) are pooled per queue.
 *
 * Reads and writes on a disk with FastIo (a raw disk on io_uring) take the allocation-free path: parseRw() into the
 * slot, FastIo.submit() with the slot as the request, one kick() per drained batch (one io_uring_enter), the
 * completion a method call on the slot, and the publish at the engine's end of a completion batch; one clock read
 * per batch each way for the latency histograms. Everything else (and every request on other disks) goes through
 * the Disk promises and is published from one setImmediate per batch.
 *
 * Stop and drain: queueStop() stops taking chains and returns a promise that settles once every request taken
 * has completed and been published; the vhost-user layer answers GET_VRING_BASE only then.
 * reset() (the front-end went away) detaches queues: their late completions are dropped, not written to a ring
 * a new front-end may own. pause() (a memory change is coming) stops every queue taking chains and settles once
 * nothing is in flight; resume() processes what was kicked meanwhile.
 *
 * DISCARD / WRITE_ZEROES are cut into BLK_BULK_CHUNK pieces with an event-loop turn before each (bulk.ts).
 *
 * Durability (VIRTIO 1.2 §5.2.6.2): writeback is reported (wce=1) so guests send FLUSH; FLUSH completes after
 * disk.flush(). In write-through mode (the driver wrote wce=0, or negotiated neither FLUSH nor CONFIG_WCE) every
 * write is flushed before it completes.
 */
import type { DeviceQueue, VirtioDevice } from '../device/device.js';
import type { SplitQueue } from '../virtqueue/split-queue.js';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
  hasBit,
} from '../virtio/features.js';
import type { Logger } from '../util/log.js';
import { RateLimitedLog } from '../util/log.js';
import type { Disk } from './disk.js';
import { ImageError } from './qcow2/errors.js';
import { newBlkLatency, type BlkLatency } from './latency.js';
import { VIEW_CACHE_SIZE, parseBlkRequest, parseRw, writeStatus, type BlkLimits, type BlkRequest } from './request.js';
import { BlkSlot } from './blk-slot.js';
import { fastIoOf, type FastIo } from './fast-io.js';
import { BulkQueue } from './bulk.js';
import {
  BLK_REQ_HDR_SIZE,
  BlkConfig,
  SECTOR_SIZE,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
} from './virtio-blk-defs.js';

/** Request queues offered (GET_QUEUE_NUM, MQ): QEMU's num-queues defaults to the vCPU count and must not exceed it. */
export const BLK_MAX_QUEUES = 16;
/** seg_max: QEMU's default queue size 128 minus header and status (as QEMU's own back-ends). */
export const BLK_SEG_MAX = 126;
/** size_max: largest data segment (bytes). */
export const BLK_SIZE_MAX = 1 << 20;
/** Discard / write-zeroes limits advertised in config space. */
export const BLK_MAX_DISCARD_SECTORS = 1 << 22; // 2 GiB
export const BLK_MAX_DISCARD_SEG = 16;
export const BLK_MAX_WRITE_ZEROES_SECTORS = 1 << 16; // 32 MiB
export const BLK_MAX_WRITE_ZEROES_SEG = 16;
export { BLK_BULK_CHUNK } from './bulk.js';

export interface BlkCounters {
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  writeZeroes: number;
  getIds: number;
  readBytes: number;
  writtenBytes: number;
  /** Chains without a status byte or that broke a ring rule: completed with used len 0. */
  badChain: number;
  /** Requests answered IOERR before any I/O (short header, unaligned, out of range, read-only, bad segments). */
  badRequest: number;
  /** Requests answered UNSUPP (unknown type, reserved flags, discard with unmap). */
  unsupported: number;
  /** Requests whose I/O failed (IOERR). */
  ioErrors: number;
  /** Writes the image policy refused (IOERR): a disk probed as raw that would start with the qcow2 magic. */
  refused: number;
  /** Requests in flight right now. */
  inflight: number;
}

export interface BlkDeviceOptions {
  /** Device name, e.g. "vm13.disk0" (logs, default serial). */
  name: string;
  disk: Disk;
  log: Logger;
  /** GET_ID answer (ASCII, at most 20 bytes are used). Default: the name. */
  serial?: string;
}

/** Per started queue. A stopped queue's state lives on until its requests complete. */
interface QueueState {
  dq: DeviceQueue;
  vq: SplitQueue;
  /** Taking new chains. */
  active: boolean;
  /** Completions go to the ring (false after reset: the front-end is gone). */
  attached: boolean;
  inflight: number;
  /** Free slots: a stack over free[0..freeLen) (pop() would trim the array's backing store and push regrow it). */
  free: BlkSlot<QueueState>[];
  freeLen: number;
  publishScheduled: boolean;
  drainWaiters: (() => void)[];
  /** A kick or start arrived while the device was paused: process the ring at resume(). */
  deferred: boolean;
}

export class BlkDevice implements VirtioDevice {
  readonly kind = 'blk' as const;
  readonly maxQueues = BLK_MAX_QUEUES;
  readonly name: string;
  readonly disk: Disk;
  readonly counters: BlkCounters = {
    reads: 0, writes: 0, flushes: 0, discards: 0, writeZeroes: 0, getIds: 0, readBytes: 0, writtenBytes: 0,
    badChain: 0, badRequest: 0, unsupported: 0, ioErrors: 0, refused: 0, inflight: 0,
  };
  /** Request latency (submit to completion) per I/O kind, for metrics: one clock read per batch on the FastIo path, per request otherwise. */
  readonly latency: BlkLatency = newBlkLatency();
  /** Negotiated virtio features (status output). */
  acked = 0n;
  /** Config-space writeback byte (1 = write cache on). */
  writeback = 1;
  private writeThrough = false;
  private readonly serial: Uint8Array;
  private readonly limits: BlkLimits;
  private readonly log: Logger;
  private readonly guestErrors: RateLimitedLog;
  private readonly queues = new Map<number, QueueState>();
  /** Every state with requests in flight (current and detached), for drainAll(). */
  private readonly busy = new Set<QueueState>();
  private readonly hdrScratch = new Uint8Array(BLK_REQ_HDR_SIZE);
  /** Data views of recent guest ranges, for the FastIo path (request.ts, sgViewsInto). */
  private readonly viewCache: (Uint8Array | null)[] = new Array<Uint8Array | null>(VIEW_CACHE_SIZE).fill(null);
  /** pause() is in effect: no chain is taken from any queue. */
  private paused = false;
  /** Waiting for counters.inflight to reach 0 (pause, whenIdle). */
  private idleWaiters: (() => void)[] = [];
  /** Discard and write-zeroes run one at a time per device, one chunk per event-loop turn. */
  private readonly bulk: BulkQueue;
  /** The disk's allocation-free read/write path, or null (promises only). */
  private readonly fast: FastIo | null;
  /** Queues with FastIo completions to publish at the engine's end of batch (reused array). */
  private readonly toPublish: (QueueState | null)[] = [];
  private toPublishLen = 0;
  /** performance.now() of the current completion batch (-1: not read yet in this batch). */
  private batchClock = -1;
  private readonly slotDone = (slot: BlkSlot<QueueState>, err: Error | null): void => this.fastDone(slot, err);
  private readonly batchEnd = (): void => this.endBatch();

  constructor(opts: BlkDeviceOptions) {
    this.name = opts.name;
    this.disk = opts.disk;
    this.log = opts.log;
    this.bulk = new BulkQueue(opts.disk);
    this.fast = fastIoOf(opts.disk);
    this.fast?.onBatchEnd(this.batchEnd);
    this.guestErrors = new RateLimitedLog(opts.log);
    const id = Buffer.from(opts.serial ?? opts.name, 'latin1').subarray(0, VIRTIO_BLK_ID_BYTES);
    this.serial = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    this.serial.set(id);
    this.limits = {
      capacitySectors: Math.floor(opts.disk.size / SECTOR_SIZE),
      readOnly: opts.disk.readOnly,
      maxDiscardSectors: BLK_MAX_DISCARD_SECTORS,
      maxDiscardSeg: BLK_MAX_DISCARD_SEG,
      maxWriteZeroesSectors: BLK_MAX_WRITE_ZEROES_SECTORS,
      maxWriteZeroesSeg: BLK_MAX_WRITE_ZEROES_SEG,
    };
  }

  features(): bigint {
    let f =
      bit(VIRTIO_F_VERSION_1) |
      bit(VIRTIO_RING_F_INDIRECT_DESC) |
      bit(VIRTIO_RING_F_EVENT_IDX) |
      bit(VIRTIO_BLK_F_SIZE_MAX) |
      bit(VIRTIO_BLK_F_SEG_MAX) |
      bit(VIRTIO_BLK_F_BLK_SIZE) |
      bit(VIRTIO_BLK_F_FLUSH) |
      bit(VIRTIO_BLK_F_TOPOLOGY) |
      bit(VIRTIO_BLK_F_CONFIG_WCE) |
      bit(VIRTIO_BLK_F_MQ) |
      bit(VIRTIO_BLK_F_DISCARD) |
      bit(VIRTIO_BLK_F_WRITE_ZEROES);
    if (this.disk.readOnly) f |= bit(VIRTIO_BLK_F_RO);
    return f;
  }

  queueNum(): number {
    return this.maxQueues;
  }

  setFeatures(acked: bigint): void {
    this.acked = acked;
    this.updateCacheMode();
  }

  /** §5.2.6.2 stability rule: write-through unless the driver can flush (FLUSH or CONFIG_WCE) and wce stays 1. */
  private updateCacheMode(): void {
    const wce = hasBit(this.acked, VIRTIO_BLK_F_CONFIG_WCE);
    const flush = hasBit(this.acked, VIRTIO_BLK_F_FLUSH);
    this.writeThrough = wce ? this.writeback === 0 : !flush;
  }

  /** True when every write is made durable before it completes. */
  get writeThroughMode(): boolean {
    return this.writeThrough;
  }

  queueStart(q: DeviceQueue): void {
    const st: QueueState = {
      dq: q, vq: q.queue, active: true, attached: true, inflight: 0, free: [], freeLen: 0, publishScheduled: false, drainWaiters: [], deferred: false,
    };
    this.queues.set(q.index, st);
    this.process(st);
  }

  /** Stop taking chains; the promise settles when every request taken has completed and been published. */
  queueStop(index: number): Promise<void> | void {
    const st = this.queues.get(index);
    if (!st) return;
    this.queues.delete(index);
    st.active = false;
    if (st.publishScheduled && st.attached) this.publishNow(st);
    if (st.inflight === 0) {
      this.busy.delete(st);
      return;
    }
    return new Promise<void>((resolve) => st.drainWaiters.push(resolve));
  }

  queueKick(index: number): void {
    const st = this.queues.get(index);
    if (st) this.process(st);
  }

  getConfig(offset: number, size: number): Uint8Array {
    const cfg = new Uint8Array(Math.max(BlkConfig.SIZE, offset + size));
    const dv = new DataView(cfg.buffer);
    dv.setBigUint64(BlkConfig.CAPACITY, BigInt(this.limits.capacitySectors), true);
    dv.setUint32(BlkConfig.SIZE_MAX, BLK_SIZE_MAX, true);
    dv.setUint32(BlkConfig.SEG_MAX, BLK_SEG_MAX, true);
    dv.setUint32(BlkConfig.BLK_SIZE, SECTOR_SIZE, true);
    cfg[BlkConfig.PHYSICAL_BLOCK_EXP] = 0;
    cfg[BlkConfig.ALIGNMENT_OFFSET] = 0;
    dv.setUint16(BlkConfig.MIN_IO_SIZE, 1, true);
    dv.setUint32(BlkConfig.OPT_IO_SIZE, 0, true);
    cfg[BlkConfig.WRITEBACK] = this.writeback;
    dv.setUint16(BlkConfig.NUM_QUEUES, this.maxQueues, true);
    dv.setUint32(BlkConfig.MAX_DISCARD_SECTORS, BLK_MAX_DISCARD_SECTORS, true);
    dv.setUint32(BlkConfig.MAX_DISCARD_SEG, BLK_MAX_DISCARD_SEG, true);
    dv.setUint32(BlkConfig.DISCARD_SECTOR_ALIGNMENT, 1, true);
    dv.setUint32(BlkConfig.MAX_WRITE_ZEROES_SECTORS, BLK_MAX_WRITE_ZEROES_SECTORS, true);
    dv.setUint32(BlkConfig.MAX_WRITE_ZEROES_SEG, BLK_MAX_WRITE_ZEROES_SEG, true);
    // Raw images never deallocate on write-zeroes; qcow2 may (unmap honoured).
    cfg[BlkConfig.WRITE_ZEROES_MAY_UNMAP] = this.disk.format === 'raw' ? 0 : 1;
    return cfg.slice(offset, offset + size);
  }

  /** SET_CONFIG: only the writeback byte (offset 32) is writable. */
  setConfig(offset: number, data: Uint8Array): boolean {
    if (offset !== BlkConfig.WRITEBACK || data.length !== 1) return false;
    const wb = data[0] ? 1 : 0;
    if (wb !== this.writeback) this.log.info({ writeback: wb === 1 }, wb ? 'guest turned the write cache on' : 'guest turned the write cache off (write-through)');
    this.writeback = wb;
    this.updateCacheMode();
    return true;
  }

  setMtu(): string | null {
    return 'not a network device';
  }

  reset(): void {
    // The connection is gone; a pause it left (released while waiting) must not hold the next one.
    this.paused = false;
    for (const st of this.queues.values()) {
      st.active = false;
      st.attached = false;
    }
    for (const st of this.busy) {
      st.attached = false;
      if (st.inflight === 0) this.busy.delete(st);
    }
    this.queues.clear();
    this.acked = 0n;
    this.writeback = 1;
    this.updateCacheMode();
  }

  /**
   * Memory change ahead: stop taking chains on every queue and settle once nothing is in flight. Requests hold views
   * of guest memory that preadv/pwritev use on the thread pool, and their status bytes are written on completion, so
   * the old mapping must stay until they are done (docs/security.md, "Memory changes while I/O is in flight").
   */
  pause(): Promise<void> | null {
    this.paused = true;
    return this.whenIdle();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    for (const st of this.queues.values()) {
      if (!st.deferred) continue;
      st.deferred = false;
      this.process(st);
    }
  }

  /** Settles when counters.inflight is 0, with every completion published first. */
  whenIdle(): Promise<void> | null {
    this.publishPending();
    if (this.counters.inflight === 0) return null;
    return new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Settles when no request is in flight on any queue (shutdown: before the disk is closed). */
  async drainAll(): Promise<void> {
    await Promise.all([...this.busy].map((st) => new Promise<void>((resolve) => (st.inflight === 0 ? resolve() : st.drainWaiters.push(resolve)))));
  }

  // ---------------------------------------------------------------- request processing

  private process(st: QueueState): void {
    const vq = st.vq;
    if (this.paused) {
      st.deferred = true;
      return;
    }
    const now = performance.now(); // one clock read per batch
    for (;;) {
      if (!st.active || vq.broken) break;
      vq.disableNotification();
      for (;;) {
        const slot = st.freeLen > 0 ? st.free[--st.freeLen]! : new BlkSlot(st, vq.size, this.slotDone);
        if (!vq.pop(slot.chain)) {
          this.release(st, slot);
          break;
        }
        this.submit(st, slot, now);
        if (!st.active) break;
      }
      if (!st.active || !vq.enableNotification()) break;
    }
    // The batch goes to the kernel in one crossing; completions it finished at once are published below.
    if (this.fast !== null) this.fast.kick();
    if (st.publishScheduled) this.publishNow(st);
    else if (vq.broken && st.attached) st.dq.publish(); // reports the broken ring
  }

  private submit(st: QueueState, slot: BlkSlot<QueueState>, now: number): void {
    const chain = slot.chain;
    // Write-through mode takes the promise path (a write needs its flush); deciding before the parse keeps the header
    // read once.
    if (this.fast !== null && !this.writeThrough && parseRw(chain, this.limits, this.hdrScratch, slot, this.viewCache)) {
      if (slot.write) this.counters.writes++;
      else this.counters.reads++;
      this.taken(st);
      slot.t0 = now;
      this.fast.submit(slot);
      return;
    }
    this.submitSlow(st, slot);
  }

  private taken(st: QueueState): void {
    st.inflight++;
    this.counters.inflight++;
    if (st.inflight === 1) this.busy.add(st);
  }

  /** A FastIo read or write completed (slot.ioDone). */
  private fastDone(slot: BlkSlot<QueueState>, err: Error | null): void {
    const st = slot.queue;
    if (this.batchClock < 0) this.batchClock = performance.now();
    (slot.write ? this.latency.write : this.latency.read).observe((this.batchClock - slot.t0) / 1000);
    if (err === null) {
      if (slot.write) this.counters.writtenBytes += slot.len;
      else this.counters.readBytes += slot.len;
      this.finish(st, slot, VIRTIO_BLK_S_OK, slot.write ? 1 : slot.len + 1, true);
      return;
    }
    this.counters.ioErrors++;
    this.guestErrors.warn('io-error', { vq: st.dq.index, request: slot.write ? 'write' : 'read', reason: err.message }, 'virtio-blk I/O failed (IOERR to the guest)');
    this.finish(st, slot, VIRTIO_BLK_S_IOERR, 1, true);
  }

  /** The engine's end of a completion batch: publish what FastIo completions added, once per queue. */
  private endBatch(): void {
    this.batchClock = -1;
    const l = this.toPublish;
    const n = this.toPublishLen;
    this.toPublishLen = 0; // not l.length = 0: that drops the backing store and the next push allocates one
    for (let i = 0; i < n; i++) {
      const st = l[i]!;
      l[i] = null;
      if (st.publishScheduled && st.attached) this.publishNow(st);
    }
  }

  private submitSlow(st: QueueState, slot: BlkSlot<QueueState>): void {
    const chain = slot.chain;
    const req = parseBlkRequest(chain, this.limits, this.hdrScratch);
    switch (req.kind) {
      case 'drop':
        this.counters.badChain++;
        this.guestErrors.warn(`drop-${req.error}`, { vq: st.dq.index, head: chain.head, error: req.error, reason: req.detail }, 'bad virtio-blk descriptor chain returned unused');
        this.complete(st, slot, -1, 0, false);
        return;
      case 'fail':
        if (req.status === VIRTIO_BLK_S_UNSUPP) this.counters.unsupported++;
        else this.counters.badRequest++;
        this.guestErrors.warn(`fail-${req.error}`, { vq: st.dq.index, type: req.type, error: req.error, reason: req.detail }, req.status === VIRTIO_BLK_S_UNSUPP ? 'unsupported virtio-blk request' : 'bad virtio-blk request failed with IOERR');
        this.complete(st, slot, req.status, 1, false);
        return;
      case 'get-id': {
        this.counters.getIds++;
        let o = 0;
        for (const b of req.bufs) {
          b.set(this.serial.subarray(o, o + b.length));
          o += b.length;
        }
        this.complete(st, slot, VIRTIO_BLK_S_OK, req.len + 1, false);
        return;
      }
      default:
        break;
    }
    this.taken(st);
    const hist = this.latency[req.kind];
    const t0 = performance.now(); // a double, no BigInt (hrtime.bigint) per request
    this.execute(req).then(
      (written) => {
        hist.observe((performance.now() - t0) / 1000);
        this.finish(st, slot, VIRTIO_BLK_S_OK, written + 1, false);
      },
      (err: unknown) => {
        hist.observe((performance.now() - t0) / 1000);
        // The policy's refusal is logged by whoever refused (ProbedRawGuard); counted apart from failed I/O.
        if (err instanceof ImageError && err.kind === 'Refused') {
          this.counters.refused++;
          this.finish(st, slot, VIRTIO_BLK_S_IOERR, 1, false);
          return;
        }
        this.counters.ioErrors++;
        this.guestErrors.warn('io-error', { vq: st.dq.index, request: req.kind, reason: (err as Error).message ?? String(err) }, 'virtio-blk I/O failed (IOERR to the guest)');
        this.finish(st, slot, VIRTIO_BLK_S_IOERR, 1, false);
      },
    );
  }

  /** Run one request against the disk; resolves with the data bytes written into guest memory. */
  private async execute(req: BlkRequest): Promise<number> {
    const disk = this.disk;
    switch (req.kind) {
      case 'read':
        this.counters.reads++;
        if (req.len > 0) await disk.read(req.offset, req.bufs);
        this.counters.readBytes += req.len;
        return req.len;
      case 'write':
        this.counters.writes++;
        if (req.len > 0) await disk.write(req.offset, req.bufs);
        if (this.writeThrough) await disk.flush();
        this.counters.writtenBytes += req.len;
        return 0;
      case 'flush':
        this.counters.flushes++;
        await disk.flush();
        return 0;
      case 'discard':
      case 'write-zeroes': {
        if (req.kind === 'discard') this.counters.discards++;
        else this.counters.writeZeroes++;
        await this.bulk.run(req.kind, req.segments);
        if (this.writeThrough) await disk.flush();
        return 0;
      }
      default:
        throw new Error(`unexpected request ${req.kind}`);
    }
  }

  private finish(st: QueueState, slot: BlkSlot<QueueState>, status: number, usedLen: number, batched: boolean): void {
    st.inflight--;
    this.counters.inflight--;
    this.complete(st, slot, status, usedLen, batched);
    if (st.inflight === 0) {
      if (!st.active || !st.attached) {
        this.busy.delete(st);
        if (st.publishScheduled && st.attached) this.publishNow(st);
        this.wakeDrain(st);
      }
    }
    if (this.counters.inflight === 0 && this.idleWaiters.length > 0) {
      // Used entries must reach used.idx before the rings are rebuilt over the new memory, or they are lost.
      this.publishPending();
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  /**
   * Status byte (status < 0: none), used entry, and a publish at the end of this batch: the engine's (batched: a
   * FastIo completion) or one setImmediate's.
   */
  private complete(st: QueueState, slot: BlkSlot<QueueState>, status: number, usedLen: number, batched: boolean): void {
    const chain = slot.chain;
    if (st.attached && st.dq.hasQueue) {
      if (status >= 0) {
        writeStatus(chain, status);
        const log = st.vq.mem.dirtyLog;
        if (log !== null) log.logSg(chain.writable, chain.writableBytes);
      }
      st.dq.queue.addUsed(chain.head, usedLen);
      this.schedulePublish(st, batched);
    }
    this.release(st, slot);
  }

  private release(st: QueueState, slot: BlkSlot<QueueState>): void {
    if (st.freeLen < st.free.length) st.free[st.freeLen] = slot;
    else st.free.push(slot);
    st.freeLen++;
  }

  private schedulePublish(st: QueueState, batched: boolean): void {
    if (st.publishScheduled) return;
    st.publishScheduled = true;
    if (batched) {
      if (this.toPublishLen < this.toPublish.length) this.toPublish[this.toPublishLen] = st;
      else this.toPublish.push(st);
      this.toPublishLen++;
      return;
    }
    this.publishNextTurn(st);
  }

  /** Apart from schedulePublish: a closure capturing st would allocate its context on every call there. */
  private publishNextTurn(st: QueueState): void {
    setImmediate(() => {
      if (st.publishScheduled && st.attached) this.publishNow(st);
      st.publishScheduled = false;
    });
  }

  private publishNow(st: QueueState): void {
    st.publishScheduled = false;
    st.dq.publish();
  }

  /** Publish every attached queue's scheduled completions now. */
  private publishPending(): void {
    for (const st of this.queues.values()) if (st.publishScheduled && st.attached) this.publishNow(st);
  }

  private wakeDrain(st: QueueState): void {
    const w = st.drainWaiters;
    st.drainWaiters = [];
    for (const f of w) f();
  }
}
