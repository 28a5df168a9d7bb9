/**
 * BackendSession: the vhost-user back-end state for one front-end connection (docs/protocol.md).
 * One method per request, dispatched from a table; every payload is decoded and checked in message.ts first,
 * and fd counts are checked here before any state changes (DPDK validate_msg_fds).
 *
 * Failure scope (docs/architecture.md §6): a malformed message (bad size, wrong fd count, overlapping regions, ring
 * outside guest memory) throws a VhostError, which drops this connection only; an unknown request gets a
 * failure reply when one is expected, a log line, and the session goes on.
 */
import type { NativeBinding } from '../native/types.js';
import { closeAll } from '../native/fd.js';
import type { VirtioDevice } from '../device/device.js';
import { GuestMemory } from '../memory/guest-memory.js';
import type { MemoryRegion } from '../memory/region.js';
import { MAP_WINDOWS_PER_TURN, mapRegions, unmapRegions } from '../memory/mmap-regions.js';
import { DirtyLog } from '../memory/dirty-log.js';
import { MAX_QUEUE_SIZE } from '../virtqueue/defs.js';
import { InflightQueue, inflightQueueBytes } from '../virtqueue/inflight.js';
import { VhostError } from '../util/errors.js';
import { RateLimitedLog, type Logger } from '../util/log.js';
import {
  FrontendRequest as R,
  VHOST_USER_NEED_REPLY_MASK,
  decodeConfig,
  decodeMemTable,
  decodeSingleRegion,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeConfig,
  encodeReply,
  encodeVringState,
  expectSize,
  readU64,
  readU64Big,
  requestName,
  u64Payload,
  type Message,
  type RegionDescriptor,
} from './message.js';
import {
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
  hasBit,
  protocolFeatureNames,
  protocolFeaturesFor,
  virtioFeatureNames,
} from './features.js';
import { Vring } from './vring.js';
import { DEFAULT_LIMITS, checkAreaFd, checkRegionFds, checkVringFd, type FrontendLimits } from './fd-checks.js';

/** GET_MAX_MEM_SLOTS answer: must never decrease across reconnects (docs/protocol.md §2). */
export const MAX_MEM_SLOTS = 32;

/** Something that can carry replies back to the front-end. */
export interface ReplySink {
  send(bytes: Uint8Array, fds?: number[]): void;
}

type Handler = (msg: Message) => Uint8Array | null | Promise<Uint8Array | null>;

interface MappedRegion {
  desc: RegionDescriptor;
  windows: MemoryRegion[];
}

export class BackendSession {
  readonly vrings: Vring[];
  owner = false;
  /** Virtio features acked by SET_FEATURES (including bit 30 when sent). */
  ackedFeatures = 0n;
  protocolFeatures = 0n;
  /** Whether GET_FEATURES offered bit 30 (REPLY_ACK is gated on the offer, not the ack: docs/protocol.md §1). */
  private offeredProtocolFeatures = false;
  private featuresSet = false;
  private mem: GuestMemory | null = null;
  private regions: MappedRegion[] = [];
  private readonly handlers: Map<number, Handler>;
  private released = false;
  /** Requests refused or ignored (NACKed or answered as failed), for the status output; their log lines are rate-limited. */
  refusedRequests = 0;
  /** A front-end can repeat a refused request in a loop: its warnings are rate-limited per request. */
  private readonly limited: RateLimitedLog;
  /** The dirty-page bitmap from SET_LOG_BASE (live migration), active while LOG_ALL is acked. */
  private logBuffer: ArrayBuffer | null = null;
  private dirtyLog: DirtyLog | null = null;
  /** The inflight region from SET_INFLIGHT_FD, mapped while this session lives. */
  private inflightBuffer: ArrayBuffer | null = null;
  /** fds to attach to the reply being built (GET_INFLIGHT_FD); closed once sent. */
  private replyFds: number[] = [];

