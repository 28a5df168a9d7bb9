/**
 * BlkSlotRig: a BlkDevice over a real raw image (RawDisk on the io_uring engine when the kernel allows it) and
 * real mmapShared() guest memory, with a driver-side split ring written here. `depth` fixed chains (header, 4 KiB
 * data, status: descriptors 3c..3c+2) are posted once; every used entry is re-posted at once and the device is
 * kicked through an eventfd watched on the event loop, as the vhost-user layer does. The driver side allocates
 * nothing per request, so an allocation measurement over run() sees the device, disk and engine path.
 */
import { loadNative } from '../../src/native/binding.js';
import { POLL_READABLE, type FdWatcher } from '../../src/native/types.js';
import { unmapRegions } from '../../src/memory/mmap-regions.js';
import type { MemoryRegion } from '../../src/memory/region.js';
import type { DeviceQueue } from '../../src/device/device.js';
import { BlkDevice } from '../../src/blk/blk-device.js';
import type { Disk } from '../../src/blk/disk.js';
import { mapGuest, quietLogger } from './mapped-guest.js';
import { SplitQueue } from '../../src/virtqueue/split-queue.js';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/virtqueue/defs.js';
import { VIRTIO_F_VERSION_1, bit } from '../../src/virtio/features.js';
import { VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../src/blk/virtio-blk-defs.js';

const RING = 128;
const MEM = 4 * 1024 * 1024;
const UVA_BASE = 0x7f10_0000_0000;
const DESC = 0x0000;
const AVAIL = 0x1000;
const USED = 0x2000;
const HDRS = 0x4000;
const STATUS = 0x6000;
const DATA = 0x10_0000;
export const BLK_RIG_DATA = 4096;

class Queue implements DeviceQueue {
  readonly hasQueue = true;
  onPublish: () => void = () => {};
  constructor(
    readonly index: number,
    readonly queue: SplitQueue,
  ) {}
  publish(): void {
    this.queue.publishUsed();
    this.onPublish();
  }
}

export class BlkSlotRig {
  readonly dev: BlkDevice;
  readonly u8: Uint8Array;
  private readonly regions: MemoryRegion[];
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private readonly q: Queue;
  private readonly memfd: number;
  private readonly kickFd: number;
  private readonly kickWatch: FdWatcher;
  private availIdx = 0;
  private usedSeen = 0;
  /** Requests still to post (run()), completions seen, completions with a status other than OK. */
  private left = 0;
  completed = 0;
  badStatus = 0;
  /** Kick watcher callbacks (event-loop wakeups on the driver's kicks). */
  wakeups = 0;
  private done: (() => void) | null = null;
  private target = 0;
  private readonly sectors: number;
  private seed = 1;

  constructor(
    readonly disk: Disk,
    readonly depth: number,
  ) {
    const native = loadNative();
    if (3 * depth > RING) throw new Error(`depth ${depth} needs ${3 * depth} descriptors`);
    this.memfd = native.memfdCreate('blk-rig', MEM);
    const g = mapGuest(this.memfd, MEM, UVA_BASE);
    const mem = g.mem;
    ({ regions: this.regions, u8: this.u8, u16: this.u16, u32: this.u32 } = g);
    this.sectors = Math.floor(disk.size / BLK_RIG_DATA) * (BLK_RIG_DATA / 512);
    this.dev = new BlkDevice({ name: 'rig.disk0', disk, log: quietLogger() });
    this.dev.setFeatures(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_BLK_F_FLUSH));
    for (let c = 0; c < depth; c++) {
      this.desc(3 * c, HDRS + 16 * c, 16, VIRTQ_DESC_F_NEXT, 3 * c + 1);
      this.desc(3 * c + 1, DATA + BLK_RIG_DATA * c, BLK_RIG_DATA, VIRTQ_DESC_F_NEXT, 3 * c + 2);
      this.desc(3 * c + 2, STATUS + c, 1, VIRTQ_DESC_F_WRITE, 0);
    }
    const vq = new SplitQueue(mem, { size: RING, descUva: UVA_BASE + DESC, availUva: UVA_BASE + AVAIL, usedUva: UVA_BASE + USED, eventIdx: false, indirect: false });
    this.q = new Queue(0, vq);
    this.q.onPublish = () => this.reap();
    this.kickFd = native.eventfd(0);
    this.kickWatch = native.watch(this.kickFd, POLL_READABLE, () => {
      this.wakeups++;
      native.eventfdRead(this.kickFd);
      this.dev.queueKick(0);
    });
    this.dev.queueStart(this.q);
  }

  private desc(i: number, gpa: number, len: number, flags: number, next: number): void {
    const w = (DESC + 16 * i) / 4;
    this.u32[w] = gpa;
    this.u32[w + 1] = 0;
    this.u32[w + 2] = len;
    this.u32[w + 3] = flags | (next << 16);
  }

  /** Point chain c at a pseudo-random 4 KiB block, as a read (IN, data writable) or a write (OUT). */
  private prepare(c: number, write: boolean): void {
    this.seed = (Math.imul(this.seed, 1103515245) + 12345) >>> 0;
    const sector = (this.seed % (this.sectors / 8)) * 8;
    const h = (HDRS + 16 * c) / 4;
    this.u32[h] = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
    this.u32[h + 1] = 0;
    this.u32[h + 2] = sector;
    this.u32[h + 3] = 0;
    const d = (DESC + 16 * (3 * c + 1)) / 4 + 3;
    this.u32[d] = (write ? 0 : VIRTQ_DESC_F_WRITE) | VIRTQ_DESC_F_NEXT | ((3 * c + 2) << 16);
    this.u8[STATUS + c] = 0xff;
  }

  private write = false;

  private post(c: number): void {
    this.prepare(c, this.write);
    this.u16[(AVAIL + 4) / 2 + (this.availIdx & (RING - 1))] = 3 * c;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.left--;
  }

  /** Used entries since the last publish: counted, their status checked, their chain re-posted while any is left. */
  private reap(): void {
    const idx = Atomics.load(this.u16, (USED + 2) / 2);
    let posted = 0;
    while (this.usedSeen !== idx) {
      const e = (USED + 4) / 4 + 2 * (this.usedSeen & (RING - 1));
      const c = this.u32[e] / 3;
      if (this.u8[STATUS + c] !== 0) this.badStatus++;
      this.completed++;
      this.usedSeen = (this.usedSeen + 1) & 0xffff;
      if (this.left > 0) {
        this.post(c);
        posted++;
      }
    }
    if (posted > 0) {
      Atomics.store(this.u16, (AVAIL + 2) / 2, this.availIdx);
      loadNative().eventfdWrite(this.kickFd, 1);
    }
    if (this.completed === this.target && this.done !== null) {
      const d = this.done;
      this.done = null;
      d();
    }
  }

  /** Run `n` requests (n >= depth) with `depth` in flight; settles once all completed. */
  run(n: number, write: boolean): Promise<void> {
    this.write = write;
    this.left = n;
    this.target = this.completed + n;
    const p = new Promise<void>((resolve) => (this.done = resolve));
    for (let c = 0; c < this.depth; c++) this.post(c);
    Atomics.store(this.u16, (AVAIL + 2) / 2, this.availIdx);
    loadNative().eventfdWrite(this.kickFd, 1);
    return p;
  }

  close(): void {
    this.kickWatch.close();
    void this.dev.queueStop(0);
    this.dev.reset();
    loadNative().close(this.kickFd);
    unmapRegions(loadNative(), this.regions);
    loadNative().close(this.memfd);
  }
}
