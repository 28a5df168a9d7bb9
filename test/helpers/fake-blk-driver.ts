/**
 * FakeBlkDriver: a virtio-blk driver (the guest's side) over a FakeFrontend, GuestRam and N DriverSplitQueues. It
 * negotiates with the sequence QEMU 7.2 vhost-user-blk-pci sends (GET_CONFIG of 57
 * bytes at realize, then the start sequence with ADD_MEM_REG and SET_VRING_ENABLE for every queue), and submits
 * requests as real chains (header, data, status) in memfd guest memory; completions are reaped from the used ring
 * when the call eventfd fires.
 */
import { closeAll, closeQuietly } from '../../src/native/fd.js';
import type { FdWatcher, NativeBinding } from '../../src/native/types.js';
import { POLL_READABLE } from '../../src/native/types.js';
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_PROTOCOL_F_CONFIG,
  VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
  VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD,
  VHOST_USER_PROTOCOL_F_MQ,
  bit,
} from '../../src/vhost-user/features.js';
import { FrontendRequest as R, encodeConfig, requestName } from '../../src/vhost-user/message.js';
import {
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from '../../src/blk/virtio-blk-defs.js';
import { fullFence } from '../../src/virtqueue/barrier.js';
import { FakeFrontend } from './fake-frontend.js';
import { GuestRam } from './guest-ram.js';
import { DriverSplitQueue, type AddChainOptions, type DriverBuf } from './driver-queue.js';

export interface FakeBlkDriverOptions {
  socket: string;
  /** QEMU's num-queues (default 1). */
  numQueues?: number;
  queueSize?: number;
  eventIdx?: boolean;
  /** Features to accept out of the offer (default: everything offered). */
  accept?: (offered: bigint) => bigint;
  regionSize?: number;
  seed?: number;
  /** Use INFLIGHT_SHMFD when offered, as QEMU does (default true). */
  inflight?: boolean;
  /** Called with the inflight memfd between GET_INFLIGHT_FD and SET_INFLIGHT_FD (tests plant states). */
  onInflightFd?: (fd: number, size: number) => void;
  /** Fill every status byte with 0xff before the chain is made available (a status never written shows). */
  poisonStatus?: boolean;
}

export interface BlkCompletion {
  status: number;
  /** used.len the device reported. */
  usedLen: number;
  /** The data bytes the device wrote (IN, GET_ID), status excluded. */
  data: Uint8Array;
}

export interface RawRequest {
  /** Buffers of the chain, in order (header, data..., status), as DriverBuf. */
  bufs: DriverBuf[];
  opts?: AddChainOptions;
}

interface Pending {
  resolve: (c: BlkCompletion) => void;
  dataLen: number;
}

/** A 16-byte request header. */
export function blkHeader(type: number, sector: number | bigint): Uint8Array {
  const h = new Uint8Array(16);
  const dv = new DataView(h.buffer);
  dv.setUint32(0, type >>> 0, true);
  dv.setBigUint64(8, BigInt(sector), true);
  return h;
}

/** DISCARD / WRITE_ZEROES segments. */
export function blkSegments(segs: { sector: number; count: number; flags?: number }[]): Uint8Array {
  const b = new Uint8Array(16 * segs.length);
  const dv = new DataView(b.buffer);
  segs.forEach((s, i) => {
    dv.setBigUint64(16 * i, BigInt(s.sector), true);
    dv.setUint32(16 * i + 8, s.count, true);
    dv.setUint32(16 * i + 12, s.flags ?? 0, true);
  });
  return b;
}

export class FakeBlkDriver {
  fe: FakeFrontend;
  readonly ram: GuestRam;
  readonly native: NativeBinding;
  readonly queues: DriverSplitQueue[] = [];
  readonly kickFds: number[] = [];
  readonly callFds: number[] = [];
  readonly numQueues: number;
  offered = 0n;
  acked = 0n;
  protocol = 0n;
  queueNum = 0n;
  /** The config bytes GET_CONFIG returned at realize. */
  config: Uint8Array = new Uint8Array(0);
  private readonly pending: Map<number, Pending>[] = [];
  private callWatchers: FdWatcher[] = [];
  private waiters: (() => void)[] = [];
  private readonly accept: (offered: bigint) => bigint;
  private readonly useInflight: boolean;
  private readonly onInflightFd?: (fd: number, size: number) => void;
  /** The inflight memfd QEMU keeps across back-end restarts (-1: none yet). */
  inflightFd = -1;
  inflightSize = 0;
  /** Used entries whose head had no request pending: a completion seen twice, or for nothing. */
  strayCompletions = 0;
  /** Completions taken off the used rings, per head id (exactly-once checks). */
  readonly completionsByHead = new Map<string, number>();
  private readonly socket: string;
  private closed = false;
  private readonly poisonStatus: boolean;

  constructor(o: FakeBlkDriverOptions) {
    this.socket = o.socket;
    this.poisonStatus = o.poisonStatus ?? false;
    this.useInflight = o.inflight ?? true;
    this.onInflightFd = o.onInflightFd;
    this.numQueues = o.numQueues ?? 1;
    this.accept = o.accept ?? ((x) => x);
    this.fe = FakeFrontend.connect(o.socket);
    this.native = this.fe.native;
    this.ram = new GuestRam({ regionSize: o.regionSize ?? 16 * 1024 * 1024, regions: 2 });
    const size = o.queueSize ?? 128;
    let alloc: DriverSplitQueue['alloc'] | undefined;
    for (let q = 0; q < this.numQueues; q++) {
      const dq = new DriverSplitQueue({ mem: this.ram.mem, size, eventIdx: o.eventIdx ?? true, seed: (o.seed ?? 1) + q, alloc });
      alloc = dq.alloc;
      this.queues.push(dq);
      this.kickFds.push(this.native.eventfd(0));
      this.callFds.push(this.native.eventfd(0));
      this.pending.push(new Map());
    }
  }

  /** Realize: the connect sequence and GET_CONFIG(0, 57). */
  async realize(): Promise<void> {
    await this.connectSequence();
    this.config = await this.getConfig(0, 57);
  }

  /** The connect sequence (also what QEMU sends on a reconnect, without GET_CONFIG). */
  private async connectSequence(): Promise<void> {
    const fe = this.fe;
    this.offered = await fe.getFeatures();
    const pf = await fe.getProtocolFeatures();
    if (!(pf & bit(VHOST_USER_PROTOCOL_F_CONFIG))) throw new Error('vhost-user device expecting VHOST_USER_PROTOCOL_F_CONFIG');
    this.protocol = pf & 0x1ffffn;
    await fe.setProtocolFeatures(this.protocol);
    if (pf & bit(VHOST_USER_PROTOCOL_F_MQ)) {
      this.queueNum = await fe.getQueueNum();
      if (this.queueNum < BigInt(this.numQueues)) throw new Error(`The maximum number of queues supported by the backend is ${this.queueNum}`);
    }
    if (pf & bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) await fe.getMaxMemSlots();
    fe.setOwner();
    await fe.getFeatures();
    for (let q = 0; q < this.numQueues; q++) {
      fe.setVringCall(q, this.callFds[q]);
      fe.setVringErr(q, null);
    }
  }

  async getConfig(offset: number, size: number): Promise<Uint8Array> {
    const p = await this.fe.call(R.GET_CONFIG, encodeConfig(offset, 0, new Uint8Array(size)));
    if (p.length !== 12 + size) throw new Error(`GET_CONFIG reply of ${p.length} bytes, expected ${12 + size}`);
    return p.slice(12);
  }

  /** SET_CONFIG (NEED_REPLY with REPLY_ACK): returns the ack (0 = accepted). */
  async setConfig(offset: number, data: Uint8Array): Promise<bigint> {
    return this.fe.ack(R.SET_CONFIG, encodeConfig(offset, 0, data));
  }

  /** Guest driver load: the start sequence. `bases`: SET_VRING_BASE per queue (default 0). */
  async start(bases?: number[]): Promise<void> {
    const fe = this.fe;
    this.acked = this.accept(this.offered) & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
    fe.setFeatures(this.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES));
    if (this.useInflight && this.protocol & bit(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)) {
      if (this.inflightFd < 0) {
        const r = await this.getInflightFd(this.numQueues, this.queues[0].size);
        if (r.fd < 0 || r.mmapSize === 0) throw new Error('GET_INFLIGHT_FD gave no region');
        this.inflightFd = r.fd;
        this.inflightSize = r.mmapSize;
        this.onInflightFd?.(r.fd, r.mmapSize);
      }
      this.setInflightFd(this.inflightFd, this.inflightSize, this.numQueues, this.queues[0].size);
    }
    for (let q = 0; q < this.numQueues; q++) fe.setVringCall(q, this.callFds[q]);
    fe.setFeatures(this.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES));
    for (const r of this.ram.regions) {
      const ack = await fe.addMemReg(r, this.ram.fd);
      if (ack !== 0n) throw new Error(`ADD_MEM_REG nack ${ack}`);
    }
    for (let q = 0; q < this.numQueues; q++) this.startVring(q, bases?.[q] ?? 0);
    for (let q = 0; q < this.numQueues; q++) fe.setVringEnable(q, true);
    await fe.getQueueNum(); // round trip: all of the above processed
    for (let q = 0; q < this.numQueues; q++) {
      this.callWatchers.push(
        this.native.watch(this.callFds[q], POLL_READABLE, () => {
          this.native.eventfdRead(this.callFds[q]);
          this.reap(q);
        }),
      );
    }
  }

  /** GET_INFLIGHT_FD: the reply and the fd attached to it (-1 when none). */
  async getInflightFd(numQueues: number, queueSize: number): Promise<{ mmapSize: number; numQueues: number; queueSize: number; fd: number }> {
    const p = await this.fe.call(R.GET_INFLIGHT_FD, inflightPayload(0, numQueues, queueSize));
    if (p.length !== 24) throw new Error(`GET_INFLIGHT_FD reply of ${p.length} bytes, expected 24`);
    const dv = new DataView(p.buffer, p.byteOffset, 24);
    const fds = this.fe.takeReplyFds();
    return { mmapSize: Number(dv.getBigUint64(0, true)), numQueues: dv.getUint16(16, true), queueSize: dv.getUint16(18, true), fd: fds[0] ?? -1 };
  }

  setInflightFd(fd: number, size: number, numQueues: number, queueSize: number): void {
    this.fe.send(R.SET_INFLIGHT_FD, inflightPayload(size, numQueues, queueSize), { fds: [fd] });
  }

  /**
   * The back-end went away (killed, or the socket closed): stop watching, as QEMU's disconnect does; ring memory,
   * requests in flight and the inflight memfd are kept.
   */
  disconnect(): void {
    for (const w of this.callWatchers) w.close();
    this.callWatchers = [];
    this.fe.close();
  }

  /**
   * QEMU 7.2 blk reconnect: connect again, the connect sequence without GET_CONFIG, then the start
   * sequence with SET_INFLIGHT_FD of the same memfd and SET_VRING_BASE = used.idx. Requests still pending
   * complete when the back-end resubmits them.
   */
  async reconnect(socket = this.socket): Promise<void> {
    this.disconnect();
    this.fe = FakeFrontend.connect(socket);
    await this.connectSequence();
    await this.start(this.queues.map((dq) => dq.usedIdx()));
  }

  startVring(q: number, base: number): void {
    const dq = this.queues[q];
    this.fe.setVringNum(q, dq.size);
    this.fe.setVringBase(q, base);
    this.fe.setVringAddr(q, { descUva: dq.descUva, availUva: dq.availUva, usedUva: dq.usedUva });
    this.fe.setVringKick(q, this.kickFds[q]);
  }

  /** Post a raw chain; resolves when the device completes it. `dataLen`: writable data bytes before the status. */
  submitRaw(q: number, req: RawRequest, dataLen = 0, kick = true): Promise<BlkCompletion> {
    const dq = this.queues[q];
    const head = dq.addChain(req.bufs, this.poisonStatus ? { ...req.opts, noPublish: true } : req.opts);
    if (this.poisonStatus) {
      const status = dq.chains.get(head)!.bufs.at(-1)!;
      dq.dm.write(status.gpa + status.len - 1, Uint8Array.of(0xff));
      if (!req.opts?.noPublish) dq.publish([head]);
    }
    // The timer also keeps the event loop alive (the native fd watchers do not).
    const p = new Promise<BlkCompletion>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`request (head ${head}, queue ${q}) not completed within 10 s`)), 10_000);
      this.pending[q].set(head, {
        resolve: (c) => {
          clearTimeout(t);
          resolve(c);
        },
        dataLen,
      });
    });
    if (kick && dq.needsKick()) this.native.eventfdWrite(this.kickFds[q], 1);
    return p;
  }

  /** Kick queue q if the device asked for kicks (after submits with kick = false). */
  kick(q = 0): void {
    if (this.queues[q].needsKick()) this.native.eventfdWrite(this.kickFds[q], 1);
  }

  read(sector: number, len: number, q = 0, opts: { kick?: boolean; split?: number } = {}): Promise<BlkCompletion> {
    const data: DriverBuf[] = splitLen(len, opts.split ?? len).map((l) => ({ len: l, write: true }));
    return this.submitRaw(q, { bufs: [{ len: 16, write: false, data: blkHeader(VIRTIO_BLK_T_IN, sector) }, ...data, { len: 1, write: true }] }, len, opts.kick ?? true);
  }

  write(sector: number, data: Uint8Array, q = 0, opts: { kick?: boolean; split?: number } = {}): Promise<BlkCompletion> {
    const parts: DriverBuf[] = [];
    let o = 0;
    for (const l of splitLen(data.length, opts.split ?? data.length)) {
      parts.push({ len: l, write: false, data: data.slice(o, o + l) });
      o += l;
    }
    return this.submitRaw(q, { bufs: [{ len: 16, write: false, data: blkHeader(VIRTIO_BLK_T_OUT, sector) }, ...parts, { len: 1, write: true }] }, 0, opts.kick ?? true);
  }

  flush(q = 0): Promise<BlkCompletion> {
    return this.submitRaw(q, { bufs: [{ len: 16, write: false, data: blkHeader(VIRTIO_BLK_T_FLUSH, 0) }, { len: 1, write: true }] });
  }

  getId(q = 0, len = 20): Promise<BlkCompletion> {
    return this.submitRaw(q, { bufs: [{ len: 16, write: false, data: blkHeader(VIRTIO_BLK_T_GET_ID, 0) }, { len, write: true }, { len: 1, write: true }] }, len);
  }

  discard(segs: { sector: number; count: number; flags?: number }[], q = 0): Promise<BlkCompletion> {
    return this.segmentRequest(VIRTIO_BLK_T_DISCARD, segs, q);
  }

  writeZeroes(segs: { sector: number; count: number; flags?: number }[], q = 0): Promise<BlkCompletion> {
    return this.segmentRequest(VIRTIO_BLK_T_WRITE_ZEROES, segs, q);
  }

  private segmentRequest(type: number, segs: { sector: number; count: number; flags?: number }[], q: number): Promise<BlkCompletion> {
    return this.submitRaw(q, { bufs: [{ len: 16, write: false, data: blkHeader(type, 0) }, { len: 16 * segs.length, write: false, data: blkSegments(segs) }, { len: 1, write: true }] });
  }

  /** Take completions off queue q's used ring. */
  reap(q: number): void {
    const dq = this.queues[q];
    for (;;) {
      this.reapOnce(q);
      if (!dq.eventIdx) break;
      // Linux virtqueue_enable_cb: used_event = next used index to see, fence, re-check.
      dq.setUsedEvent(dq.lastUsed);
      fullFence();
      if (dq.usedIdx() === dq.lastUsed) break;
    }
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private reapOnce(q: number): void {
    const dq = this.queues[q];
    const end = dq.usedIdx();
    for (let i = dq.lastUsed; i !== end; i = (i + 1) & 0xffff) {
      const e = dq.usedElem(i);
      const p = this.pending[q].get(e.id);
      const key = `${q}:${e.id}`;
      this.completionsByHead.set(key, (this.completionsByHead.get(key) ?? 0) + 1);
      if (!p) {
        this.strayCompletions++;
        continue;
      }
      const all = dq.readBuffer(e.id);
      this.pending[q].delete(e.id);
      p.resolve({ status: all.length ? all[all.length - 1] : -1, usedLen: e.len, data: all.slice(0, Math.min(p.dataLen, all.length - 1)) });
    }
    dq.collectUsed(end); // only what was looked at: a back-end in another process may have published more since

  }

  /** Requests posted and not completed. */
  outstanding(q = 0): number {
    return this.pending[q].size;
  }

  /** GET_VRING_BASE for queue q (QEMU's stop), preceded by SET_VRING_ENABLE(q, 0). */
  async stopQueue(q: number): Promise<number> {
    this.fe.setVringEnable(q, false);
    return (await this.fe.getVringBase(q)).num;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeQuietly(this.native, this.inflightFd);
    this.inflightFd = -1;
    for (const w of this.callWatchers) w.close();
    this.callWatchers = [];
    this.fe.close();
    closeAll(this.native, this.kickFds);
    closeAll(this.native, this.callFds);
    this.ram.close();
  }
}

function inflightPayload(mmapSize: number, numQueues: number, queueSize: number): Uint8Array {
  const p = new Uint8Array(24);
  const dv = new DataView(p.buffer);
  dv.setBigUint64(0, BigInt(mmapSize), true);
  dv.setUint16(16, numQueues, true);
  dv.setUint16(18, queueSize, true);
  return p;
}

function splitLen(len: number, piece: number): number[] {
  const out: number[] = [];
  for (let o = 0; o < len; o += piece) out.push(Math.min(piece, len - o));
  return out;
}

export { requestName };
