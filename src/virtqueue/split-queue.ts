/**
 * SplitQueue: the device side of a split virtqueue on typed-array views cached once at construction (no address
 * translation on the hot path, docs/architecture.md §10). Used entries are batched: addUsed() many times, then one
 * publishUsed() = one used.idx store + one notification decision. All memory ordering goes through barrier.ts.
 * Kicks (VIRTIO 1.2 §2.7.10, docs/protocol.md §3): pop() never writes avail_event. enableNotification() writes it
 * (avail_event = lastAvailIdx, or NO_NOTIFY cleared), fences and re-checks; disableNotification() parks it a
 * queue size behind lastAvailIdx (parkedAvailEvent), out of reach of every kick decision the driver makes, so a
 * queue with kicks off (net RX, a busy TX, poll mode) gets none. A device must therefore call enableNotification() before it sleeps on a kick.
 * Guest errors: a bad chain is a request error (chain.error); a bad avail idx or head index breaks the queue.
 * Spec: VIRTIO 1.2 §2.7 (split virtqueues), §2.7.7 / §2.7.10 (notification suppression).
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { VhostError } from '../util/errors.js';
import { enableAndRecheck, loadAvailIdx, publishUsedIdx } from './barrier.js';
import type { DescriptorChain } from './descriptor-chain.js';
import {
  AVAIL_ALIGN, DESC_ALIGN, MAX_QUEUE_SIZE, USED_ALIGN, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY,
  availRingSize, descTableSize, usedRingSize,
} from './defs.js';
import { vringNeedEvent } from './event-idx.js';
import type { InflightQueue } from './inflight.js';

export interface SplitQueueOptions {
  /** Queue size (SET_VRING_NUM): power of 2, 1..32768. */
  size: number;
  /** Frontend virtual addresses from SET_VRING_ADDR. */
  descUva: number;
  availUva: number;
  usedUva: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /**
   * Guest-physical address of the used ring when the front-end asked for used-ring logging (SET_VRING_ADDR flag
   * VHOST_VRING_F_LOG, log_guest_addr); -1 or absent otherwise. Used only while mem.dirtyLog is set.
   */
  logUsedGpa?: number;
}

const hex = (n: number): string => '0x' + n.toString(16);

/** Resolve one ring to (buffer, byteOffset) or throw ERR_VQ_RING_ADDR with the reason. */
function ringLocation(mem: GuestMemory, name: string, uva: number, len: number, align: number): { buffer: ArrayBuffer; byteOffset: number } {
  if (!Number.isSafeInteger(uva) || uva < 0) throw new VhostError('ERR_VQ_RING_ADDR', `${name} ring address ${uva} is not a valid address below 2^53`);
  // §2.7 "Virtqueue Part Alignment": desc 16, avail 2, used 4.
  if (uva % align !== 0) throw new VhostError('ERR_VQ_RING_ADDR', `${name} ring address ${hex(uva)} is not ${align}-byte aligned (VIRTIO 1.2 §2.7)`);
  const loc = mem.uvaRange(uva, len);
  if (loc === null) {
    const why = mem.findUva(uva) === null ? 'is outside guest memory' : 'straddles a memory region end (rings must lie in one region)';
    throw new VhostError('ERR_VQ_RING_ADDR', `${name} ring UVA [${hex(uva)}-${hex(uva + len)}) ${why}; regions: ${mem.describe()}`);
  }
  const byteOffset = loc.region.u8.byteOffset + loc.offset;
  if (byteOffset % align !== 0) throw new VhostError('ERR_VQ_RING_ADDR', `${name} ring at ${hex(uva)} is misaligned in the backend mapping (region buffer offset ${loc.region.u8.byteOffset})`);
  return { buffer: loc.region.buffer, byteOffset };
}

export class SplitQueue {
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  /** Shadow of used.idx: where the next addUsed goes (free-running u16). */
  usedIdx: number;
  broken = false;
  brokenReason: string | null = null;

