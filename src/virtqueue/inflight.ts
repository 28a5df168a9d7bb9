/**
 * InflightQueue: one split ring's part of the vhost-user inflight region (INFLIGHT_SHMFD, vhost-user spec,
 * "Inflight I/O tracking"). The region is a memfd the front-end keeps across back-end crashes; it records which heads
 * were taken from the avail ring and not yet completed, so a restarted back-end can resubmit them.
 *
 * Layout (QueueRegionSplit, little-endian, per queue at i * perQueueBytes(queue_size)):
 *   0 u64 features | 8 u16 version | 10 u16 desc_num | 12 u16 last_batch_head | 14 u16 used_idx
 *   16 + 16*i DescStateSplit: 0 u8 inflight | 1 u8[5] pad | 6 u16 next | 8 u64 counter
 *
 * Protocol (kept by SplitQueue): pop → counter = global++, inflight = 1. Publish of a batch of used entries →
 * link the batch through `next` and store last_batch_head; store used.idx; clear inflight of the batch; store
 * used_idx = used.idx. A crash between the used.idx store and the used_idx store leaves used_idx != used.idx: the
 * batch at last_batch_head was published and must not be resubmitted.
 *
 * Recovery (recover(), at ring start): version 0 = fresh region (after a VM reset): stamp it, nothing to resubmit.
 * Otherwise clear a published-but-uncleared batch (validated: size ≤ desc_num, the `next` walk visits distinct
 * in-flight heads, and they are exactly the heads in the used ring window [used_idx, used.idx)), then resubmit the
 * heads still in flight in ascending counter order. Edge case: last_batch_head defaults to 0, so a region that
 * never completed anything while used.idx moved would, naively, lose desc[0]; the validation refuses such a batch
 * (and a fresh region starts with used_idx = used.idx, so the state does not arise from this back-end).
 * Stores that order the protocol (last_batch_head, used_idx) are Atomics stores: the compiler keeps program order
 * around them, and on x86 they are full barriers, which is what a SIGKILL at any instant needs.
 */

/** Bytes per queue: ALIGN_UP(16 * queue_size + 16, 64) (DPDK get_pervq_shm_size_split). */
export function inflightQueueBytes(queueSize: number): number {
  return Math.ceil((16 * queueSize + 16) / 64) * 64;
}

const V_VERSION = 4; // u16 index
const V_DESC_NUM = 5;
const V_LAST_BATCH_HEAD = 6;
const V_USED_IDX = 7;

export interface InflightRecovery {
  /** The region was fresh (version 0): stamped, nothing resubmitted. */
  fresh: boolean;
  /** Heads to resubmit, in the order they were first taken (ascending counter). */
  resubmit: number[];
  /** Heads of a published-but-uncleared batch that were cleared. */
  clearedBatch: number;
  /** Why an uncleared batch was ignored (invalid), or null. */
  batchProblem: string | null;
}

export class InflightQueue {
  readonly size: number;
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  /** Next counter value (the region's order of takes). */
  private counter = 1;
  /** Heads added to the used ring since the last publish. */
  private readonly batch: Uint16Array;
  private batchLen = 0;

  constructor(buffer: ArrayBuffer, byteOffset: number, queueSize: number) {
    const bytes = inflightQueueBytes(queueSize);
    if (byteOffset % 64 !== 0 || byteOffset + bytes > buffer.byteLength) {
      throw new RangeError(`inflight queue at ${byteOffset}+${bytes} outside the ${buffer.byteLength}-byte region`);
    }
    this.size = queueSize;
    this.u8 = new Uint8Array(buffer, byteOffset, bytes);
    this.u16 = new Uint16Array(buffer, byteOffset, bytes / 2);
    this.u32 = new Uint32Array(buffer, byteOffset, bytes / 4);
    this.batch = new Uint16Array(queueSize);
  }

  get version(): number {
    return this.u16[V_VERSION];
  }
  get descNum(): number {
    return this.u16[V_DESC_NUM];
  }
  get lastBatchHead(): number {
    return this.u16[V_LAST_BATCH_HEAD];
  }
  get usedIdx(): number {
    return this.u16[V_USED_IDX];
  }
  isInflight(head: number): boolean {
    return this.u8[16 + 16 * head] === 1;
  }
  counterOf(head: number): number {
    const w = 4 + 4 * head + 2;
    return this.u32[w + 1] * 2 ** 32 + this.u32[w];
  }

  /** SET_INFLIGHT_FD: the front-end's queue size. */
  setDescNum(n: number): void {
    this.u16[V_DESC_NUM] = n;
  }

  /** A head was taken from the avail ring (or resubmitted): stamp its order, then mark it in flight. */
  take(head: number): void {
    const c = this.counter++;
    const w = 4 + 4 * head + 2;
    this.u32[w] = c % 2 ** 32;
    this.u32[w + 1] = Math.floor(c / 2 ** 32);
    Atomics.store(this.u8, 16 + 16 * head, 1);
  }

