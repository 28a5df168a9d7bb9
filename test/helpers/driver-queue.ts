/**
 * DriverSplitQueue: the guest driver side of a split virtqueue, writing real ring bytes into GuestMemory (after
 * vm-virtio MockSplitQueue / Firecracker VirtQueue). Rings and buffers come from a bump allocator with random gaps;
 * buffers and indirect tables can be placed across a region end. Low-level escape hatches (writeDesc, publish,
 * setAvailIdx) let adversarial tests write anything. Independent of how the regions were created.
 * Spec: VIRTIO 1.2 §2.7 (driver side: §2.7.13 supplying buffers, §2.7.7/§2.7.10 suppression).
 */
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY, VIRTQ_AVAIL_F_NO_INTERRUPT, availRingSize, descTableSize, usedRingSize } from '../../src/virtqueue/defs.js';
import { vringNeedEvent } from '../../src/virtqueue/event-idx.js';
import { DriverMemory, GuestAllocator, Rng } from './driver-memory.js';

export interface DriverBuf {
  len: number;
  write: boolean;
  /** Initial contents (readable buffers); random bytes when omitted. */
  data?: Uint8Array;
  /** Place this buffer across a region end (needs GPA-contiguous regions). */
  across?: boolean;
}

export interface PlacedBuf {
  gpa: number;
  len: number;
  write: boolean;
  data: Uint8Array | null;
}

export interface AddChainOptions {
  indirect?: boolean;
  /** Place the indirect table across a region end. */
  tableAcross?: boolean;
  /** Misalign the indirect table by this many bytes (exercises the copy path). */
  tableMisalign?: number;
  /** Write the chain but do not make it available (call publish([head]) later). */
  noPublish?: boolean;
}

export interface DriverQueueOptions {
  mem: GuestMemory;
  size: number;
  eventIdx?: boolean;
  seed?: number;
  /** Max random gap between allocations (bytes). */
  maxGap?: number;
  /** Share an allocator (several queues in one memory). */
  alloc?: GuestAllocator;
}

export class DriverSplitQueue {
  readonly mem: GuestMemory;
  readonly dm: DriverMemory;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly rng: Rng;
  readonly alloc: GuestAllocator;
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  readonly descUva: number;
  readonly availUva: number;
  readonly usedUva: number;
  /** Driver's shadow of avail.idx (next free ring slot, free-running u16). */
  availIdx = 0;
  private lastKickAvail = 0;
  private lastUsedSeen = 0;
  private readonly free: number[] = [];
  /** Chains by head: the ring descriptors they hold and where their buffers are. */
  readonly chains = new Map<number, { descs: number[]; bufs: PlacedBuf[] }>();

  constructor(opts: DriverQueueOptions) {
    this.mem = opts.mem;
    this.dm = new DriverMemory(opts.mem);
    this.size = opts.size;
    this.eventIdx = opts.eventIdx ?? false;
    this.rng = new Rng(opts.seed ?? 1);
    this.alloc = opts.alloc ?? new GuestAllocator(opts.mem, this.rng, opts.maxGap ?? 64);
    this.descGpa = this.alloc.alloc(descTableSize(this.size), 16);
    this.availGpa = this.alloc.alloc(availRingSize(this.size), 2);
    this.usedGpa = this.alloc.alloc(usedRingSize(this.size), 4);
    this.descUva = this.dm.gpaToUva(this.descGpa);
    this.availUva = this.dm.gpaToUva(this.availGpa);
    this.usedUva = this.dm.gpaToUva(this.usedGpa);
    for (let i = this.size - 1; i >= 0; i--) this.free.push(i);
  }

  /** Options for `new SplitQueue(mem, …)` matching this driver. */
  queueOptions(indirect = true): { size: number; descUva: number; availUva: number; usedUva: number; eventIdx: boolean; indirect: boolean } {
    return { size: this.size, descUva: this.descUva, availUva: this.availUva, usedUva: this.usedUva, eventIdx: this.eventIdx, indirect };
  }

  get freeCount(): number {
    return this.free.length;
  }