  constructor(
    private readonly native: NativeBinding,
    readonly device: VirtioDevice,
    private readonly out: ReplySink,
    private readonly log: Logger,
    private readonly limits: FrontendLimits = DEFAULT_LIMITS,
  ) {
    this.limited = new RateLimitedLog(log);
    this.vrings = Array.from({ length: device.maxQueues }, (_, i) => new Vring(i, native, device, log));
    this.handlers = new Map<number, Handler>([
      [R.GET_FEATURES, () => this.getFeatures()],
      [R.SET_FEATURES, (m) => this.setFeatures(m)],
      [R.SET_OWNER, () => this.setOwner()],
      [R.RESET_OWNER, () => this.resetOwner()],
      [R.GET_PROTOCOL_FEATURES, () => u64Payload(protocolFeaturesFor(this.device.kind))],
      [R.SET_PROTOCOL_FEATURES, (m) => this.setProtocolFeatures(m)],
      [R.SET_MEM_TABLE, (m) => this.setMemTable(m)],
      [R.GET_MAX_MEM_SLOTS, () => u64Payload(MAX_MEM_SLOTS)],
      [R.ADD_MEM_REG, (m) => this.addMemReg(m)],
      [R.REM_MEM_REG, (m) => this.remMemReg(m)],
      [R.SET_VRING_NUM, (m) => this.setVringNum(m)],
      [R.SET_VRING_ADDR, (m) => this.setVringAddr(m)],
      [R.SET_VRING_BASE, (m) => this.setVringBase(m)],
      [R.GET_VRING_BASE, (m) => this.getVringBase(m)],
      [R.SET_VRING_KICK, (m) => this.setVringFd(m, 'kick')],
      [R.SET_VRING_CALL, (m) => this.setVringFd(m, 'call')],
      [R.SET_VRING_ERR, (m) => this.setVringFd(m, 'err')],
      [R.SET_VRING_ENABLE, (m) => this.setVringEnable(m)],
      [R.GET_QUEUE_NUM, () => u64Payload(this.device.queueNum())],
      [R.NET_SET_MTU, (m) => this.netSetMtu(m)],
      [R.GET_CONFIG, (m) => this.getConfig(m)],
      [R.SET_CONFIG, (m) => this.setConfig(m)],
      [R.SET_LOG_BASE, (m) => this.setLogBase(m)],
      [R.SET_LOG_FD, (m) => this.takeAndClose(m)],
      [R.SET_BACKEND_REQ_FD, (m) => this.takeAndClose(m)],
      [R.GET_INFLIGHT_FD, (m) => this.getInflightFd(m)],
      [R.SET_INFLIGHT_FD, (m) => this.setInflightFd(m)],
    ]);
  }

  /** Requests that always carry a reply body; the others reply only for NEED_REPLY with REPLY_ACK. */
  private static readonly alwaysReply = new Set<number>([
    R.GET_FEATURES, R.GET_PROTOCOL_FEATURES, R.GET_VRING_BASE, R.GET_QUEUE_NUM, R.GET_CONFIG, R.GET_MAX_MEM_SLOTS,
    R.GET_INFLIGHT_FD, R.GET_STATUS, R.SET_LOG_BASE, R.IOTLB_MSG, R.POSTCOPY_LISTEN, R.POSTCOPY_END, R.POSTCOPY_ADVISE,
  ]);

  /**
   * Requests that map or unmap guest memory or the dirty log. They wait until no blk request is in flight: requests
   * hold views of the current mappings (preadv/pwritev use them on the thread pool, the status byte and the dirty
   * log are written at completion), and munmap under them loses statuses, fails I/O with EFAULT, or moves disk data
   * to or from whatever is mapped there next. Draining (as GET_VRING_BASE does) rather than keeping old mappings
   * alive by reference keeps one mapping per region and one dirty log at any time, and completions are logged in
   * the log the front-end reads (docs/security.md, "Memory changes while I/O is in flight").
   */
  private static readonly memoryChanges = new Set<number>([R.SET_MEM_TABLE, R.ADD_MEM_REG, R.REM_MEM_REG, R.SET_LOG_BASE]);