  /** The memory the rings and buffers live in (devices read its dirtyLog). */
  readonly mem: GuestMemory;
  private readonly logUsedGpa: number;
  private readonly usedRingBytes: number;
  private readonly mask: number;
  /** Descriptor table as u32 words: [4i] addr lo, [4i+1] addr hi, [4i+2] len, [4i+3] flags | next << 16. */
  private readonly desc32: Uint32Array;
  /** avail: [0] flags, [1] idx, [2+i] ring[i], [2+size] used_event. */
  private readonly avail: Uint16Array;
  /** used: [0] flags, [1] idx, [2+4*size] avail_event. */
  private readonly used16: Uint16Array;
  /** used elems (from used+4): [2i] id, [2i+1] len. */
  private readonly used32: Uint32Array;
  private readonly usedEventIndex: number;
  private readonly availEventIndex: number;
  private nextAvail = 0;
  /** Last avail.idx read from the guest; reloaded only when nextAvail catches up (DPDK/libvhost-user shadow). */
  private shadowAvail = 0;
  /** used.idx value last stored to guest memory. */
  private publishedIdx: number;
  private signalledUsed = 0;
  private signalledUsedValid = false;
  /** Inflight tracking (vhost-user INFLIGHT_SHMFD, blk): null when the front-end gave no region. */
  private inflight: InflightQueue | null = null;
  /** Heads to hand out again before new avail entries (inflight recovery), in order; resubmit[0..resubmitPos) are out. */
  private resubmit: number[] = [];
  private resubmitPos = 0;
  /** nextAvail when the last resubmitted head was popped (avail pops start there): unpop() splits on it. */
  private resubmitAvail = 0;
  /** EVENT_IDX with kicks off: avail_event is parked a queue size behind nextAvail (re-parked when avail.idx is reloaded). */
  private parked = false;

