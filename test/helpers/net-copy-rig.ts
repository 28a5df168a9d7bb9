/**
 * NetCopyRig: two NetDevices on one Switch over real mmapShared() guest memory (one memfd per guest, mapped with
 * mapRegion, so regions carry copy handles as in the daemon), with SplitQueues on driver-side rings written here.
 * The driver side allocates nothing per burst (descriptors and frames are written once, a burst is avail ring
 * entries and one avail.idx store), so an allocation measurement over sendBurst() sees the device path only:
 * TX pop, switch, RX fill and copy, used-ring publish.
 */
import { loadNative } from '../../src/native/binding.js';
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import { unmapRegions } from '../../src/memory/mmap-regions.js';
import type { MemoryRegion } from '../../src/memory/region.js';
import type { DeviceQueue } from '../../src/device/device.js';
import { NetDevice } from '../../src/net/net-device.js';
import { Switch } from '../../src/net/switch.js';
import { mapGuest, quietLogger } from './mapped-guest.js';
import { SplitQueue } from '../../src/virtqueue/split-queue.js';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/virtqueue/defs.js';
import { VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, bit } from '../../src/virtio/features.js';

export const RING = 256;
const MEM = 4 * 1024 * 1024;
const UVA_BASE = 0x7f00_0000_0000;
/** Ring layout (GPA): RX desc/avail/used, TX desc/avail/used. */
const RX_DESC = 0x0000;
const RX_AVAIL = 0x1000;
const RX_USED = 0x2000;
const TX_DESC = 0x3000;
const TX_AVAIL = 0x4000;
const TX_USED = 0x5000;
/** Buffers: one 4 KiB slot per descriptor, 64 B apart from the previous piece so pieces are not contiguous. */
const TX_BUFS = 0x10_0000;
const RX_BUFS = 0x20_0000;
const SLOT = 0x1000;

class Queue implements DeviceQueue {
  readonly hasQueue = true;
  publishes = 0;
  /** Called before every publish (tests check what the guest is about to see). */
  onPublish: ((q: Queue) => void) | null = null;
  constructor(
    readonly index: number,
    readonly queue: SplitQueue,
  ) {}
  publish(): void {
    this.publishes++;
    if (this.onPublish !== null) this.onPublish(this);
    this.queue.publishUsed();
  }
}

export interface GuestOptions {
  /** Virtio-net features (default VERSION_1). */
  features?: bigint;
  /** TX chain piece lengths (the first piece starts with the 12-byte header); default one descriptor. */
  txPieces?: readonly number[];
  /** RX chain piece lengths; default one 2048-byte descriptor. */
  rxPieces?: readonly number[];
}

/** One guest: its memory (mapped by the device side), driver views on the same bytes, its NetDevice. */
export class RigGuest {
  readonly regions: MemoryRegion[];
  readonly mem: GuestMemory;
  readonly u8: Uint8Array;
  readonly dev: NetDevice;
  readonly rxq: Queue;
  readonly txq: Queue;
  readonly hdrLen: number;
  readonly txChains: number;
  readonly rxChains: number;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private txAvail = 0;
  private rxAvail = 0;
  private txUsedSeen = 0;
  rxUsedSeen = 0;
  readonly txPieces: readonly number[];
  readonly rxPieces: readonly number[];