  /**
   * Handle one request. Returns a promise only when the reply has to wait (GET_VRING_BASE, or a memory change,
   * while a blk queue still has requests in flight); the connection reads nothing more until it settles.
   */
  handle(msg: Message): void | Promise<void> {
    const needReply = (msg.flags & VHOST_USER_NEED_REPLY_MASK) !== 0 && this.replyAckAllowed();
    const handler = this.handlers.get(msg.request);
    if (!handler) {
      this.refusedRequests++;
      this.limited.warn(`unsupported ${msg.request}`, { req: requestName(msg.request), size: msg.size, fds: msg.fds.length }, 'unsupported request ignored');
      if (BackendSession.alwaysReply.has(msg.request) || needReply) this.reply(msg.request, u64Payload(1));
      return;
    }
    const device = this.device;
    if (!BackendSession.memoryChanges.has(msg.request) || !device.pause) return this.run(msg, needReply, handler);
    const drained = device.pause();
    // Resume only once the change is installed: a large table is mapped over several turns (mapThen).
    const runThenResume = (): void | Promise<void> => {
      let r: void | Promise<void>;
      try {
        r = this.run(msg, needReply, handler);
      } catch (err) {
        device.resume?.();
        throw err;
      }
      if (r instanceof Promise) return r.finally(() => device.resume?.());
      device.resume?.();
      return r;
    };
    if (!drained) return runThenResume();
    this.log.debug({ req: requestName(msg.request) }, 'memory change waits for in-flight requests');
    return drained.then(() => {
      // Connection dropped meanwhile: release() already reset the device; the fds left in msg are closed for us.
      if (this.released) return;
      return runThenResume();
    });
  }

  private run(msg: Message, needReply: boolean, handler: Handler): void | Promise<void> {
    let body: Uint8Array | null | Promise<Uint8Array | null>;
    try {
      body = handler(msg);
    } catch (err) {
      this.refuse(msg, needReply, err);
      return;
    }
    if (body instanceof Promise) {
      return body.then(
        (b) => this.finishReply(msg, needReply, b),
        (err: unknown) => this.refuse(msg, needReply, err),
      );
    }
    this.finishReply(msg, needReply, body);
  }

  private finishReply(msg: Message, needReply: boolean, body: Uint8Array | null): void {
    const fds = this.replyFds;
    this.replyFds = [];
    try {
      if (body) this.reply(msg.request, body, fds);
      else if (needReply) this.reply(msg.request, u64Payload(0));
    } finally {
      closeAll(this.native, fds); // the receiver got its own copies (SCM_RIGHTS)
    }
  }

  /** A well-formed request we refuse: NACK it (when a reply is expected) and go on. Anything else is fatal. */
  private refuse(msg: Message, needReply: boolean, err: unknown): void {
    closeAll(this.native, this.replyFds);
    this.replyFds = [];
    if (err instanceof VhostError && err.code === 'ERR_VU_PROTOCOL') {
      this.refusedRequests++;
      this.limited.warn(`refused ${msg.request}`, { req: requestName(msg.request), reason: err.message }, 'request refused');
      if (needReply) this.reply(msg.request, u64Payload(1));
      return;
    }
    throw err;
  }

  /** The connection is gone: stop every ring, unmap memory, close every fd. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    const drains = this.vrings.map((v) => v.release()).filter((d): d is Promise<void> => d !== null);
    this.device.reset();
    // Device-wide as well: a ring stopped and restarted more than once keeps only its latest drain.
    const idle = this.device.whenIdle?.() ?? null;
    if (idle) drains.push(idle);
    // Requests still in flight read or write guest memory from the thread pool: unmap only after they finish.
    if (drains.length === 0) this.dropMemory();
    else void Promise.all(drains).then(() => this.dropMemory());
  }

  /** Which of this session's shared mappings took a SIGBUS (native/sigbus.c), or null. */
  faultedMapping(): string | null {
    for (const m of this.regions) {
      if (m.windows.some((w) => this.native.mappingFaults(w.buffer) > 0)) return `memory region at GPA 0x${m.desc.gpa.toString(16)}`;
    }
    if (this.logBuffer && this.native.mappingFaults(this.logBuffer) > 0) return 'dirty log';
    if (this.inflightBuffer && this.native.mappingFaults(this.inflightBuffer) > 0) return 'inflight area';
    return null;
  }

  /** Negotiated view for status output. */
  get negotiated(): { features: string[]; protocol: string[] } {
    return { features: virtioFeatureNames(this.ackedFeatures), protocol: protocolFeatureNames(this.protocolFeatures) };
  }

