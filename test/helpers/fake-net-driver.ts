/**
 * FakeNetDriver: a virtio-net driver (the guest's side) over a FakeFrontend, GuestRam and two DriverSplitQueues
 * (RX = 0, TX = 1). Like a real driver it owns one fixed buffer per descriptor and recycles it, so it can push
 * millions of frames. It negotiates with the sequence QEMU 7.2 or DPDK 22.11 sends (docs/protocol.md §4),
 * sends frames (kicking only when the device asks: NO_NOTIFY / avail_event), and receives frames
 * either by polling or interrupt-only (sleeping on the call eventfd).
 */
import { closeAll } from '../../src/native/fd.js';
import type { FdWatcher, NativeBinding } from '../../src/native/types.js';
import { POLL_READABLE } from '../../src/native/types.js';
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_PROTOCOL_F_MQ,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VHOST_USER_PROTOCOL_F_STATUS,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
} from '../../src/vhost-user/features.js';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/virtqueue/defs.js';
import { FrontendRequest, u64Payload } from '../../src/vhost-user/message.js';
import { fullFence } from '../../src/virtqueue/barrier.js';
import { FakeFrontend } from './fake-frontend.js';
import { GuestRam } from './guest-ram.js';
import { DriverSplitQueue } from './driver-queue.js';

export type NegotiationSequence = 'qemu' | 'dpdk';

export interface FakeNetDriverOptions {
  socket: string;
  sequence?: NegotiationSequence;
  queueSize?: number;
  eventIdx?: boolean;
  mrgRxbuf?: boolean;
  /** Size of each RX buffer (default 2048; small values force MRG_RXBUF chains). */
  rxBufSize?: number;
  /** Largest frame this driver sends (TX buffer size = 12 + this). */
  maxFrame?: number;
  /** Send the virtio-net header and the frame in two descriptors. */
  splitTxHeader?: boolean;
  /** Put one TX and one RX buffer across the end of the first memory region. */
  across?: boolean;
  /** Do not post RX buffers at start (tests of "no RX buffer"). */
  noRxBuffers?: boolean;
  seed?: number;
  /** Region size of the guest RAM (default 8 MiB). */
  regionSize?: number;
  /**
   * Accept VIRTIO_NET_F_MTU and send NET_SET_MTU(mtu) at "DRIVER_OK", as QEMU does with host_mtu; a NACK
   * makes start() fail, as QEMU refuses to start the device.
   */
  mtu?: number;
  /**
   * Extra feature bits to accept when offered, e.g. the offloads: bit(VIRTIO_NET_F_CSUM) |
   * bit(VIRTIO_NET_F_HOST_TSO4) ... Default none.
   */
  features?: bigint;
}

/** A virtio-net header's fields (num_buffers excluded), for send() and header(). */
export interface VnetHdr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export function parseVnetHdr(b: Uint8Array): VnetHdr {
  const u16 = (o: number) => b[o] | (b[o + 1] << 8);
  return { flags: b[0], gsoType: b[1], hdrLen: u16(2), gsoSize: u16(4), csumStart: u16(6), csumOffset: u16(8) };
}

const HDR = 12;

export class FakeNetDriver {
  readonly fe: FakeFrontend;
  readonly ram: GuestRam;
  readonly native: NativeBinding;
  readonly rx: DriverSplitQueue;
  readonly tx: DriverSplitQueue;
  readonly kickFds: number[];
  readonly callFds: number[];
  readonly opts: Required<Omit<FakeNetDriverOptions, 'socket' | 'seed' | 'regionSize' | 'mtu' | 'features'>>;
  readonly extraFeatures: bigint;
  /** The virtio-net header each received frame came with (see header()). */
  private readonly hdrs = new WeakMap<Uint8Array, VnetHdr>();
  readonly mtu: number | undefined;
  /** GPA of the fixed buffer behind each descriptor. */
  readonly rxBuf: number[] = [];
  private readonly txBuf: number[] = [];
  private readonly txFree: number[] = [];
  /** Frames received and not yet taken by the test. */
  readonly received: Uint8Array[] = [];
  kicks = 0;
  calls = 0;
  private callWatchers: FdWatcher[] = [];
  private waiters: (() => void)[] = [];
  private pendingRx: Uint8Array[] = [];
  private pendingRxLeft = 0;
  acked = 0n;