  constructor(
    readonly fd: number,
    sw: Switch,
    name: string,
    readonly mac: string,
    opts: GuestOptions,
  ) {
    ({ regions: this.regions, mem: this.mem, u8: this.u8, u16: this.u16, u32: this.u32 } = mapGuest(fd, MEM, UVA_BASE));
    this.dev = new NetDevice({ name, sw, log: quietLogger(), mac });
    const features = opts.features ?? bit(VIRTIO_F_VERSION_1);
    this.dev.setFeatures(features);
    this.hdrLen = 12;
    this.txPieces = opts.txPieces ?? [SLOT];
    this.rxPieces = opts.rxPieces ?? [2048];
    this.txChains = Math.floor(RING / this.txPieces.length);
    this.rxChains = Math.floor(RING / this.rxPieces.length);
    this.writeChains(TX_DESC, TX_BUFS, this.txPieces, this.txChains, 0);
    this.writeChains(RX_DESC, RX_BUFS, this.rxPieces, this.rxChains, VIRTQ_DESC_F_WRITE);
    const q = (desc: number, avail: number, used: number): SplitQueue =>
      new SplitQueue(this.mem, { size: RING, descUva: UVA_BASE + desc, availUva: UVA_BASE + avail, usedUva: UVA_BASE + used, eventIdx: false, indirect: false });
    this.rxq = new Queue(0, q(RX_DESC, RX_AVAIL, RX_USED));
    this.txq = new Queue(1, q(TX_DESC, TX_AVAIL, TX_USED));
    this.dev.queueStart(this.rxq);
    this.dev.queueStart(this.txq);
  }

  /** Descriptor i of chain c is c * pieces.length + i; piece i of chain c at bufs + (c * pieces + i) * SLOT + 64 * i. */
  private writeChains(desc: number, bufs: number, pieces: readonly number[], chains: number, flags: number): void {
    for (let c = 0; c < chains; c++) {
      for (let i = 0; i < pieces.length; i++) {
        const d = c * pieces.length + i;
        const w = (desc + 16 * d) / 4;
        this.u32[w] = this.pieceGpa(bufs, c, i, pieces.length);
        this.u32[w + 1] = 0;
        this.u32[w + 2] = pieces[i];
        const last = i === pieces.length - 1;
        this.u32[w + 3] = (flags | (last ? 0 : VIRTQ_DESC_F_NEXT)) | ((last ? 0 : d + 1) << 16);
      }
    }
  }

  private pieceGpa(bufs: number, c: number, i: number, n: number): number {
    return bufs + (c * n + i) * SLOT + 64 * i;
  }

  /** Write frame bytes (after a zero virtio-net header) into TX chain c's pieces. */
  writeTxFrame(c: number, frame: Uint8Array): void {
    const all = new Uint8Array(this.hdrLen + frame.length);
    all.set(frame, this.hdrLen);
    let k = 0;
    for (let i = 0; i < this.txPieces.length && k < all.length; i++) {
      const n = Math.min(this.txPieces[i], all.length - k);
      this.u8.set(all.subarray(k, k + n), this.pieceGpa(TX_BUFS, c, i, this.txPieces.length));
      k += n;
    }
    if (k < all.length) throw new Error('frame does not fit the TX chain');
    // The chain's readable length is the frame: shorten the last piece used, zero the rest.
    let left = all.length;
    for (let i = 0; i < this.txPieces.length; i++) {
      const n = Math.max(0, Math.min(this.txPieces[i], left));
      const w = (TX_DESC + 16 * (c * this.txPieces.length + i)) / 4;
      this.u32[w + 2] = n;
      left -= n;
      if (left === 0) {
        this.u32[w + 3] &= ~VIRTQ_DESC_F_NEXT & 0xffff;
        break;
      }
    }
  }

  /** Post TX chains first..first+n-1 (heads) and the avail.idx (no allocation). */
  postTx(first: number, n: number): void {
    const ring = (TX_AVAIL + 4) / 2;
    for (let j = 0; j < n; j++) this.u16[ring + ((this.txAvail + j) & (RING - 1))] = (first + j) * this.txPieces.length;
    this.txAvail = (this.txAvail + n) & 0xffff;
    Atomics.store(this.u16, (TX_AVAIL + 2) / 2, this.txAvail);
  }

  /** Post every RX chain once (start). */
  postAllRx(): void {
    for (let c = 0; c < this.rxChains; c++) this.postRxHead(c * this.rxPieces.length);
    Atomics.store(this.u16, (RX_AVAIL + 2) / 2, this.rxAvail);
  }

