/**
 * SlotBlkDriver: a thin benchmark driver on top of the test FakeBlkDriver (which does the vhost-user negotiation).
 * FakeBlkDriver.addChain uses a bump allocator that never frees, so a benchmark of hundreds of thousands of requests
 * cannot use it; instead this driver owns `depth` fixed slots, each with its own three ring descriptors
 * (3i, 3i+1, 3i+2: header, data, status) and its own preallocated header, data and status buffers in guest memory,
 * and calls back per completion (from the used ring, reaped when the call eventfd fires). The caller may resubmit
 * on the same slot from inside the callback. Nothing is allocated per request except the avail-ring publish.
 */
import { FakeBlkDriver, type FakeBlkDriverOptions } from '../../test/helpers/fake-blk-driver.js';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/virtqueue/defs.js';
import { VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../src/blk/virtio-blk-defs.js';
import { fullFence } from '../../src/virtqueue/barrier.js';

export interface Slot {
  readonly index: number;
  readonly header: Uint8Array;
  readonly headerDv: DataView;
  /** maxData bytes; a request uses the first `len`. */
  readonly data: Uint8Array;
  readonly dataDv: DataView;
  readonly status: Uint8Array;
  readonly headerGpa: number;
  readonly dataGpa: number;
  readonly statusGpa: number;
  /** Of the request in flight on this slot. */
  type: number;
  sector: number;
  len: number;
  busy: boolean;
  /** hrtime (ns) at submit. */
  t0: bigint;
}

/** Called per completion: the slot (its data holds what the device wrote), status byte, used.len. */
export type Completion = (slot: Slot, status: number, usedLen: number) => void;

/** VIRTIO_RING_F_INDIRECT_DESC is fine either way; never accept packed rings or IOMMU_PLATFORM (not implemented by this driver). */
const NOT_ACCEPTED = (1n << 33n) | (1n << 34n);

export class SlotBlkDriver extends FakeBlkDriver {
  readonly slots: Slot[] = [];
  onComplete: Completion = () => {
    throw new Error('completion without a handler');
  };
  inFlight = 0;
  completed = 0;
  private lastUsedIdx = 0;

  constructor(o: FakeBlkDriverOptions & { depth: number; maxData: number }) {
    super({ queueSize: 128, eventIdx: true, ...o, numQueues: 1, accept: (x) => x & ~NOT_ACCEPTED });
    const dq = this.queues[0];
    if (o.depth * 3 > dq.size) throw new Error(`depth ${o.depth} needs ${o.depth * 3} descriptors, queue has ${dq.size}`);
    for (let i = 0; i < o.depth; i++) {
      const headerGpa = dq.alloc.alloc(16, 16);
      const dataGpa = dq.alloc.alloc(o.maxData, 4096);
      const statusGpa = dq.alloc.alloc(1, 1);
      const header = this.view(headerGpa, 16);
      const data = this.view(dataGpa, o.maxData);
      this.slots.push({
        index: i,
        header,
        headerDv: new DataView(header.buffer, header.byteOffset, 16),
        data,
        dataDv: new DataView(data.buffer, data.byteOffset, data.length),
        status: this.view(statusGpa, 1),
        headerGpa,
        dataGpa,
        statusGpa,
        type: 0,
        sector: 0,
        len: 0,
        busy: false,
        t0: 0n,
      });
    }
  }

  private view(gpa: number, len: number): Uint8Array {
    const r = this.ram.mem.gpaRange(gpa, len);
    if (!r) throw new Error(`GPA 0x${gpa.toString(16)}+${len} not inside one region`);
    return r.region.u8.subarray(r.offset, r.offset + len);
  }

  /** Put a request on `slot` (IN/OUT of `len` bytes at `sector`, or FLUSH); the data of an OUT must already be in slot.data. */
  submit(slot: Slot, type: number, sector: number, len: number, kick = true): void {
    if (slot.busy) throw new Error(`slot ${slot.index} is busy`);
    const dq = this.queues[0];
    slot.busy = true;
    slot.type = type;
    slot.sector = sector;
    slot.len = len;
    slot.headerDv.setUint32(0, type, true);
    slot.headerDv.setUint32(4, 0, true);
    slot.headerDv.setUint32(8, sector % 2 ** 32, true);
    slot.headerDv.setUint32(12, Math.floor(sector / 2 ** 32), true);
    slot.status[0] = 0xff;
    const d = 3 * slot.index;
    if (type === VIRTIO_BLK_T_FLUSH) {
      dq.writeDesc(d, slot.headerGpa, 16, VIRTQ_DESC_F_NEXT, d + 2);
    } else {
      if (type !== VIRTIO_BLK_T_IN && type !== VIRTIO_BLK_T_OUT) throw new Error(`type ${type} not supported here`);
      dq.writeDesc(d, slot.headerGpa, 16, VIRTQ_DESC_F_NEXT, d + 1);
      dq.writeDesc(d + 1, slot.dataGpa, len, VIRTQ_DESC_F_NEXT | (type === VIRTIO_BLK_T_IN ? VIRTQ_DESC_F_WRITE : 0), d + 2);
    }
    dq.writeDesc(d + 2, slot.statusGpa, 1, VIRTQ_DESC_F_WRITE, 0);
    this.inFlight++;
    slot.t0 = process.hrtime.bigint();
    dq.publish([d]);
    if (kick) this.kickIfNeeded();
  }

  /**
   * Kick if the device asked for it (after submits with kick = false). The avail.idx store must be visible before
   * avail_event is read (VIRTIO 1.2 §2.7.13.4: a memory barrier before the notification decision): without the
   * fence a device that set avail_event and went to sleep and a driver that read the old avail_event can both miss,
   * and the queue stalls with every request in flight.
   */
  kickIfNeeded(): void {
    fullFence();
    if (this.queues[0].needsKick()) this.native.eventfdWrite(this.kickFds[0], 1);
  }

  /** Replaces FakeBlkDriver.reap (called by its call-eventfd watcher): completions go to onComplete by slot. */
  override reap(q: number): void {
    const dq = this.queues[q];
    for (;;) {
      const end = dq.usedIdx();
      while (this.lastUsedIdx !== end) {
        const e = dq.usedElem(this.lastUsedIdx);
        this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
        const slot = this.slots[e.id / 3];
        if (!slot || e.id % 3 !== 0 || !slot.busy) throw new Error(`device completed head ${e.id}, which is not in flight`);
        slot.busy = false;
        this.inFlight--;
        this.completed++;
        this.onComplete(slot, slot.status[0], e.len);
      }
      dq.setUsedEvent(this.lastUsedIdx);
      fullFence();
      if (dq.usedIdx() === this.lastUsedIdx) break;
    }
  }

  /** The ring indexes, for a stall report: which side is waiting for which notification. */
  ringState(): string {
    const dq = this.queues[0];
    return `avail.idx ${dq.availIdx} avail_event ${dq.availEvent()} used.idx ${dq.usedIdx()} reaped ${this.lastUsedIdx} used_event ${dq.usedEvent()}`;
  }

  /** Resolves once nothing is in flight (keeps the event loop alive; native watchers do not). */
  async drain(timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.inFlight > 0) {
      if (Date.now() > end) throw new Error(`${this.inFlight} requests not completed within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}
