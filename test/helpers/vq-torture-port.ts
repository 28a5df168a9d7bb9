/**
 * TorturePort: one guest virtio-net device as the hang matrix drives it (vq-torture.ts): memfd guest RAM, an RX
 * and a TX TortureRing with one fixed buffer per descriptor, kick/call eventfds that outlive the vhost-user
 * connection (as QEMU's ioeventfd/irqfd do), and the three control-path sequences of a QEMU 7.2 netdev
 * (docs/protocol.md §4): connect + start, guest reset (GET_VRING_BASE on both rings, the guest re-creates
 * its rings, start again with base 0), and reconnect after a back-end crash (start again with base = used.idx,
 * QEMU's virtio_queue_restore_last_avail_idx). Calls are delivered to `onCall[q]`; what to do with them is the
 * cell's business.
 */
import { closeAll } from '../../src/native/fd.js';
import { loadNative } from '../../src/native/binding.js';
import type { FdWatcher, NativeBinding } from '../../src/native/types.js';
import { POLL_READABLE } from '../../src/native/types.js';
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_RING_F_EVENT_IDX,
  bit,
} from '../../src/vhost-user/features.js';
import { VIRTQ_DESC_F_WRITE } from '../../src/virtqueue/defs.js';
import { FakeFrontend } from './fake-frontend.js';
import { GuestRam } from './guest-ram.js';
import { GuestAllocator, Rng } from './driver-memory.js';
import { TortureRing } from './vq-torture-ring.js';

/** virtio-net header with VERSION_1 (12 bytes, num_buffers included; VIRTIO 1.2 §5.1.6). */
export const NET_HDR = 12;
/** Size of every RX buffer: one buffer holds any frame up to 1514 bytes plus the header. */
export const RX_BUF = 2048;
/** Largest frame a torture port sends. */
export const MAX_FRAME = 1514;

export interface TorturePortOptions {
  name: string;
  queueSize: number;
  eventIdx: boolean;
  seed: number;
  onViolation: (what: string) => void;
}

export class TorturePort {
  readonly name: string;
  readonly native: NativeBinding;
  readonly ram: GuestRam;
  readonly rx: TortureRing;
  readonly tx: TortureRing;
  readonly size: number;
  readonly eventIdx: boolean;
  /** Region bytes and offset of the fixed buffer behind each descriptor, per queue (0 = RX, 1 = TX). */
  readonly bufMem: Uint8Array[][] = [[], []];
  readonly bufOff: Int32Array[];
  private readonly bufGpa: number[][] = [[], []];
  /** Free TX heads (a stack). */
  readonly txFree: Int32Array;
  txFreeCount = 0;
  readonly kickFds: number[];
  readonly callFds: number[];
  /** Calls received per queue. */
  readonly calls = [0, 0];
  /** Runs on every call of queue q (after the eventfd was read). */
  readonly onCall: [() => void, () => void] = [() => undefined, () => undefined];
  private readonly watchers: FdWatcher[] = [];
  private fe: FakeFrontend | null = null;
  private acked = 0n;

  constructor(o: TorturePortOptions) {
    this.name = o.name;
    this.size = o.queueSize;
    this.eventIdx = o.eventIdx;
    this.ram = new GuestRam({ regionSize: 4 * 1024 * 1024, regions: 2 });
    this.native = loadNative();
    const alloc = new GuestAllocator(this.ram.mem, new Rng(o.seed), 64);
    this.rx = new TortureRing(this.ram.mem, alloc, this.size, this.eventIdx, o.onViolation, `${o.name}.rx`);
    this.tx = new TortureRing(this.ram.mem, alloc, this.size, this.eventIdx, o.onViolation, `${o.name}.tx`);
    this.bufOff = [new Int32Array(this.size), new Int32Array(this.size)];
    for (let q = 0; q < 2; q++) {
      const len = q === 0 ? RX_BUF : NET_HDR + MAX_FRAME;
      for (let i = 0; i < this.size; i++) {
        const gpa = alloc.alloc(len, 8);
        const r = this.ram.mem.gpaRange(gpa, len)!;
        this.bufGpa[q].push(gpa);
        this.bufMem[q].push(r.region.u8);
        this.bufOff[q][i] = r.offset;
      }
    }
    this.txFree = new Int32Array(this.size);
    this.kickFds = [this.native.eventfd(0), this.native.eventfd(0)];
    this.callFds = [this.native.eventfd(0), this.native.eventfd(0)];
    for (let q = 0; q < 2; q++) {
      this.watchers.push(
        this.native.watch(this.callFds[q], POLL_READABLE, () => {
          if (this.native.eventfdRead(this.callFds[q]) <= 0) return;
          this.calls[q]++;
          this.onCall[q]();
        }),
      );
    }
    this.initGuestRings();
  }

