/**
 * Vring: one virtqueue's vhost-user state (vhost-user spec, "Ring states").
 *
 *   started  = SET_VRING_KICK received and no GET_VRING_BASE since (the spec's "start upon kick")
 *   enabled  = SET_VRING_ENABLE(1), or SET_FEATURES without bit 30; independent of started, and kept while
 *              stopped because QEMU enables rings before it configures them (docs/protocol.md §4)
 *   serving  = started && enabled: the device owns the queue; every transition into it processes the ring once,
 *              so buffers published before the kick fd existed are not lost (DPDK 924da8f1c4)
 *
 * The Vring implements DeviceQueue for the device: publish() = one used.idx store + at most one call-eventfd
 * write. A queue the guest broke (avail idx jump, head out of range) is stopped and the err eventfd signalled.
 */
import type { FdWatcher, NativeBinding } from '../native/types.js';
import { POLL_READABLE } from '../native/types.js';
import { closeQuietly } from '../native/fd.js';
import type { DeviceQueue, VirtioDevice } from '../device/device.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { SplitQueue } from '../virtqueue/split-queue.js';
import type { InflightQueue } from '../virtqueue/inflight.js';
import { RateLimitedLog, type Logger } from '../util/log.js';
import type { VringAddr } from './message.js';
import { VhostError } from '../util/errors.js';

/** Poll interval for a ring whose kick fd is NOFD (the front-end will never kick it). */
const NOFD_POLL_MS = 1;

export class Vring implements DeviceQueue {
  num = 0;
  base = 0;
  addr: VringAddr | null = null;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  kickNoFd = false;
  started = false;
  enabled = false;
  serving = false;
  /** Kicks seen and calls sent, for status output and tests. */
  kicks = 0;
  calls = 0;
  /** Reads or writes of the kick/call/err eventfds that failed (a front-end that broke its own fds). */
  fdErrors = 0;
  private fdLog: RateLimitedLog | null = null;
  private q: SplitQueue | null = null;
  private watcher: FdWatcher | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private brokenReported = false;
  /** This ring's part of the inflight region (SET_INFLIGHT_FD), or null: no tracking. */
  inflight: InflightQueue | null = null;
  /** Requests resubmitted from the inflight region at starts (status output, tests). */
  resubmitted = 0;
  /** Heads not yet resubmitted when the queue is rebuilt (remap): the new queue hands them out. */
  private carried: number[] = [];
  /** Settles when the device has completed what it took from this ring before it stopped serving (blk). */
  private drainP: Promise<void> | null = null;

  constructor(
    readonly index: number,
    private readonly native: NativeBinding,
    private readonly device: VirtioDevice,
    private readonly log: Logger,
  ) {}

  get queue(): SplitQueue {
    if (!this.q) throw new Error(`vring ${this.index} has no queue`);
    return this.q;
  }

  get hasQueue(): boolean {
    return this.q !== null;
  }

  publish(): void {
    const q = this.q;
    if (!q) return;
    if (q.publishUsed() && this.callFd >= 0) {
      this.signal(this.callFd, 'call');
      this.calls++;
    }
    if (q.broken && !this.brokenReported) this.reportBroken(q.brokenReason ?? 'broken');
  }

  /**
   * SET_VRING_KICK: replace the kick fd and start the ring (builds the queue from the current memory). With an
   * inflight region, `recover` runs the inflight start algorithm: requests taken before a crash are resubmitted.
   */
  start(mem: GuestMemory, eventIdx: boolean, indirect: boolean, recover = true): void {
    if (!this.addr) throw new Error(`vring ${this.index}: SET_VRING_KICK before SET_VRING_ADDR`);
    this.stopServing();
    const q = new SplitQueue(mem, {
      size: this.num,
      descUva: this.addr.descUva,
      availUva: this.addr.availUva,
      usedUva: this.addr.usedUva,
      eventIdx,
      indirect,
      // VHOST_VRING_F_LOG (flags bit 0): log used-ring writes at log_guest_addr (vhost-user spec, "Migration").
      logUsedGpa: this.addr.flags & 1 ? this.addr.logGuestAddr : -1,
    });
    q.lastAvailIdx = this.base & 0xffff;
    let selfKick = false;
    if (this.inflight && recover) selfKick = this.recoverInflight(q, this.inflight);
    else q.attachInflight(this.inflight);
    if (!recover && this.carried.length > 0) q.setResubmit(this.carried);
    this.carried = [];
    this.q = q;
    this.started = true;
    this.brokenReported = false;
    this.watchKick();
    // libvhost-user kicks itself after resubmitting "in case of I/O hang after reconnecting".
    if (selfKick && this.kickFd >= 0) this.signal(this.kickFd, 'kick');
    this.updateServing();
  }