  /** @throws VhostError ERR_VQ_SIZE, ERR_VQ_RING_ADDR. */
  constructor(mem: GuestMemory, opts: SplitQueueOptions) {
    const { size } = opts;
    // §2.7: Queue Size is a power of 2 no larger than 32768.
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
      throw new VhostError('ERR_VQ_SIZE', `queue size ${size} is not a power of 2 in 1..${MAX_QUEUE_SIZE} (VIRTIO 1.2 §2.7)`);
    }
    const d = ringLocation(mem, 'descriptor', opts.descUva, descTableSize(size), DESC_ALIGN);
    const a = ringLocation(mem, 'avail', opts.availUva, availRingSize(size), AVAIL_ALIGN);
    const u = ringLocation(mem, 'used', opts.usedUva, usedRingSize(size), USED_ALIGN);
    this.mem = mem;
    this.logUsedGpa = opts.logUsedGpa ?? -1;
    this.usedRingBytes = usedRingSize(size);
    this.size = size;
    this.mask = size - 1;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    this.desc32 = new Uint32Array(d.buffer, d.byteOffset, 4 * size);
    this.avail = new Uint16Array(a.buffer, a.byteOffset, 3 + size);
    this.used16 = new Uint16Array(u.buffer, u.byteOffset, 3 + 4 * size);
    this.used32 = new Uint32Array(u.buffer, u.byteOffset + 4, 2 * size);
    this.usedEventIndex = 2 + size;
    this.availEventIndex = 2 + 4 * size;
    // docs/architecture.md §5: start from the guest's used.idx (0 after a guest reboot), never from a stale shadow.
    this.usedIdx = Atomics.load(this.used16, 1);
    this.publishedIdx = this.usedIdx;
  }

  /** Next avail ring index to process (SET_VRING_BASE sets it, GET_VRING_BASE reads it). */
  get lastAvailIdx(): number {
    return this.nextAvail;
  }
  set lastAvailIdx(v: number) {
    this.nextAvail = v & 0xffff;
    this.shadowAvail = this.nextAvail;
    if (this.parked) this.used16[this.availEventIndex] = this.parkedAvailEvent();
  }

  private markBroken(reason: string): void {
    if (!this.broken) {
      this.broken = true;
      this.brokenReason = reason;
    }
  }

  /** Reload avail.idx (acquire) and check it; returns the number of pending heads, 0 if broken. */
  private refreshAvail(): number {
    const idx = loadAvailIdx(this.avail);
    const n = (idx - this.nextAvail) & 0xffff;
    // docs/architecture.md §6: more than `size` outstanding heads means the driver is broken.
    if (n > this.size) {
      this.markBroken(`avail idx jumped by ${n} > queue size ${this.size} (avail.idx ${idx}, last_avail_idx ${this.nextAvail})`);
      return 0;
    }
    this.shadowAvail = idx;
    // Once per reload, not per pop: keeps the parked avail_event behind the driver however far the ring runs.
    if (this.parked) this.used16[this.availEventIndex] = this.parkedAvailEvent();
    return n;
  }

  /** Heads the driver has made available and we have not popped yet. 0 (and broken) on a bad avail.idx. */
  availCount(): number {
    if (this.broken) return 0;
    return this.refreshAvail();
  }

  /**
   * Pop the next head into `chain` and walk it. False when empty or broken. On true, `chain.error` may be set:
   * complete that head with used len 0. A head index ≥ size breaks the queue (nothing valid to return).
   */
  pop(chain: DescriptorChain): boolean {
    if (this.broken) return false;
    if (this.resubmit.length !== 0) {
      if (this.resubmitPos < this.resubmit.length) {
        const h = this.resubmit[this.resubmitPos++];
        this.resubmitAvail = this.nextAvail;
        chain.walk(this.mem, this.desc32, this.size, h, this.indirect);
        this.inflight?.take(h);
        return true;
      }
      // All handed out: kept for unpop() until `size` avail pops put them out of its reach (before the u16 wraps).
      if (((this.nextAvail - this.resubmitAvail) & 0xffff) >= this.size) {
        this.resubmit = [];
        this.resubmitPos = 0;
      }
    }
    const cur = this.nextAvail;
    if (cur === this.shadowAvail && this.refreshAvail() === 0) return false;
    // Read only after the acquire load of avail.idx (refreshAvail) — rule 2.
    const head = this.avail[2 + (cur & this.mask)];
    if (head >= this.size) {
      this.markBroken(`avail ring entry ${cur} holds head ${head} >= queue size ${this.size} (VIRTIO 1.2 §2.7.6)`);
      return false;
    }
    this.nextAvail = (cur + 1) & 0xffff;
    chain.walk(this.mem, this.desc32, this.size, head, this.indirect);
    if (this.inflight !== null) this.inflight.take(head);
    return true;
  }

  /**
   * Give back the last `n` chains pop() returned, `chains[0..n)` in pop order, with nothing added to the used ring
   * for them (net MRG_RXBUF: a frame that does not fit leaves its buffers for the next frame; libvhost-user
   * vu_queue_rewind). Undoes all that pop() advanced: lastAvailIdx, the inflight takes, the resubmit cursor, and
   * the parked avail_event. Re-popping reads the avail ring again: nothing decided on these heads is kept.
   */
  unpop(chains: readonly DescriptorChain[], n: number): void {
    if (n <= 0) return;
    // Resubmitted heads are popped before avail entries, so the last n pops are resubmits then avail pops.
    const fromAvail = this.resubmitPos > 0 ? Math.min(n, (this.nextAvail - this.resubmitAvail) & 0xffff) : n;
    if (n > chains.length || n - fromAvail > this.resubmitPos || n > this.size) {
      throw new RangeError(`unpop(${n}) gives back more chains than were popped`);
    }
    const inflight = this.inflight;
    if (inflight !== null) for (let i = n - 1; i >= 0; i--) inflight.untake(chains[i].head);
    this.nextAvail = (this.nextAvail - fromAvail) & 0xffff;
    this.resubmitPos -= n - fromAvail;
    if (this.parked) this.used16[this.availEventIndex] = this.parkedAvailEvent();
  }

  /** Write used element {head, len} at usedIdx % size and advance the shadow (not visible until publishUsed). */
  addUsed(head: number, len: number): void {
    const i = (this.usedIdx & this.mask) << 1;
    this.used32[i] = head;
    this.used32[i + 1] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    if (this.inflight !== null) this.inflight.addUsed(head);
  }

  /** Head id of used ring entry `slot` as it is in guest memory (inflight recovery). */
  usedId(slot: number): number {
    return this.used32[(slot & this.mask) << 1];
  }

  /** Track takes and completions in `inflight` from now on (vhost-user spec, "Inflight I/O tracking"). */
  attachInflight(inflight: InflightQueue | null): void {
    this.inflight = inflight;
  }

  /** Heads to pop before new avail entries (inflight recovery at ring start). */
  setResubmit(heads: readonly number[]): void {
    this.resubmit = [...heads];
    this.resubmitPos = 0;
  }

  /** Heads still waiting to be resubmitted (carried over when the queue is rebuilt). */
  pendingResubmit(): number[] {
    return this.resubmit.slice(this.resubmitPos);
  }

  /**
   * Publish everything added since the last publish with one used.idx store (release), full fence, then decide
   * whether the driver wants an interrupt. Returns true if the caller must write the call eventfd.
   * EVENT_IDX (§2.7.7): vring_need_event(used_event, new, signalled_used), always true on the first publish after
   * start (signalled_used invalid; DPDK 2f706027c8). Otherwise (§2.7.7): unless avail.flags has NO_INTERRUPT.
   */
  publishUsed(): boolean {
    const newIdx = this.usedIdx;
    if (newIdx === this.publishedIdx) {
      if (this.mem.dirtyLog !== null) this.logUsedRing(); // avail_event may have moved (pop)
      return false;
    }
    this.publishedIdx = newIdx;
    const inflight = this.inflight;
    if (inflight !== null) inflight.prePublish();
    let notify: boolean;
    if (this.eventIdx) {
      const usedEvent = publishUsedIdx(this.used16, newIdx, this.avail, this.usedEventIndex);
      const old = this.signalledUsed;
      const valid = this.signalledUsedValid;
      this.signalledUsed = newIdx;
      this.signalledUsedValid = true;
      notify = !valid || vringNeedEvent(usedEvent, newIdx, old);
    } else {
      const flags = publishUsedIdx(this.used16, newIdx, this.avail, 0);
      notify = (flags & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (inflight !== null) inflight.postPublish(newIdx);
    // Live migration: after the writes, mark the used ring's pages (vhost-user spec, "Migration").
    if (this.mem.dirtyLog !== null) this.logUsedRing();
    return notify;
  }

  /**
   * Mark the whole used ring (flags, idx, elements, avail_event: at most 2-3 pages) in the dirty log, if the
   * front-end asked for used-ring logging. Coarser than per element, and always correct.
   */
  /**
   * avail_event while kicks are off: a queue size behind lastAvailIdx. The driver kicks when the avail_event slot is
   * in [old, new) of its batch (vring_need_event, VIRTIO 1.2 §2.7.10); here new - avail_event - 1 = new -
   * lastAvailIdx + size is at least size >= new - old, so no batch kicks. One behind would not do: a driver stores
   * avail.idx per buffer it adds (Linux virtqueue_add_split), so a device that pops the first buffers of a batch and
   * reloads avail.idx again before the batch's kick decision re-parks inside it. Exact while that sum stays below
   * 2^16 (every re-park; queues up to 21845 entries); past it, the worst is a spurious kick.
   */
  private parkedAvailEvent(): number {
    return (this.nextAvail - 1 - this.size) & 0xffff;
  }

  private logUsedRing(): void {
    if (this.logUsedGpa >= 0) this.mem.dirtyLog!.logRange(this.logUsedGpa, this.usedRingBytes);
  }

  /**
   * Ask the driver not to kick while we are processing (or ever: net RX, poll mode). Without EVENT_IDX: set
   * used.flags NO_NOTIFY (§2.7.8). With EVENT_IDX (§2.7.10): park avail_event (parkedAvailEvent). No fence: a kick
   * that races with parking is merely spurious.
   */
  disableNotification(): void {
    if (this.eventIdx) {
      if (this.parked) return;
      this.parked = true;
      this.used16[this.availEventIndex] = this.parkedAvailEvent();
    } else {
      this.used16[0] = VIRTQ_USED_F_NO_NOTIFY;
    }
    if (this.mem.dirtyLog !== null) this.logUsedRing();
  }

  /**
   * Re-arm kicks before going idle: without EVENT_IDX clear NO_NOTIFY, with EVENT_IDX write avail_event =
   * lastAvailIdx; full fence; re-read avail.idx. Returns true if buffers arrived meanwhile: the caller must
   * process again (and may disable again) instead of sleeping. False when broken.
   */
  enableNotification(): boolean {
    if (this.broken) return false;
    this.parked = false;
    const idx = this.eventIdx
      ? enableAndRecheck(this.used16, this.availEventIndex, this.nextAvail, this.avail)
      : enableAndRecheck(this.used16, 0, 0, this.avail);
    if (this.mem.dirtyLog !== null) this.logUsedRing();
    const n = (idx - this.nextAvail) & 0xffff;
    if (n > this.size) {
      this.markBroken(`avail idx jumped by ${n} > queue size ${this.size} (avail.idx ${idx}, last_avail_idx ${this.nextAvail})`);
      return false;
    }
    this.shadowAvail = idx;
    return n !== 0;
  }

  /** Next publishUsed() notifies unconditionally (ring start/restart, reconnect: DPDK 2f706027c8). */
  invalidateSignalled(): void {
    this.signalledUsedValid = false;
  }

  /**
   * Ring restart: re-read used.idx from guest memory into the shadow, forget what was published and
   * signalled, so the first publish after restart always notifies.
   */
  resetSignalled(): void {
    this.usedIdx = Atomics.load(this.used16, 1);
    this.publishedIdx = this.usedIdx;
    this.signalledUsed = this.usedIdx;
    this.signalledUsedValid = false;
  }
}