  /** Raw descriptor write into the ring's table (adversarial tests). */
  writeDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    this.writeDescAt(this.descGpa + 16 * i, addr, len, flags, next);
  }

  private writeDescAt(gpa: number, addr: number, len: number, flags: number, next: number): void {
    this.dm.setU64(gpa, addr);
    this.dm.setU32(gpa + 8, len);
    this.dm.setU16(gpa + 12, flags);
    this.dm.setU16(gpa + 14, next);
  }

  /** Allocate and fill buffers (readable ones get data or random bytes, writable ones zeros). */
  placeBuffers(bufs: readonly DriverBuf[]): PlacedBuf[] {
    return bufs.map((b) => {
      const gpa = b.across ? this.alloc.allocAcross(b.len) : this.alloc.alloc(b.len, 1);
      const data = b.write ? null : (b.data ?? this.rng.bytes(b.len));
      this.dm.write(gpa, data ?? new Uint8Array(b.len));
      return { gpa, len: b.len, write: b.write, data };
    });
  }

  /** Build a chain (direct or indirect), put its head in the avail ring and publish avail.idx. Returns the head. */
  addChain(bufs: readonly DriverBuf[], opts: AddChainOptions = {}): number {
    const placed = this.placeBuffers(bufs);
    const n = placed.length;
    const need = opts.indirect ? 1 : n;
    if (this.free.length < need) throw new Error(`driver: ${need} descriptors needed, ${this.free.length} free`);
    const descs: number[] = [];
    for (let k = 0; k < need; k++) descs.push(this.free.pop()!);
    const head = descs[0];
    if (opts.indirect) {
      const tlen = 16 * n;
      let t: number;
      if (opts.tableAcross) t = this.alloc.allocAcross(tlen);
      else t = this.alloc.alloc(tlen + (opts.tableMisalign ?? 0), 16) + (opts.tableMisalign ?? 0);
      for (let k = 0; k < n; k++) {
        const b = placed[k];
        const flags = (b.write ? VIRTQ_DESC_F_WRITE : 0) | (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
        this.writeDescAt(t + 16 * k, b.gpa, b.len, flags, k + 1 < n ? k + 1 : 0);
      }
      this.writeDesc(head, t, tlen, VIRTQ_DESC_F_INDIRECT, 0);
    } else {
      for (let k = 0; k < n; k++) {
        const b = placed[k];
        const more = k + 1 < n;
        this.writeDesc(descs[k], b.gpa, b.len, (b.write ? VIRTQ_DESC_F_WRITE : 0) | (more ? VIRTQ_DESC_F_NEXT : 0), more ? descs[k + 1] : 0);
      }
    }
    this.chains.set(head, { descs, bufs: placed });
    if (!opts.noPublish) this.publish([head]);
    return head;
  }

  /** Write heads into the avail ring at availIdx.. and store avail.idx once (driver §2.7.13). */
  publish(heads: readonly number[]): void {
    for (const h of heads) {
      this.dm.setU16(this.availGpa + 4 + 2 * (this.availIdx % this.size), h);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    this.setAvailIdx(this.availIdx);
  }

  /** Store avail.idx directly (adversarial: jump over the queue size). */
  setAvailIdx(n: number): void {
    this.availIdx = n & 0xffff;
    this.dm.setU16(this.availGpa + 2, this.availIdx);
  }

  /** Write a raw avail ring slot (adversarial: head ≥ size). */
  setAvailRing(slot: number, head: number): void {
    this.dm.setU16(this.availGpa + 4 + 2 * (slot % this.size), head);
  }

  usedIdx(): number {
    return this.dm.u16(this.usedGpa + 2);
  }
  usedFlags(): number {
    return this.dm.u16(this.usedGpa);
  }
  availEvent(): number {
    return this.dm.u16(this.usedGpa + 4 + 8 * this.size);
  }
  usedElem(i: number): { id: number; len: number } {
    const at = this.usedGpa + 4 + 8 * (i % this.size);
    return { id: this.dm.u32(at), len: this.dm.u32(at + 4) };
  }

  /**
   * Used elements published since the last call, up to `end` (default: used.idx now); their descriptors return to the
   * free list. A device in another process may publish more while the caller looks at them: pass the index it read.
   */
  collectUsed(end = this.usedIdx()): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    while (this.lastUsedSeen !== end) {
      const e = this.usedElem(this.lastUsedSeen);
      out.push(e);
      const c = this.chains.get(e.id);
      if (c) {
        for (const d of c.descs) this.free.push(d);
        this.chains.delete(e.id);
      }
      this.lastUsedSeen = (this.lastUsedSeen + 1) & 0xffff;
    }
    return out;
  }

  /** Driver's next used index to consume. */
  get lastUsed(): number {
    return this.lastUsedSeen;
  }

  setUsedEvent(n: number): void {
    this.dm.setU16(this.availGpa + 4 + 2 * this.size, n);
  }
  usedEvent(): number {
    return this.dm.u16(this.availGpa + 4 + 2 * this.size);
  }
  setNoInterrupt(on: boolean): void {
    this.dm.setU16(this.availGpa, on ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0);
  }

  /**
   * Driver-side kick decision after publishing (§2.7.13.4 / §2.7.10): with EVENT_IDX vring_need_event(avail_event,
   * availIdx, availIdx at the previous decision), else !(used.flags & NO_NOTIFY).
   */
  needsKick(): boolean {
    const old = this.lastKickAvail;
    this.lastKickAvail = this.availIdx;
    if (this.eventIdx) return vringNeedEvent(this.availEvent(), this.availIdx, old);
    return (this.usedFlags() & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** Up to `len` bytes the device wrote into the writable buffers of chain `head`, in order. */
  readBuffer(head: number, len = Infinity): Uint8Array {
    const c = this.chains.get(head);
    if (!c) throw new Error(`driver: no chain with head ${head}`);
    const parts: Uint8Array[] = [];
    let left = len;
    for (const b of c.bufs) {
      if (!b.write || left <= 0) continue;
      const n = Math.min(b.len, left);
      parts.push(this.dm.read(b.gpa, n));
      left -= n;
    }
    const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}