  /** Inflight ring start: returns true when requests were queued for resubmission. */
  private recoverInflight(q: SplitQueue, inflight: InflightQueue): boolean {
    let r;
    try {
      if (inflight.size !== q.size) throw new RangeError(`inflight region queue size ${inflight.size} differs from the ring size ${q.size}`);
      r = inflight.recover(q.usedIdx, (slot) => q.usedId(slot));
      if (r.resubmit.length > q.size) throw new RangeError(`${r.resubmit.length} heads in flight in a ring of ${q.size}`);
    } catch (err) {
      this.log.warn({ vq: this.index, reason: (err as Error).message }, 'inflight region unusable for this ring; no tracking');
      q.attachInflight(null);
      return false;
    }
    q.attachInflight(inflight);
    if (r.batchProblem) this.log.warn({ vq: this.index, reason: r.batchProblem }, 'inflight region: last batch record ignored');
    if (r.fresh) return false;
    // last_avail_idx = used.idx + in flight: the avail entries up to there were all taken before.
    q.lastAvailIdx = (q.usedIdx + r.resubmit.length) & 0xffff;
    if (r.resubmit.length === 0) return false;
    q.setResubmit(r.resubmit);
    this.resubmitted += r.resubmit.length;
    this.log.info({ vq: this.index, resubmit: r.resubmit.length, clearedBatch: r.clearedBatch, lastAvailIdx: q.lastAvailIdx }, 'resubmitting requests in flight before the reconnect');
    return true;
  }

  /**
   * Rebuild the queue views after a memory table change, keeping the ring position (docs/protocol.md §4). If the rings
   * are no longer inside guest memory (QEMU removes a region with REM_MEM_REG and adds its replacement next), the
   * ring stays started but parked without views until a later table maps it again.
   */
  remap(mem: GuestMemory, eventIdx: boolean, indirect: boolean): void {
    if (!this.started) return;
    if (this.q) this.carried = this.q.pendingResubmit();
    if (this.q) this.base = this.q.lastAvailIdx;
    this.stopServing();
    this.q = null;
    try {
      this.start(mem, eventIdx, indirect, false);
    } catch (err) {
      if (!(err instanceof VhostError && err.code === 'ERR_VQ_RING_ADDR')) throw err;
      this.started = true; // parked: waits for its memory
      this.log.debug({ vq: this.index, reason: err.message }, 'ring parked until its memory is mapped again');
    }
  }

  /** GET_VRING_BASE: stop the ring and return the next avail index to process. Nothing is reset. */
  stop(): number {
    if (this.q) this.base = this.q.lastAvailIdx;
    this.stopServing();
    this.started = false;
    this.q = null;
    this.unwatchKick();
    // QEMU and DPDK send fresh kick/call fds at the next start (libvhost-user and DPDK close them here).
    this.setKickFd(-1, false);
    this.setCallFd(-1);
    return this.base & 0xffff;
  }

  setEnabled(on: boolean): void {
    this.enabled = on;
    this.updateServing();
  }

  setKickFd(fd: number, noFd: boolean): void {
    this.unwatchKick();
    if (this.kickFd >= 0) closeQuietly(this.native, this.kickFd);
    this.kickFd = fd;
    this.kickNoFd = noFd;
  }