  /**
   * Undo the latest take(head) (SplitQueue.unpop, most recent first): the head is no longer in flight and the
   * counter goes back. A driver that put a head in flight twice loses the older record: its own bug.
   */
  untake(head: number): void {
    Atomics.store(this.u8, 16 + 16 * head, 0);
    if (this.counter > 1) this.counter--;
  }

  /** A used entry for `head` was written (not yet published). */
  addUsed(head: number): void {
    if (this.batchLen < this.batch.length) this.batch[this.batchLen++] = head;
  }

  /** Before used.idx is stored: chain the batch through `next` (last added first) and store last_batch_head. */
  prePublish(): void {
    const n = this.batchLen;
    if (n === 0) return;
    let prev = this.batch[0];
    for (let k = 1; k < n; k++) {
      const h = this.batch[k];
      this.u16[8 + 8 * h + 3] = prev; // desc[h].next
      prev = h;
    }
    Atomics.store(this.u16, V_LAST_BATCH_HEAD, prev);
  }

  /** After used.idx = usedIdx was stored: the batch is no longer in flight; then record used_idx. */
  postPublish(usedIdx: number): void {
    const n = this.batchLen;
    for (let k = 0; k < n; k++) this.u8[16 + 16 * this.batch[k]] = 0;
    this.batchLen = 0;
    Atomics.store(this.u16, V_USED_IDX, usedIdx & 0xffff);
  }

  /**
   * Ring start: bring the region in line with the ring (used.idx = `ringUsedIdx`; `usedId(slot)` reads the id of
   * used ring entry `slot`) and return what to resubmit. Throws RangeError when the region does not describe this
   * ring (desc_num ≠ queue size, more heads in flight than the ring holds).
   */
  recover(ringUsedIdx: number, usedId: (slot: number) => number): InflightRecovery {
    const size = this.size;
    this.batchLen = 0;
    if (this.version === 0) {
      for (let h = 0; h < size; h++) this.u8[16 + 16 * h] = 0;
      this.u16[V_DESC_NUM] = size;
      this.u16[V_LAST_BATCH_HEAD] = 0;
      Atomics.store(this.u16, V_USED_IDX, ringUsedIdx & 0xffff);
      Atomics.store(this.u16, V_VERSION, 1);
      this.counter = 1;
      return { fresh: true, resubmit: [], clearedBatch: 0, batchProblem: null };
    }
    if (this.descNum !== size) throw new RangeError(`inflight region desc_num ${this.descNum} differs from the queue size ${size}`);
    let clearedBatch = 0;
    let batchProblem: string | null = null;
    const n = (ringUsedIdx - this.usedIdx) & 0xffff;
    if (n !== 0) {
      const heads = this.batchList(n, ringUsedIdx, usedId);
      if (typeof heads === 'string') batchProblem = heads;
      else {
        for (const h of heads) this.u8[16 + 16 * h] = 0;
        clearedBatch = heads.length;
      }
      Atomics.store(this.u16, V_USED_IDX, ringUsedIdx & 0xffff);
    }
    const resubmit: number[] = [];
    let max = 0;
    for (let h = 0; h < size; h++) {
      if (this.u8[16 + 16 * h] !== 1) continue;
      resubmit.push(h);
      max = Math.max(max, this.counterOf(h));
    }
    resubmit.sort((a, b) => this.counterOf(a) - this.counterOf(b));
    this.counter = max + 1;
    return { fresh: false, resubmit, clearedBatch, batchProblem };
  }

  /** The published-but-uncleared batch of n heads, or the reason it cannot be trusted. */
  private batchList(n: number, ringUsedIdx: number, usedId: (slot: number) => number): number[] | string {
    const size = this.size;
    if (n > size) return `batch of ${n} heads (used.idx ${ringUsedIdx} - used_idx ${this.usedIdx}) exceeds desc_num ${size}`;
    const seen = new Uint8Array(size);
    const heads: number[] = [];
    let h = this.lastBatchHead;
    for (let k = 0; k < n; k++) {
      if (h >= size) return `batch list reaches head ${h} >= ${size}`;
      if (seen[h]) return `batch list revisits head ${h} after ${k} of ${n} entries (never-completed region)`;
      if (this.u8[16 + 16 * h] !== 1) return `batch list head ${h} is not in flight`;
      seen[h] = 1;
      heads.push(h);
      h = this.u16[8 + 8 * h + 3];
    }
    // The same heads must be the ones the used ring window [used_idx, used.idx) published.
    for (let s = this.usedIdx, k = 0; k < n; s = (s + 1) & 0xffff, k++) {
      const id = usedId(s);
      if (id >= size || seen[id] !== 1) return `used ring entry ${s} holds head ${id}, not in the recorded batch`;
      seen[id] = 2;
    }
    return heads;
  }
}