  constructor(o: FakeNetDriverOptions) {
    this.opts = {
      sequence: o.sequence ?? 'qemu',
      queueSize: o.queueSize ?? 256,
      eventIdx: o.eventIdx ?? false,
      mrgRxbuf: o.mrgRxbuf ?? true,
      rxBufSize: o.rxBufSize ?? 2048,
      maxFrame: o.maxFrame ?? 1514,
      splitTxHeader: o.splitTxHeader ?? false,
      across: o.across ?? false,
      noRxBuffers: o.noRxBuffers ?? false,
    };
    this.mtu = o.mtu;
    this.extraFeatures = o.features ?? 0n;
    this.fe = FakeFrontend.connect(o.socket);
    this.native = this.fe.native;
    this.ram = new GuestRam({
      regionSize: o.regionSize ?? 8 * 1024 * 1024,
      regions: this.opts.across ? 3 : 2,
      gpaEqualsUva: this.opts.sequence === 'dpdk',
    });
    const size = this.opts.queueSize;
    this.rx = new DriverSplitQueue({ mem: this.ram.mem, size, eventIdx: this.opts.eventIdx, seed: o.seed ?? 1 });
    this.tx = new DriverSplitQueue({ mem: this.ram.mem, size, eventIdx: this.opts.eventIdx, seed: (o.seed ?? 1) + 1, alloc: this.rx.alloc });
    for (let i = 0; i < size; i++) {
      const across = this.opts.across && i === 1;
      this.rxBuf.push(across ? this.rx.alloc.allocAcross(this.opts.rxBufSize) : this.rx.alloc.alloc(this.opts.rxBufSize, 8));
      this.txBuf.push(across ? this.rx.alloc.allocAcross(HDR + this.opts.maxFrame) : this.rx.alloc.alloc(HDR + this.opts.maxFrame, 8));
    }
    // With a split header, descriptor pairs (2k, 2k+1) form one TX chain.
    const step = this.opts.splitTxHeader ? 2 : 1;
    for (let i = 0; i + step <= size; i += step) this.txFree.push(i);
    this.kickFds = [this.native.eventfd(0), this.native.eventfd(0)];
    this.callFds = [this.native.eventfd(0), this.native.eventfd(0)];
  }