  setCallFd(fd: number): void {
    if (this.callFd >= 0) closeQuietly(this.native, this.callFd);
    this.callFd = fd;
  }

  setErrFd(fd: number): void {
    if (this.errFd >= 0) closeQuietly(this.native, this.errFd);
    this.errFd = fd;
  }

  /**
   * Stop serving (the device takes no more chains) and return the device's drain promise, if it still has requests
   * in flight: GET_VRING_BASE replies only once it settles (vhost-user spec, "Suspended device state").
   */
  quiesce(): Promise<void> | null {
    this.stopServing();
    return this.drainP;
  }

  /** Connection gone: stop and close everything. Returns the device's drain promise (memory must outlive it). */
  release(): Promise<void> | null {
    this.stopServing();
    const drain = this.drainP;
    this.unwatchKick();
    this.setKickFd(-1, false);
    this.setCallFd(-1);
    this.setErrFd(-1);
    this.q = null;
    this.started = false;
    return drain;
  }

  private updateServing(): void {
    const want = this.started && this.enabled && this.q !== null && !this.q.broken;
    if (want === this.serving) return;
    if (want) {
      this.serving = true;
      this.device.queueStart(this);
    } else {
      this.stopServing();
    }
  }

  private stopServing(): void {
    if (!this.serving) return;
    this.serving = false;
    const r = this.device.queueStop(this.index);
    if (r) {
      // A ring stopped again before an earlier drain settled (disable, enable, disable) still owes that earlier
      // batch: the drain covers both, so GET_VRING_BASE never replies while any of them is in flight.
      const prev = this.drainP;
      const p: Promise<void> = (prev ? Promise.all([prev, r]) : r).then(() => {
        if (this.drainP === p) this.drainP = null;
      });
      this.drainP = p;
    }
  }

  private watchKick(): void {
    this.unwatchKick();
    if (this.kickFd >= 0) {
      this.watcher = this.native.watch(this.kickFd, POLL_READABLE, (status) => this.onKick(status));
    } else if (this.kickNoFd) {
      // vhost-user spec, VHOST_USER_SET_VRING_KICK: KICK with NOFD means the back-end must poll the ring.
      this.pollTimer = setInterval(() => this.serving && this.device.queueKick(this.index), NOFD_POLL_MS);
      this.pollTimer.unref();
    }
  }

  private unwatchKick(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
  }

  /**
   * A watcher callback: nothing may throw out of it (an exception there ends the process). The kick fd was checked
   * to be an eventfd, but the front-end shares it and can still make a read fail; the ring then stops being watched.
   */
  private onKick(status: number): void {
    if (status < 0 || this.kickFd < 0) return;
    try {
      // Drain the eventfd first: a kick that arrives while we process sets it again and wakes us once more.
      if (this.native.eventfdRead(this.kickFd) < 0) return;
    } catch (err) {
      this.fdFailed('kick', err);
      this.unwatchKick();
      return;
    }
    this.kicks++;
    if (this.serving) this.device.queueKick(this.index);
  }

  /** One eventfd write that never throws (call/err/self-kick run inside device and watcher callbacks). */
  private signal(fd: number, which: 'call' | 'err' | 'kick'): void {
    try {
      this.native.eventfdWrite(fd, 1);
    } catch (err) {
      this.fdFailed(which, err);
    }
  }

  private fdFailed(which: 'call' | 'err' | 'kick', err: unknown): void {
    this.fdErrors++;
    this.fdLog ??= new RateLimitedLog(this.log);
    this.fdLog.warn(which, { vq: this.index, fd: which, reason: (err as Error).message ?? String(err) }, `${which} eventfd failed`);
  }

  private reportBroken(reason: string): void {
    this.brokenReported = true;
    this.log.warn({ vq: this.index, reason }, 'guest broke the virtqueue; queue stopped until the device is reset');
    if (this.errFd >= 0) this.signal(this.errFd, 'err');
    this.stopServing();
  }
}