  private postRxHead(head: number): void {
    this.u16[(RX_AVAIL + 4) / 2 + (this.rxAvail & (RING - 1))] = head;
    this.rxAvail = (this.rxAvail + 1) & 0xffff;
  }

  /** TX used entries since the last call (the driver reclaims them). */
  reclaimTx(): number {
    const idx = Atomics.load(this.u16, (TX_USED + 2) / 2);
    const n = (idx - this.txUsedSeen) & 0xffff;
    this.txUsedSeen = idx;
    return n;
  }

  /**
   * RX used entries since the last call: each is handed to `seen(head, len)` (when given) and re-posted.
   * Returns how many.
   */
  recycleRx(seen?: (head: number, len: number) => void): number {
    const idx = Atomics.load(this.u16, (RX_USED + 2) / 2);
    let n = 0;
    while (this.rxUsedSeen !== idx) {
      const e = (RX_USED + 4) / 4 + 2 * (this.rxUsedSeen & (RING - 1));
      const head = this.u32[e];
      if (seen !== undefined) seen(head, this.u32[e + 1]);
      this.postRxHead(head);
      this.rxUsedSeen = (this.rxUsedSeen + 1) & 0xffff;
      n++;
    }
    if (n > 0) Atomics.store(this.u16, (RX_AVAIL + 2) / 2, this.rxAvail);
    return n;
  }

  /** The first `len` bytes written into RX chain `head` (its pieces in order). */
  rxBytes(head: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    const c = head / this.rxPieces.length;
    let k = 0;
    for (let i = 0; i < this.rxPieces.length && k < len; i++) {
      const n = Math.min(this.rxPieces[i], len - k);
      const at = this.pieceGpa(RX_BUFS, c, i, this.rxPieces.length);
      out.set(this.u8.subarray(at, at + n), k);
      k += n;
    }
    return out;
  }

  close(): void {
    this.dev.queueStop(0);
    this.dev.queueStop(1);
    this.dev.reset();
    this.dev.detach();
    unmapRegions(loadNative(), this.regions);
  }

  /**
   * The guest kicks TX and the device runs it now. Once a port is on the switch poller (kicks off while busy), a
   * kick is left to the poller's next event-loop turn; this synchronous rig runs that turn itself (Pollable.poll).
   */
  kick(): void {
    if (this.dev.pollActive) this.dev.poll();
    else this.dev.queueKick(1);
  }
}

/** Two guests A and B on one switch (A sends, B receives, or both ways). */
export class NetCopyRig {
  readonly sw: Switch;
  readonly a: RigGuest;
  readonly b: RigGuest;
  private readonly fds: number[];

  constructor(opts: { a?: GuestOptions; b?: GuestOptions; mtu?: number } = {}) {
    const native = loadNative();
    this.sw = new Switch('rig', { mtu: opts.mtu ?? 1500 });
    this.fds = [native.memfdCreate('rig-a', MEM), native.memfdCreate('rig-b', MEM)];
    this.a = new RigGuest(this.fds[0], this.sw, 'a.net0', '02:00:00:00:00:0a', opts.a ?? {});
    this.b = new RigGuest(this.fds[1], this.sw, 'b.net0', '02:00:00:00:00:0b', opts.b ?? {});
    this.a.postAllRx();
    this.b.postAllRx();
  }

  /** A sends TX chains 0..n-1 (as written), the device path runs, B's RX is recycled. Returns frames B received. */
  sendBurst(n: number, seen?: (head: number, len: number) => void): number {
    this.a.postTx(0, n);
    this.a.kick();
    this.a.reclaimTx();
    return this.b.recycleRx(seen);
  }

  close(): void {
    this.a.close();
    this.b.close();
    const native = loadNative();
    for (const fd of this.fds) native.close(fd);
  }
}

export const MRG = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF);