  /** The features this driver accepts out of what the device offers. */
  private wanted(offered: bigint): bigint {
    let want = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_INDIRECT_DESC);
    if (this.opts.mrgRxbuf) want |= bit(VIRTIO_NET_F_MRG_RXBUF);
    if (this.opts.eventIdx) want |= bit(VIRTIO_RING_F_EVENT_IDX);
    if (this.mtu !== undefined) want |= bit(VIRTIO_NET_F_MTU);
    want |= this.extraFeatures;
    return offered & want;
  }

  /** Connect and start both queues with the chosen front-end's message sequence. */
  async start(): Promise<void> {
    if (this.opts.sequence === 'qemu') await this.startQemu();
    else await this.startDpdk();
    for (let q = 0; q < 2; q++) {
      const w = this.native.watch(this.callFds[q], POLL_READABLE, () => {
        if (this.native.eventfdRead(this.callFds[q]) > 0) this.calls++;
        if (q === 0 && this.napi) this.napiInterrupt();
        this.wake();
      });
      this.callWatchers.push(w);
    }
    if (!this.opts.noRxBuffers) this.postRxBuffers(this.opts.queueSize);
  }

  /** QEMU 7.2 virtio-net-pci + vhost-user netdev, with CONFIGURE_MEM_SLOTS: ADD_MEM_REG per region. */
  private async startQemu(): Promise<void> {
    const fe = this.fe;
    const { offered, memSlots } = await fe.qemuNetInit(this.callFds);
    // Guest driver writes its features: rings enabled before any SET_FEATURES (docs/protocol.md §4).
    fe.setVringEnable(0, true);
    fe.setVringEnable(1, true);
    this.acked = this.wanted(offered);
    // DRIVER_OK: NET_SET_MTU first when the guest accepted F_MTU (virtio_net_vhost_status), then vhost_net_start.
    if (this.mtu !== undefined && (this.acked & bit(VIRTIO_NET_F_MTU)) !== 0n) await this.setMtu(this.mtu);
    fe.setVringEnable(0, true);
    fe.setVringEnable(1, true);
    fe.setFeatures(this.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES));
    if (memSlots) {
      for (const r of this.ram.regions) {
        const ack = await fe.addMemReg(r, this.ram.fd);
        if (ack !== 0n) throw new Error(`ADD_MEM_REG nack ${ack}`);
      }
    } else {
      const ack = await fe.setMemTable(this.ram.regions, this.ram.fds());
      if (ack !== 0n) throw new Error(`SET_MEM_TABLE nack ${ack}`);
    }
    for (let q = 0; q < 2; q++) this.startVring(q, 0);
    await fe.getQueueNum(); // round trip: everything above has been processed
  }

  /** DPDK 22.11 net_virtio_user: SET_OWNER first, SET_MEM_TABLE at DRIVER_OK, enable after kick. */
  private async startDpdk(): Promise<void> {
    const fe = this.fe;
    fe.setOwner();
    const offered = await fe.getFeatures();
    const pf = await fe.getProtocolFeatures();
    await fe.setProtocolFeatures(pf & (bit(VHOST_USER_PROTOCOL_F_MQ) | bit(VHOST_USER_PROTOCOL_F_REPLY_ACK) | bit(VHOST_USER_PROTOCOL_F_STATUS)));
    for (let q = 0; q < 2; q++) fe.setVringCall(q, this.callFds[q]);
    this.acked = this.wanted(offered);
    fe.setFeatures(this.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES));
    const ack = await fe.setMemTable(this.ram.regions, this.ram.fds());
    if (ack !== 0n) throw new Error(`SET_MEM_TABLE nack ${ack}`);
    for (let q = 0; q < 2; q++) this.startVring(q, 0);
    fe.setVringEnable(0, true);
    fe.setVringEnable(1, true);
    await fe.getQueueNum();
  }

  /** NET_SET_MTU with NEED_REPLY; throws on a NACK (QEMU: "MTU not supported by the backend"). */
  async setMtu(mtu: number): Promise<void> {
    const ack = await this.fe.ack(FrontendRequest.NET_SET_MTU, u64Payload(mtu));
    if (ack !== 0n) throw new Error(`${mtu}Bytes MTU not supported by the backend`);
  }

  /** SET_VRING_NUM/BASE/ADDR/KICK for queue q. */
  startVring(q: number, base: number): void {
    const dq = q === 0 ? this.rx : this.tx;
    this.fe.setVringNum(q, dq.size);
    this.fe.setVringBase(q, base);
    this.fe.setVringAddr(q, { descUva: dq.descUva, availUva: dq.availUva, usedUva: dq.usedUva });
    this.fe.setVringKick(q, this.kickFds[q]);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private kick(q: number): void {
    this.native.eventfdWrite(this.kickFds[q], 1);
    this.kicks++;
  }

  /** Make `n` RX buffers available (descriptor i ↔ fixed buffer i). */
  postRxBuffers(n: number): void {
    const heads: number[] = [];
    for (let i = 0; i < n; i++) {
      const d = (this.rxPosted++) % this.rx.size;
      this.rx.writeDesc(d, this.rxBuf[d], this.opts.rxBufSize, VIRTQ_DESC_F_WRITE, 0);
      heads.push(d);
    }
    this.rx.publish(heads);
    if (this.rx.needsKick()) this.kick(0);
  }
  private rxPosted = 0;

  /** Queue one frame for transmission; false when the TX ring is full (reap completions first). */
  send(frame: Uint8Array, opts: { kick?: boolean; hdr?: Partial<VnetHdr> } = {}): boolean {
    this.reapTx();
    const d = this.txFree.pop();
    if (d === undefined) return false;
    const gpa = this.txBuf[d];
    const hdr = new Uint8Array(HDR + frame.length);
    hdr.set(frame, HDR);
    if (opts.hdr) {
      const h = opts.hdr;
      const put16 = (o: number, v = 0) => {
        hdr[o] = v & 0xff;
        hdr[o + 1] = v >> 8;
      };
      hdr[0] = h.flags ?? 0;
      hdr[1] = h.gsoType ?? 0;
      put16(2, h.hdrLen);
      put16(4, h.gsoSize);
      put16(6, h.csumStart);
      put16(8, h.csumOffset);
    }
    this.rx.dm.write(gpa, hdr);
    if (this.opts.splitTxHeader) {
      this.tx.writeDesc(d, gpa, HDR, VIRTQ_DESC_F_NEXT, d + 1);
      this.tx.writeDesc(d + 1, gpa + HDR, frame.length, 0, 0);
    } else {
      this.tx.writeDesc(d, gpa, HDR + frame.length, 0, 0);
    }
    this.tx.publish([d]);
    if ((opts.kick ?? true) && this.tx.needsKick()) this.kick(1);
    return true;
  }

  /** Kick TX if the device asked for it (after sends with kick: false). */
  flushTx(): void {
    if (this.tx.needsKick()) this.kick(1);
  }

  /** Take back TX buffers the device completed. */
  reapTx(): number {
    let n = 0;
    const end = this.tx.usedIdx();
    while (this.txReaped !== end) {
      const e = this.tx.usedElem(this.txReaped);
      this.txFree.push(e.id);
      this.txReaped = (this.txReaped + 1) & 0xffff;
      n++;
    }
    return n;
  }
  private txReaped = 0;

  /** Collect received frames (reassembling MRG_RXBUF chains) and recycle their buffers. */
  pollRx(): number {
    let n = 0;
    const end = this.rx.usedIdx();
    const recycle: number[] = [];
    while (this.rxReaped !== end) {
      const e = this.rx.usedElem(this.rxReaped);
      this.rxReaped = (this.rxReaped + 1) & 0xffff;
      recycle.push(e.id);
      const bytes = this.rx.dm.read(this.rxBuf[e.id], e.len);
      if (this.pendingRxLeft === 0) {
        if (e.len < HDR) continue; // returned unused
        const numBuffers = this.opts.mrgRxbuf ? bytes[10] | (bytes[11] << 8) : 1;
        this.pendingHdr = parseVnetHdr(bytes);
        this.pendingRx = [bytes.subarray(HDR)];
        this.pendingRxLeft = numBuffers - 1;
      } else {
        this.pendingRx.push(bytes);
        this.pendingRxLeft--;
      }
      if (this.pendingRxLeft === 0) {
        const total = this.pendingRx.reduce((s, p) => s + p.length, 0);
        const frame = new Uint8Array(total);
        let o = 0;
        for (const p of this.pendingRx) {
          frame.set(p, o);
          o += p.length;
        }
        this.hdrs.set(frame, this.pendingHdr!);
        this.received.push(frame);
        n++;
      }
    }
    if (recycle.length) {
      for (const d of recycle) this.rx.writeDesc(d, this.rxBuf[d], this.opts.rxBufSize, VIRTQ_DESC_F_WRITE, 0);
      this.rx.publish(recycle);
      if (this.rx.needsKick()) this.kick(0);
    }
    return n;
  }
  private rxReaped = 0;
  private pendingHdr: VnetHdr | null = null;

  /** The virtio-net header a received frame (from waitRx/received) arrived with. */
  header(frame: Uint8Array): VnetHdr {
    const h = this.hdrs.get(frame);
    if (!h) throw new Error('not a frame this driver received');
    return h;
  }

  /** Wait (event-driven: woken by the call eventfd) until `count` frames have been received. */
  async waitRx(count: number, timeoutMs = 10_000): Promise<Uint8Array[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.pollRx();
      if (this.received.length >= count) return this.received.splice(0, count);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`received ${this.received.length} of ${count} frames`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 50));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Wait until the device has completed every queued TX buffer. */
  async waitTxDone(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const want = this.opts.splitTxHeader ? this.opts.queueSize / 2 : this.opts.queueSize;
    while (this.reapTx() >= 0 && this.txFree.length < want) {
      if (Date.now() > deadline) throw new Error(`TX not completed: ${want - this.txFree.length} outstanding`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 20);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  // ---------------------------------------------------------------- interrupt-only RX (NAPI style)

  private napi: { onFrames: (f: Uint8Array[]) => void; holdMs: (() => number) | null; masked: boolean } | null = null;

  /**
   * Interrupt-only receive, the way Linux virtio_net's NAPI loop works: on an interrupt, mask RX interrupts
   * (NO_INTERRUPT, or with EVENT_IDX leave used_event behind), take the frames, stay masked for `holdMs()`
   * (the driver "processing"), then unmask (clear the flag / used_event = next used index), fence and re-check
   * used.idx. It never polls otherwise: a notification the device fails to send is a hang.
   */
  startInterruptOnly(onFrames: (frames: Uint8Array[]) => void, holdMs: () => number): void {
    this.napi = { onFrames, holdMs, masked: false };
    this.unmaskRx();
  }

  private napiInterrupt(): void {
    const n = this.napi!;
    if (n.masked) return;
    n.masked = true;
    if (!this.rx.eventIdx) this.rx.setNoInterrupt(true);
    this.napiPoll();
  }

  /**
   * Event-driven receive for latency measurements: as startInterruptOnly, but interrupts are re-armed as soon as
   * the frames are handed over (NAPI finishing under budget: napi_complete_done, then virtqueue_enable_cb), so
   * the driver sleeps on the call eventfd between frames and never waits on a timer.
   */
  startEventDriven(onFrames: (frames: Uint8Array[]) => void): void {
    this.napi = { onFrames, holdMs: null, masked: false };
    this.unmaskRx();
  }

  private napiPoll(): void {
    const n = this.napi!;
    this.pollRx();
    const frames = this.received.splice(0);
    if (frames.length) n.onFrames(frames);
    if (n.holdMs === null) queueMicrotask(() => this.unmaskRx());
    else setTimeout(() => this.unmaskRx(), n.holdMs());
  }

  private unmaskRx(): void {
    const n = this.napi;
    if (!n) return;
    if (this.rx.eventIdx) this.rx.setUsedEvent(this.rxReaped);
    else this.rx.setNoInterrupt(false);
    fullFence(); // the driver's own store→load ordering (Linux virtqueue_enable_cb: virtio_mb)
    if (this.rx.usedIdx() !== this.rxReaped) {
      // Completions arrived while masked: keep polling instead of sleeping (virtqueue_enable_cb returned false).
      if (!this.rx.eventIdx) this.rx.setNoInterrupt(true);
      this.napiPoll();
      return;
    }
    n.masked = false;
  }

  /** RX ring state for hang diagnosis. */
  rxState(): { usedIdx: number; seen: number; flags: number; usedEvent: number } {
    return { usedIdx: this.rx.usedIdx(), seen: this.rxReaped, flags: this.rx.dm.u16(this.rx.availGpa), usedEvent: this.rx.usedEvent() };
  }

  /** TX ring state for hang diagnosis. */
  txState(): { availIdx: number; usedIdx: number; usedFlags: number; availEvent: number } {
    return { availIdx: this.tx.availIdx, usedIdx: this.tx.usedIdx(), usedFlags: this.tx.usedFlags(), availEvent: this.tx.availEvent() };
  }

  /** Stop both rings like QEMU does on guest reset (GET_VRING_BASE); returns the bases. */
  async stopRings(): Promise<number[]> {
    return [(await this.fe.getVringBase(0)).num, (await this.fe.getVringBase(1)).num];
  }

  close(): void {
    this.napi = null;
    for (const w of this.callWatchers) w.close();
    this.callWatchers = [];
    this.fe.close();
    closeAll(this.native, this.kickFds);
    closeAll(this.native, this.callFds);
    this.kickFds.length = 0;
    this.callFds.length = 0;
    this.ram.close();
  }
}

/** An Ethernet frame: dst, src, ethertype 0x88b5 (local experimental), then a payload of `len - 14` bytes. */
export function ethFrame(dst: string, src: string, len: number, fill = 0): Uint8Array {
  const f = new Uint8Array(len);
  const put = (mac: string, at: number) => mac.split(':').forEach((h, i) => (f[at + i] = parseInt(h, 16)));
  put(dst, 0);
  put(src, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let i = 14; i < len; i++) f[i] = (fill + i) & 0xff;
  return f;
}