  private reply(request: number, body: Uint8Array, fds: number[] = []): void {
    this.out.send(encodeReply(request, body), fds);
  }

  private replyAckAllowed(): boolean {
    return this.offeredProtocolFeatures && hasBit(this.protocolFeatures, VHOST_USER_PROTOCOL_F_REPLY_ACK);
  }

  /** Guest memory ADD_MEM_REG may still add: the limit minus every other region (a repeated region is not new). */
  private memoryBudget(desc: RegionDescriptor): number {
    return this.regions.reduce((left, r) => (sameRegion(r.desc, desc) ? left : left - r.desc.size), this.limits.maxGuestMemory);
  }

  private expectFds(msg: Message, n: number): void {
    if (msg.fds.length !== n) {
      throw new VhostError('ERR_VU_BAD_FDS', `${requestName(msg.request)}: ${msg.fds.length} fds attached, expected ${n}`);
    }
  }

  private vring(index: number, req: number): Vring {
    const v = this.vrings[index];
    if (!v) throw new VhostError('ERR_VU_BAD_VRING', `${requestName(req)}: vring index ${index} out of range (device has ${this.vrings.length})`);
    return v;
  }

  /** Features every device gets from the vhost-user layer: bit 30, and LOG_ALL (dirty logging). */
  private offeredFeatures(): bigint {
    return this.device.features() | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VHOST_F_LOG_ALL);
  }

  private getFeatures(): Uint8Array {
    this.offeredProtocolFeatures = true;
    return u64Payload(this.offeredFeatures());
  }

  private setFeatures(msg: Message): null {
    const v = readU64Big(msg.payload, msg.request);
    const offered = this.offeredFeatures();
    const unknown = v & ~offered;
    if (unknown) this.limited.warn('features', { unknown: virtioFeatureNames(unknown) }, 'front-end acked features that were not offered; ignored');
    const wasLogging = hasBit(this.ackedFeatures, VHOST_F_LOG_ALL);
    this.ackedFeatures = v & offered;
    this.featuresSet = true;
    this.device.setFeatures(this.ackedFeatures & ~bit(VHOST_USER_F_PROTOCOL_FEATURES) & ~bit(VHOST_F_LOG_ALL));
    this.applyDirtyLog();
    if (wasLogging !== hasBit(this.ackedFeatures, VHOST_F_LOG_ALL)) {
      this.log.info({ logging: !wasLogging }, wasLogging ? 'dirty-page logging off (migration ended)' : 'dirty-page logging on (live migration)');
    }
    // Without bit 30 every ring is enabled at once; with it, SET_FEATURES leaves enable state alone.
    if (!hasBit(v, VHOST_USER_F_PROTOCOL_FEATURES)) for (const r of this.vrings) r.setEnabled(true);
    this.log.debug({ features: virtioFeatureNames(this.ackedFeatures) }, 'features set');
    return null;
  }

  private setOwner(): null {
    this.owner = true;
    return null;
  }

  private resetOwner(): null {
    // Deprecated (vhost-user spec, VHOST_USER_RESET_OWNER): treat as "stop everything" without dropping the connection.
    for (const r of this.vrings) r.release();
    this.owner = false;
    return null;
  }

  private setProtocolFeatures(msg: Message): null {
    const v = readU64Big(msg.payload, msg.request);
    const offered = protocolFeaturesFor(this.device.kind);
    if (v & ~offered) this.limited.warn('protocol-features', { unknown: protocolFeatureNames(v & ~offered) }, 'front-end acked protocol features that were not offered; ignored');
    this.protocolFeatures = v & offered;
    return null;
  }

  private get eventIdx(): boolean {
    return hasBit(this.ackedFeatures, VIRTIO_RING_F_EVENT_IDX);
  }

  private get indirect(): boolean {
    return hasBit(this.ackedFeatures, VIRTIO_RING_F_INDIRECT_DESC);
  }

  /** SET_MEM_TABLE replaces the whole table; it may arrive with rings running (docs/protocol.md §4). */
  private setMemTable(msg: Message): null | Promise<null> {
    const descs = decodeMemTable(msg.payload, msg.request);
    this.expectFds(msg, descs.length);
    checkRegionFds(this.native, msg.request, descs, msg.fds, this.limits.maxGuestMemory);
    const fds = msg.fds.splice(0);
    return this.mapThen('SET_MEM_TABLE', descs.map((desc, i) => ({ desc, fd: fds[i] })), (windows) => {
      this.installMemory(descs.map((desc, i) => ({ desc, windows: windows[i] })), this.regions);
      return null;
    });
  }

  /**
   * Map a table's regions (over several event-loop turns when it is large: mapRegions), close their fds (the
   * mappings keep the memory), then `install`. Synchronous for tables of a few GiB; the connection reads no further
   * request while a promise is pending, and the rings keep serving the old memory until `install` swaps it.
   */
  private mapThen(req: string, items: { desc: RegionDescriptor; fd: number }[], install: (windows: MemoryRegion[][]) => null): null | Promise<null> {
    const fds = items.map((it) => it.fd);
    const failed = (err: unknown): never => {
      throw new VhostError('ERR_MEM_MAP', `${req}: cannot map region: ${(err as Error).message}`, { cause: err });
    };
    let r: MemoryRegion[][] | Promise<MemoryRegion[][]>;
    try {
      r = mapRegions(this.native, items, MAP_WINDOWS_PER_TURN, () => this.released);
    } catch (err) {
      closeAll(this.native, fds);
      return failed(err);
    }
    if (!(r instanceof Promise)) {
      closeAll(this.native, fds);
      return install(r);
    }
    this.log.debug({ req }, 'large memory table: mapped over several event-loop turns');
    return r.then(
      (windows) => {
        closeAll(this.native, fds);
        if (this.released) {
          for (const w of windows) unmapRegions(this.native, w);
          return failed(new Error('the connection closed while its memory was being mapped'));
        }
        return install(windows);
      },
      (err: unknown) => {
        closeAll(this.native, fds);
        return failed(err);
      },
    );
  }

  private addMemReg(msg: Message): null | Promise<null> {
    const desc = decodeSingleRegion(msg.payload, msg.request);
    this.expectFds(msg, 1);
    checkRegionFds(this.native, msg.request, [desc], msg.fds, this.memoryBudget(desc));
    const [fd] = msg.fds.splice(0);
    // QEMU 7.2 sends the same region once per queue pair: an identical region is acked, not mapped twice.
    if (this.regions.some((r) => sameRegion(r.desc, desc))) {
      closeAll(this.native, [fd]);
      return null;
    }
    if (this.regions.length >= MAX_MEM_SLOTS) {
      closeAll(this.native, [fd]);
      throw new VhostError('ERR_VU_BAD_PAYLOAD', `ADD_MEM_REG: more than ${MAX_MEM_SLOTS} regions`);
    }
    return this.mapThen('ADD_MEM_REG', [{ desc, fd }], ([windows]) => {
      this.installMemory([...this.regions, { desc, windows }], []);
      return null;
    });
  }

  private remMemReg(msg: Message): null {
    const desc = decodeSingleRegion(msg.payload, msg.request);
    if (msg.fds.length > 1) this.expectFds(msg, 1); // a stray fd MAY come along; the connection closes it
    const gone = this.regions.filter((r) => sameRegion(r.desc, desc));
    if (gone.length === 0) {
      // Already removed (QEMU 7.2 repeats per queue pair): ack.
      return null;
    }
    this.installMemory(this.regions.filter((r) => !gone.includes(r)), gone);
    return null;
  }

  /** Switch to a new region set: validate, remap started rings, then unmap what is no longer used. */
  private installMemory(next: MappedRegion[], retire: MappedRegion[]): void {
    let mem: GuestMemory | null = null;
    if (next.length > 0) {
      try {
        mem = new GuestMemory(next.flatMap((m) => m.windows));
      } catch (err) {
        const fresh = next.filter((m) => !this.regions.includes(m));
        for (const m of fresh) unmapRegions(this.native, m.windows);
        throw err;
      }
    }
    this.mem = mem;
    this.regions = next;
    this.applyDirtyLog();
    try {
      for (const r of this.vrings) {
        if (!r.started) continue;
        if (mem) r.remap(mem, this.eventIdx, this.indirect);
        else r.stop();
      }
    } finally {
      for (const m of retire) if (!next.includes(m)) unmapRegions(this.native, m.windows);
    }
  }

  /** SET_LOG_BASE: map the front-end's dirty bitmap; reply u64 0 (QEMU 7.2 waits for a reply). */
  private setLogBase(msg: Message): Uint8Array {
    expectSize(msg.payload, 16, msg.request);
    this.expectFds(msg, 1);
    const dv = new DataView(msg.payload.buffer, msg.payload.byteOffset, 16);
    const size = readU64(dv, 0, msg.request, 'mmap_size');
    const offset = readU64(dv, 8, msg.request, 'mmap_offset');
    checkAreaFd(this.native, msg.request, msg.fds[0], offset, size, 'ERR_VU_BAD_FDS');
    const [fd] = msg.fds.splice(0);
    if (size === 0 || size > 2 ** 32) {
      closeAll(this.native, [fd]);
      throw new VhostError('ERR_VU_BAD_PAYLOAD', `SET_LOG_BASE: log size ${size} outside 1..4 GiB`);
    }
    let buf: ArrayBuffer;
    try {
      buf = this.native.mmapShared(fd, size, offset, true);
    } catch (err) {
      throw new VhostError('ERR_MEM_MAP', `SET_LOG_BASE: cannot map the log: ${(err as Error).message}`, { cause: err });
    } finally {
      closeAll(this.native, [fd]);
    }
    const old = this.logBuffer;
    this.logBuffer = buf;
    this.dirtyLog = new DirtyLog(new Uint8Array(buf));
    this.applyDirtyLog();
    if (old) this.native.munmap(old);
    this.log.debug({ size }, 'dirty log mapped');
    return u64Payload(0);
  }

  /** Logging is on when LOG_ALL is acked and a log is mapped; the memory carries it to every writer. */
  private applyDirtyLog(): void {
    if (this.mem) this.mem.dirtyLog = hasBit(this.ackedFeatures, VHOST_F_LOG_ALL) ? this.dirtyLog : null;
  }

  private dropMemory(): void {
    for (const v of this.vrings) v.inflight = null;
    if (this.inflightBuffer) this.native.munmap(this.inflightBuffer);
    this.inflightBuffer = null;
    if (this.logBuffer) this.native.munmap(this.logBuffer);
    this.logBuffer = null;
    this.dirtyLog = null;
    for (const m of this.regions) unmapRegions(this.native, m.windows);
    this.regions = [];
    this.mem = null;
  }

  private setVringNum(msg: Message): null {
    const s = decodeVringState(msg.payload, msg.request);
    const v = this.vring(s.index, msg.request);
    if (s.num === 0 || s.num > MAX_QUEUE_SIZE || (s.num & (s.num - 1)) !== 0) {
      throw new VhostError('ERR_VU_BAD_PAYLOAD', `SET_VRING_NUM: vring ${s.index} size ${s.num} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
    }
    if (v.started) throw new VhostError('ERR_VU_PROTOCOL', `SET_VRING_NUM: vring ${s.index} is running`);
    v.num = s.num;
    return null;
  }

  private setVringAddr(msg: Message): null {
    const a = decodeVringAddr(msg.payload, msg.request);
    const v = this.vring(a.index, msg.request);
    v.addr = a;
    // A running ring may get new addresses (migration logging toggles flags): re-resolve the views.
    if (v.started && this.mem) v.remap(this.mem, this.eventIdx, this.indirect);
    return null;
  }

  private setVringBase(msg: Message): null {
    const s = decodeVringState(msg.payload, msg.request);
    const v = this.vring(s.index, msg.request);
    if (s.num > 0xffff) throw new VhostError('ERR_VU_BAD_PAYLOAD', `SET_VRING_BASE: vring ${s.index} base ${s.num} is not a split-ring index`);
    v.base = s.num;
    return null;
  }

  /** Stop the ring; with requests in flight (blk) the reply waits until they completed. */
  private getVringBase(msg: Message): Uint8Array | Promise<Uint8Array> {
    const s = decodeVringState(msg.payload, msg.request);
    const v = this.vring(s.index, msg.request);
    const drain = v.quiesce();
    if (drain) {
      this.log.debug({ vq: s.index }, 'GET_VRING_BASE waits for in-flight requests');
      return drain.then(() => encodeVringState({ index: s.index, num: v.stop() }));
    }
    return encodeVringState({ index: s.index, num: v.stop() });
  }

  private setVringFd(msg: Message, which: 'kick' | 'call' | 'err'): null {
    const f = decodeVringFile(msg.payload, msg.request);
    this.expectFds(msg, f.noFd ? 0 : 1);
    const v = this.vring(f.index, msg.request);
    checkVringFd(this.native, msg.request, f.index, msg.fds[0], which);
    const fd = f.noFd ? -1 : msg.fds.splice(0)[0];
    if (which === 'call') v.setCallFd(fd);
    else if (which === 'err') v.setErrFd(fd);
    else {
      v.setKickFd(fd, f.noFd);
      if (!this.mem) throw new VhostError('ERR_VU_BAD_VRING', `SET_VRING_KICK: vring ${f.index} started before SET_MEM_TABLE`);
      if (!v.addr || v.num === 0) throw new VhostError('ERR_VU_BAD_VRING', `SET_VRING_KICK: vring ${f.index} has no size or addresses`);
      // Without bit 30 a ring is enabled when it starts (vhost-user spec, "Ring states"; DPDK enables at kick).
      if (!hasBit(this.ackedFeatures, VHOST_USER_F_PROTOCOL_FEATURES) && this.featuresSet) v.enabled = true;
      v.start(this.mem, this.eventIdx, this.indirect); // throws ERR_VQ_RING_ADDR: ring outside guest memory
    }
    return null;
  }

  private setVringEnable(msg: Message): null {
    const s = decodeVringState(msg.payload, msg.request);
    const v = this.vring(s.index, msg.request);
    if (s.num > 1) throw new VhostError('ERR_VU_BAD_PAYLOAD', `SET_VRING_ENABLE: vring ${s.index} num ${s.num}, expected 0 or 1`);
    v.setEnabled(s.num === 1);
    return null;
  }

  private netSetMtu(msg: Message): null {
    const mtu = Number(readU64Big(msg.payload, msg.request));
    const reason = this.device.setMtu(mtu);
    // One line for the operator (the logger carries vm, device and socket); QEMU then refuses to start the device.
    if (reason) throw new VhostError('ERR_VU_PROTOCOL', `NET_SET_MTU ${mtu} refused: ${reason}`);
    this.log.info({ mtu }, 'guest MTU set');
    return null;
  }

  private getConfig(msg: Message): Uint8Array {
    const c = decodeConfig(msg.payload, msg.request);
    const data = this.device.getConfig(c.offset, c.size);
    if (!data) {
      // vhost-user spec, VHOST_USER_GET_CONFIG: size 0 tells the front-end the request failed.
      this.limited.warn('get-config', { offset: c.offset, size: c.size }, 'GET_CONFIG on a device without config space');
      return new Uint8Array(0);
    }
    return encodeConfig(c.offset, c.flags, data);
  }

  private setConfig(msg: Message): null {
    const c = decodeConfig(msg.payload, msg.request);
    if (!this.device.setConfig(c.offset, c.data)) {
      throw new VhostError('ERR_VU_PROTOCOL', `SET_CONFIG offset ${c.offset} size ${c.size} refused`);
    }
    return null;
  }

  /**
   * GET_INFLIGHT_FD: a new zeroed memfd of num_queues * ALIGN_UP(16 * queue_size + 16, 64) bytes on every
   * call, replied as {mmap_size, mmap_offset 0, num_queues, queue_size} with the fd attached.
   * A request we cannot serve gets mmap_size 0: QEMU then carries on without inflight tracking.
   */
  private getInflightFd(msg: Message): Uint8Array {
    const req = decodeInflight(msg);
    const reply = new Uint8Array(24);
    const dv = new DataView(reply.buffer);
    dv.setUint16(16, req.numQueues, true);
    dv.setUint16(18, req.queueSize, true);
    const problem = this.inflightProblem(req.numQueues, req.queueSize);
    if (problem) {
      this.refusedRequests++;
      this.limited.warn('get-inflight', { numQueues: req.numQueues, queueSize: req.queueSize, reason: problem }, 'GET_INFLIGHT_FD refused (mmap_size 0)');
      return reply;
    }
    const size = req.numQueues * inflightQueueBytes(req.queueSize);
    const fd = this.native.memfdCreate(`vhostd-inflight-${this.device.kind}`, size);
    this.replyFds = [fd];
    dv.setBigUint64(0, BigInt(size), true);
    this.log.debug({ numQueues: req.numQueues, queueSize: req.queueSize, size }, 'inflight region created');
    return reply;
  }

  /** SET_INFLIGHT_FD: map the region (QEMU re-sends the same memfd after a back-end restart). */
  private setInflightFd(msg: Message): null {
    const req = decodeInflight(msg);
    this.expectFds(msg, 1);
    checkAreaFd(this.native, msg.request, msg.fds[0], req.mmapOffset, req.mmapSize, 'ERR_VU_PROTOCOL');
    const [fd] = msg.fds.splice(0);
    let buf: ArrayBuffer;
    try {
      const problem = this.inflightProblem(req.numQueues, req.queueSize) ??
        (req.mmapSize < req.numQueues * inflightQueueBytes(req.queueSize) ? `mmap_size ${req.mmapSize} smaller than ${req.numQueues} queues of ${req.queueSize}` : null) ??
        (this.vrings.some((v) => v.started) ? 'rings are running' : null);
      if (problem) throw new VhostError('ERR_VU_PROTOCOL', `SET_INFLIGHT_FD refused: ${problem}`);
      try {
        buf = this.native.mmapShared(fd, req.mmapSize, req.mmapOffset, true);
      } catch (err) {
        throw new VhostError('ERR_MEM_MAP', `SET_INFLIGHT_FD: cannot map the region: ${(err as Error).message}`, { cause: err });
      }
    } finally {
      closeAll(this.native, [fd]);
    }
    const old = this.inflightBuffer;
    this.inflightBuffer = buf;
    const per = inflightQueueBytes(req.queueSize);
    this.vrings.forEach((v, i) => {
      if (i < req.numQueues) {
        v.inflight = new InflightQueue(buf, i * per, req.queueSize);
        v.inflight.setDescNum(req.queueSize);
      } else v.inflight = null;
    });
    if (old) this.native.munmap(old);
    this.log.debug({ numQueues: req.numQueues, queueSize: req.queueSize }, 'inflight region mapped');
    return null;
  }

  private inflightProblem(numQueues: number, queueSize: number): string | null {
    if (!hasBit(this.protocolFeatures, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)) return 'INFLIGHT_SHMFD not negotiated';
    if (numQueues < 1 || numQueues > this.vrings.length) return `num_queues ${numQueues} outside 1..${this.vrings.length}`;
    if (queueSize < 1 || queueSize > MAX_QUEUE_SIZE || (queueSize & (queueSize - 1)) !== 0) return `queue_size ${queueSize} is not a power of two in 1..${MAX_QUEUE_SIZE}`;
    return null;
  }

  private takeAndClose(msg: Message): null {
    if (msg.request === R.SET_BACKEND_REQ_FD) this.expectFds(msg, 1);
    expectSize(msg.payload, msg.payload.length, msg.request);
    return null; // the connection closes the fds left in msg.fds
  }
}

/** The 24-byte inflight payload (not packed: 4 bytes of padding at the end). */
export function decodeInflight(msg: Message): { mmapSize: number; mmapOffset: number; numQueues: number; queueSize: number } {
  expectSize(msg.payload, 24, msg.request);
  const dv = new DataView(msg.payload.buffer, msg.payload.byteOffset, 24);
  return {
    mmapSize: readU64(dv, 0, msg.request, 'mmap_size'),
    mmapOffset: readU64(dv, 8, msg.request, 'mmap_offset'),
    numQueues: dv.getUint16(16, true),
    queueSize: dv.getUint16(18, true),
  };
}

function sameRegion(a: RegionDescriptor, b: RegionDescriptor): boolean {
  return a.gpa === b.gpa && a.uva === b.uva && a.size === b.size;
}
