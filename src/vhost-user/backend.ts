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
import { MAX_QUEUE_SIZE } from '../virtqueue/defs.js';
import { VhostError } from '../util/errors.js';
import { RateLimitedLog, type Logger } from '../util/log.js';
import {
  FrontendRequest as R,
  VHOST_USER_NEED_REPLY_MASK,
  decodeConfig,
  decodeVringAddr,
  decodeVringFile,
  decodeVringState,
  encodeConfig,
  encodeReply,
  encodeVringState,
  expectSize,
  readU64Big,
  requestName,
  u64Payload,
  type Message,
} from './message.js';
import {
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
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
import { DEFAULT_LIMITS, checkVringFd, expectFds, type FrontendLimits } from './fd-checks.js';
import { InflightArea } from './inflight-fd.js';
import { MAX_MEM_SLOTS, MemoryTable } from './memory-table.js';

/** Something that can carry replies back to the front-end. */
export interface ReplySink {
  send(bytes: Uint8Array, fds?: number[]): void;
}

type Handler = (msg: Message) => Uint8Array | null | Promise<Uint8Array | null>;

export class BackendSession {
  readonly vrings: Vring[];
  owner = false;
  /** Virtio features acked by SET_FEATURES (including bit 30 when sent). */
  ackedFeatures = 0n;
  protocolFeatures = 0n;
  /** Whether GET_FEATURES offered bit 30 (REPLY_ACK is gated on the offer, not the ack: docs/protocol.md §1). */
  private offeredProtocolFeatures = false;
  private featuresSet = false;
  /** The memory table and dirty log; memory changes wait in handle() for in-flight requests. */
  private readonly memory: MemoryTable;
  private readonly handlers: Map<number, Handler>;
  private released = false;
  /** Requests refused or ignored (NACKed or answered as failed), for the status output; their log lines are rate-limited. */
  refusedRequests = 0;
  /** A front-end can repeat a refused request in a loop: its warnings are rate-limited per request. */
  private readonly limited: RateLimitedLog;
  /** The inflight region from SET_INFLIGHT_FD, mapped while this session lives. */
  private readonly inflight: InflightArea;
  /** fds to attach to the reply being built (GET_INFLIGHT_FD); closed once sent. */
  private replyFds: number[] = [];

  constructor(
    private readonly native: NativeBinding,
    readonly device: VirtioDevice,
    private readonly out: ReplySink,
    private readonly log: Logger,
    limits: FrontendLimits = DEFAULT_LIMITS,
  ) {
    this.limited = new RateLimitedLog(log);
    this.inflight = new InflightArea(native, log);
    this.memory = new MemoryTable(native, log, limits, {
      released: () => this.released,
      logging: () => hasBit(this.ackedFeatures, VHOST_F_LOG_ALL),
      remapRings: (mem) => {
        for (const r of this.vrings) {
          if (!r.started) continue;
          if (mem) r.remap(mem, this.eventIdx, this.indirect);
          else r.stop();
        }
      },
    });
    this.vrings = Array.from({ length: device.maxQueues }, (_, i) => new Vring(i, native, device, log));
    this.handlers = new Map<number, Handler>([
      [R.GET_FEATURES, () => this.getFeatures()],
      [R.SET_FEATURES, (m) => this.setFeatures(m)],
      [R.SET_OWNER, () => this.setOwner()],
      [R.RESET_OWNER, () => this.resetOwner()],
      [R.GET_PROTOCOL_FEATURES, () => u64Payload(protocolFeaturesFor(this.device.kind))],
      [R.SET_PROTOCOL_FEATURES, (m) => this.setProtocolFeatures(m)],
      [R.SET_MEM_TABLE, (m) => this.memory.setMemTable(m)],
      [R.GET_MAX_MEM_SLOTS, () => u64Payload(MAX_MEM_SLOTS)],
      [R.ADD_MEM_REG, (m) => this.memory.addMemReg(m)],
      [R.REM_MEM_REG, (m) => this.memory.remMemReg(m)],
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
      [R.SET_LOG_BASE, (m) => this.memory.setLogBase(m)],
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
    // Resume only once the change is installed: a large table is mapped over several turns (MemoryTable).
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
    return this.memory.faulted() ?? (this.inflight.faulted() ? 'inflight area' : null);
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
    this.memory.applyDirtyLog();
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

  private dropMemory(): void {
    this.inflight.drop(this.vrings);
    this.memory.drop();
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
    if (v.started && this.memory.mem) v.remap(this.memory.mem, this.eventIdx, this.indirect);
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
    expectFds(msg, f.noFd ? 0 : 1);
    const v = this.vring(f.index, msg.request);
    checkVringFd(this.native, msg.request, f.index, msg.fds[0], which);
    const fd = f.noFd ? -1 : msg.fds.splice(0)[0];
    if (which === 'call') v.setCallFd(fd);
    else if (which === 'err') v.setErrFd(fd);
    else {
      v.setKickFd(fd, f.noFd);
      if (!this.memory.mem) throw new VhostError('ERR_VU_BAD_VRING', `SET_VRING_KICK: vring ${f.index} started before SET_MEM_TABLE`);
      if (!v.addr || v.num === 0) throw new VhostError('ERR_VU_BAD_VRING', `SET_VRING_KICK: vring ${f.index} has no size or addresses`);
      // Without bit 30 a ring is enabled when it starts (vhost-user spec, "Ring states"; DPDK enables at kick).
      if (!hasBit(this.ackedFeatures, VHOST_USER_F_PROTOCOL_FEATURES) && this.featuresSet) v.enabled = true;
      v.start(this.memory.mem, this.eventIdx, this.indirect); // throws ERR_VQ_RING_ADDR: ring outside guest memory
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

  /** GET_INFLIGHT_FD: the fd goes out with the reply; a refusal is answered with mmap_size 0. */
  private getInflightFd(msg: Message): Uint8Array {
    const r = this.inflight.create(msg, this.protocolFeatures, this.vrings.length, this.device.kind);
    if (r.fd === null) {
      this.refusedRequests++;
      this.limited.warn('get-inflight', r.refusal, 'GET_INFLIGHT_FD refused (mmap_size 0)');
    } else this.replyFds = [r.fd];
    return r.reply;
  }

  private setInflightFd(msg: Message): null {
    this.inflight.install(msg, this.protocolFeatures, this.vrings);
    return null;
  }

  private takeAndClose(msg: Message): null {
    if (msg.request === R.SET_BACKEND_REQ_FD) expectFds(msg, 1);
    expectSize(msg.payload, msg.payload.length, msg.request);
    return null; // the connection closes the fds left in msg.fds
  }
}