  /** The guest driver's ring setup (probe or after a reset): TX heads all free, every RX buffer posted. */
  private initGuestRings(): void {
    this.rx.reset();
    this.tx.reset();
    this.txFreeCount = 0;
    for (let i = this.size - 1; i >= 0; i--) this.txFree[this.txFreeCount++] = i;
    for (let i = 0; i < this.size; i++) {
      this.rx.writeDesc(i, this.bufGpa[0][i], RX_BUF, VIRTQ_DESC_F_WRITE);
      this.rx.push(i);
    }
    this.rx.storeAvailIdx();
  }

  /** GPA of the fixed buffer of descriptor i on queue q. */
  bufAddr(q: number, i: number): number {
    return this.bufGpa[q][i];
  }

  /** Write the kick eventfd of queue q (the guest's notify register write). */
  kick(q: number): void {
    this.native.eventfdWrite(this.kickFds[q], 1);
  }

  /**
   * QEMU 7.2 connect + DRIVER_OK on a fresh socket. `bases` are the SET_VRING_BASE values:
   * [0, 0] at first start, the rings' used.idx after a back-end crash (nothing in flight is remembered).
   */
  async connect(socket: string, bases: [number, number] = [0, 0]): Promise<void> {
    this.fe?.close();
    const fe = FakeFrontend.connect(socket);
    this.fe = fe;
    const { offered, memSlots } = await fe.qemuNetInit(this.callFds);
    let want = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF);
    if (this.eventIdx) want |= bit(VIRTIO_RING_F_EVENT_IDX);
    if ((offered & want) !== want) throw new Error(`${this.name}: device does not offer features 0x${want.toString(16)}`);
    this.acked = want;
    fe.setVringEnable(0, true);
    fe.setVringEnable(1, true);
    fe.setFeatures(this.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES));
    if (memSlots) {
      for (const r of this.ram.regions) if ((await fe.addMemReg(r, this.ram.fd)) !== 0n) throw new Error(`${this.name}: ADD_MEM_REG nack`);
    } else if ((await fe.setMemTable(this.ram.regions, this.ram.fds())) !== 0n) throw new Error(`${this.name}: SET_MEM_TABLE nack`);
    this.startVring(0, bases[0]);
    this.startVring(1, bases[1]);
    await fe.getQueueNum(); // round trip: the rings are running
  }

  /** Reconnect after the back-end was restarted: same guest RAM and rings, base = used.idx of each ring. */
  async reconnect(socket: string): Promise<void> {
    await this.connect(socket, [this.rx.usedIdx(), this.tx.usedIdx()]);
  }

  /** Per ring, QEMU vhost_virtqueue_start: NUM, BASE, ADDR, KICK, CALL. */
  private startVring(q: number, base: number): void {
    const fe = this.fe!;
    const r = q === 0 ? this.rx : this.tx;
    fe.setVringNum(q, this.size);
    fe.setVringBase(q, base);
    const toUva = (gpa: number) => {
      const reg = this.ram.regions.find((x) => gpa >= x.gpa && gpa < x.gpa + x.size)!;
      return reg.uva + (gpa - reg.gpa);
    };
    fe.setVringAddr(q, { descUva: toUva(r.descGpa), availUva: toUva(r.availGpa), usedUva: toUva(r.usedGpa) });
    fe.setVringKick(q, this.kickFds[q]);
    fe.setVringCall(q, this.callFds[q]);
  }

  /**
   * Guest virtio reset (ifconfig down/up, driver reload), as QEMU 7.2 runs it: GET_VRING_BASE on RX and TX
   * (the back-end stops both), the guest frees and re-creates its rings (indices 0, every RX buffer posted again,
   * frames in the old TX ring are gone), then DRIVER_OK: enable, SET_FEATURES, each ring started with base 0.
   */
  async reset(): Promise<void> {
    const fe = this.fe!;
    await fe.getVringBase(0);
    await fe.getVringBase(1);
    this.initGuestRings();
    fe.setVringEnable(0, true);
    fe.setVringEnable(1, true);
    fe.setFeatures(this.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES));
    this.startVring(0, 0);
    this.startVring(1, 0);
    await fe.getQueueNum();
  }

  /** True when the back-end dropped the connection. */
  get disconnected(): boolean {
    return this.fe === null || this.fe.closed;
  }

  close(): void {
    for (const w of this.watchers) w.close();
    this.watchers.length = 0;
    this.fe?.close();
    this.fe = null;
    closeAll(this.native, this.kickFds);
    closeAll(this.native, this.callFds);
    this.ram.close();
  }
}
