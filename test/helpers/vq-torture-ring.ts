/**
 * TortureRing: the guest driver's side of one split virtqueue for the hang matrix (vq-torture.ts). Unlike
 * DriverSplitQueue it works on typed-array views cached once over the ring memory, so a cell can push 10^7 buffers
 * without allocating per buffer, and it checks the device's used ring as it consumes it:
 *
 *   desc  u32[4i] addr lo, [4i+1] addr hi, [4i+2] len, [4i+3] flags | next << 16          (VIRTIO 1.2 §2.7.5)
 *   avail u16[0] flags, [1] idx, [2+i] ring[i], [2+size] used_event                        (§2.7.6)
 *   used  u16[0] flags, [1] idx, u32 elems {id, len} from byte 4, u16[2+4*size] avail_event (§2.7.8)
 *
 * Invariants (docs/testing.md "The hang matrix"): every used id is a head this driver made available and has not got
 * back yet (completed exactly once), len is within the chain's writable bytes, and used.idx never moves by more
 * than the heads outstanding. Violations are strings handed to `onViolation`; the ring skips the bad entry.
 */
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY, availRingSize, descTableSize, usedRingSize } from '../../src/virtqueue/defs.js';
import { vringNeedEvent } from '../../src/virtqueue/event-idx.js';
import { fullFence } from '../../src/virtqueue/barrier.js';
import type { GuestAllocator } from './driver-memory.js';

/** A view of `len` bytes at `gpa`, which must lie inside one region. */
function view(mem: GuestMemory, gpa: number, len: number): { buffer: ArrayBuffer; byteOffset: number } {
  const r = mem.gpaRange(gpa, len);
  if (r === null) throw new Error(`torture ring: GPA [0x${gpa.toString(16)}+${len}) is not inside one region`);
  return { buffer: r.region.u8.buffer as ArrayBuffer, byteOffset: r.region.u8.byteOffset + r.offset };
}

export class TortureRing {
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  private readonly desc32: Uint32Array;
  private readonly avail: Uint16Array;
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;
  /** 1 while head i is available to the device (posted, not yet returned in the used ring). */
  private readonly posted: Uint8Array;
  /** Writable bytes of the chain at head i (the used len bound). */
  private readonly writable: Uint32Array;
  /** Driver's shadow of avail.idx (free-running u16). */
  availIdx = 0;
  /** avail.idx at the previous kick decision (Linux: shadow − num_added). */
  private lastKickAvail = 0;
  /** Next used index to consume. */
  reaped = 0;
  /** Heads posted and not returned yet. */
  outstanding = 0;
  kicksSent = 0;
  kicksSkipped = 0;

  constructor(
    mem: GuestMemory,
    alloc: GuestAllocator,
    readonly size: number,
    readonly eventIdx: boolean,
    private readonly onViolation: (what: string) => void,
    readonly name: string,
  ) {
    this.descGpa = alloc.alloc(descTableSize(size), 16);
    this.availGpa = alloc.alloc(availRingSize(size), 2);
    this.usedGpa = alloc.alloc(usedRingSize(size), 4);
    const d = view(mem, this.descGpa, descTableSize(size));
    const a = view(mem, this.availGpa, availRingSize(size));
    const u = view(mem, this.usedGpa, usedRingSize(size));
    this.desc32 = new Uint32Array(d.buffer, d.byteOffset, 4 * size);
    this.avail = new Uint16Array(a.buffer, a.byteOffset, 3 + size);
    this.used16 = new Uint16Array(u.buffer, u.byteOffset, 3 + 4 * size);
    this.used32 = new Uint32Array(u.buffer, u.byteOffset + 4, 2 * size);
    this.posted = new Uint8Array(size);
    this.writable = new Uint32Array(size);
  }

  /** Guest virtio reset: the driver frees and re-creates the ring (all zero, indices 0, nothing posted). */
  reset(): void {
    this.desc32.fill(0);
    this.avail.fill(0);
    this.used16.fill(0);
    this.posted.fill(0);
    this.availIdx = this.lastKickAvail = this.reaped = this.outstanding = 0;
  }

  /** One-descriptor chain at head `i` (fixed buffer per descriptor, as Linux virtio-net with big/small buffers). */
  writeDesc(i: number, gpa: number, len: number, flags: number): void {
    const o = 4 * i;
    this.desc32[o] = gpa % 0x1_0000_0000;
    this.desc32[o + 1] = Math.floor(gpa / 0x1_0000_0000);
    this.desc32[o + 2] = len;
    this.desc32[o + 3] = flags;
    this.writable[i] = flags & VIRTQ_DESC_F_WRITE ? len : 0;
  }

  /** Put `head` in the next avail ring slot; not visible to the device until storeAvailIdx(). */
  push(head: number): void {
    if (this.posted[head] !== 0) this.onViolation(`${this.name}: driver bug: head ${head} posted twice`);
    this.posted[head] = 1;
    this.outstanding++;
    this.avail[2 + (this.availIdx & (this.size - 1))] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }

  /** Publish avail.idx (release: the ring slots and descriptors are written before, §2.7.13). */
  storeAvailIdx(): void {
    Atomics.store(this.avail, 1, this.availIdx);
  }

  /**
   * Kick decision after publishing (§2.7.13.4, Linux virtqueue_kick_prepare): full fence (the driver's store→load
   * ordering: avail.idx store, then the avail_event / NO_NOTIFY load), then EVENT_IDX: vring_need_event(avail_event,
   * new, old), else !(used.flags & NO_NOTIFY). Counts the decision.
   */
  needsKick(): boolean {
    const old = this.lastKickAvail;
    this.lastKickAvail = this.availIdx;
    fullFence();
    const kick = this.eventIdx
      ? vringNeedEvent(this.used16[2 + 4 * this.size], this.availIdx, old)
      : (this.used16[0] & VIRTQ_USED_F_NO_NOTIFY) === 0;
    if (kick) this.kicksSent++;
    else this.kicksSkipped++;
    return kick;
  }

  /** used.idx (acquire: the used elements below it are visible). */
  usedIdx(): number {
    return Atomics.load(this.used16, 1);
  }

  /** Entries the device returned and the driver has not consumed, or -1 (and a violation) if used.idx is bogus. */
  pendingUsed(): number {
    const n = (this.usedIdx() - this.reaped) & 0xffff;
    if (n > this.outstanding) {
      this.onViolation(`${this.name}: used.idx ${this.usedIdx()} is ${n} ahead of the consumed index ${this.reaped}, but only ${this.outstanding} heads are outstanding (queue size ${this.size})`);
      return -1;
    }
    return n;
  }

  /**
   * Consume the next used entry: returns its head after the exactly-once and len checks, or -1 (violation
   * reported, entry skipped). `lenOut[0]` receives the used len.
   */
  takeUsed(lenOut: Uint32Array): number {
    const slot = (this.reaped & (this.size - 1)) << 1;
    const id = this.used32[slot];
    const len = this.used32[slot + 1];
    this.reaped = (this.reaped + 1) & 0xffff;
    if (id >= this.size || this.posted[id] === 0) {
      this.onViolation(`${this.name}: used entry ${(this.reaped - 1) & 0xffff} returns head ${id}, which is not outstanding (never posted, or completed twice)`);
      return -1;
    }
    this.posted[id] = 0;
    this.outstanding--;
    if (len > this.writable[id]) {
      this.onViolation(`${this.name}: used entry for head ${id} has len ${len} > the chain's ${this.writable[id]} writable bytes`);
      return -1;
    }
    lenOut[0] = len;
    return id;
  }

  /** Ask for no interrupts: flags mode sets NO_INTERRUPT; with EVENT_IDX used_event is simply left behind. */
  mask(): void {
    if (!this.eventIdx) this.avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
  }

  /**
   * Re-arm interrupts (Linux virtqueue_enable_cb_prepare + poll): used_event = next index to consume, or clear
   * NO_INTERRUPT; `spin` widens the window; full fence; true if used entries arrived meanwhile (poll again).
   */
  arm(spin: () => void): boolean {
    if (this.eventIdx) this.avail[2 + this.size] = this.reaped;
    else this.avail[0] = 0;
    spin();
    fullFence();
    return this.usedIdx() !== this.reaped;
  }

  /** Ring state for stall dumps. */
  state(): string {
    const availEvent = this.used16[2 + 4 * this.size];
    const usedEvent = this.avail[2 + this.size];
    return `${this.name}{avail.idx ${this.availIdx} (in memory ${Atomics.load(this.avail, 1)}) used.idx ${this.usedIdx()} consumed ${this.reaped} outstanding ${this.outstanding} avail.flags ${this.avail[0]} used.flags ${this.used16[0]}${this.eventIdx ? ` used_event ${usedEvent} avail_event ${availEvent}` : ''} kicks ${this.kicksSent}/${this.kicksSkipped} skipped}`;
  }
}
