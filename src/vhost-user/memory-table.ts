/**
 * The guest memory table of one session: SET_MEM_TABLE, ADD_MEM_REG and REM_MEM_REG map and unmap the front-end's
 * regions, SET_LOG_BASE maps the dirty log. The session owns it, and decides when a change may run (no blk request
 * in flight).
 */
import type { NativeBinding } from '../native/types.js';
import { closeAll } from '../native/fd.js';
import { GuestMemory } from '../memory/guest-memory.js';
import type { MemoryRegion } from '../memory/region.js';
import { MAP_WINDOWS_PER_TURN, mapRegions, unmapRegions } from '../memory/mmap-regions.js';
import { DirtyLog } from '../memory/dirty-log.js';
import { VhostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import {
  decodeMemTable,
  decodeSingleRegion,
  expectSize,
  readU64,
  u64Payload,
  type Message,
  type RegionDescriptor,
} from './message.js';
import { checkAreaFd, checkRegionFds, expectFds, type FrontendLimits } from './fd-checks.js';

/** GET_MAX_MEM_SLOTS answer: must never decrease across reconnects (docs/protocol.md §2). */
export const MAX_MEM_SLOTS = 32;

interface MappedRegion {
  desc: RegionDescriptor;
  windows: MemoryRegion[];
}

/** What the table needs from the session that owns it. */
export interface MemoryTableHost {
  /** The connection is gone: a table still being mapped is unmapped again. */
  released(): boolean;
  /** LOG_ALL is acked: guest writes are logged in the dirty log. */
  logging(): boolean;
  /** Started rings follow the new memory; null stops them. */
  remapRings(mem: GuestMemory | null): void;
}

export class MemoryTable {
  private current: GuestMemory | null = null;
  private regions: MappedRegion[] = [];
  /** The dirty-page bitmap from SET_LOG_BASE (live migration), active while LOG_ALL is acked. */
  private logBuffer: ArrayBuffer | null = null;
  private dirtyLog: DirtyLog | null = null;

  constructor(
    private readonly native: NativeBinding,
    private readonly log: Logger,
    private readonly limits: FrontendLimits,
    private readonly host: MemoryTableHost,
  ) {}

  /** The guest memory the rings use, or null before the first table. */
  get mem(): GuestMemory | null {
    return this.current;
  }

  /** SET_MEM_TABLE replaces the whole table; it may arrive with rings running (docs/protocol.md §4). */
  setMemTable(msg: Message): null | Promise<null> {
    const descs = decodeMemTable(msg.payload, msg.request);
    expectFds(msg, descs.length);
    checkRegionFds(this.native, msg.request, descs, msg.fds, this.limits.maxGuestMemory);
    const fds = msg.fds.splice(0);
    return this.mapThen('SET_MEM_TABLE', descs.map((desc, i) => ({ desc, fd: fds[i] })), (windows) => {
      this.installMemory(descs.map((desc, i) => ({ desc, windows: windows[i] })), this.regions);
      return null;
    });
  }

  /**
   * Map a table's regions (over several event-loop turns when it is large: mapRegions), close their fds (the
   * mappings keep the memory), then `install`. Synchronous for tables of a few GiB; the connection reads no further
   * request while a promise is pending, and the rings keep serving the old memory until `install` swaps it.
   */
  private mapThen(req: string, items: { desc: RegionDescriptor; fd: number }[], install: (windows: MemoryRegion[][]) => null): null | Promise<null> {
    const fds = items.map((it) => it.fd);
    const failed = (err: unknown): never => {
      throw new VhostError('ERR_MEM_MAP', `${req}: cannot map region: ${(err as Error).message}`, { cause: err });
    };
    let r: MemoryRegion[][] | Promise<MemoryRegion[][]>;
    try {
      r = mapRegions(this.native, items, MAP_WINDOWS_PER_TURN, () => this.host.released());
    } catch (err) {
      closeAll(this.native, fds);
      return failed(err);
    }
    if (!(r instanceof Promise)) {
      closeAll(this.native, fds);
      return install(r);
    }
    this.log.debug({ req }, 'large memory table: mapped over several event-loop turns');
    return r.then(
      (windows) => {
        closeAll(this.native, fds);
        if (this.host.released()) {
          for (const w of windows) unmapRegions(this.native, w);
          return failed(new Error('the connection closed while its memory was being mapped'));
        }
        return install(windows);
      },
      (err: unknown) => {
        closeAll(this.native, fds);
        return failed(err);
      },
    );
  }

  addMemReg(msg: Message): null | Promise<null> {
    const desc = decodeSingleRegion(msg.payload, msg.request);
    expectFds(msg, 1);
    checkRegionFds(this.native, msg.request, [desc], msg.fds, this.memoryBudget(desc));
    const [fd] = msg.fds.splice(0);
    // QEMU 7.2 sends the same region once per queue pair: an identical region is acked, not mapped twice.
    if (this.regions.some((r) => sameRegion(r.desc, desc))) {
      closeAll(this.native, [fd]);
      return null;
    }
    if (this.regions.length >= MAX_MEM_SLOTS) {
      closeAll(this.native, [fd]);
      throw new VhostError('ERR_VU_BAD_PAYLOAD', `ADD_MEM_REG: more than ${MAX_MEM_SLOTS} regions`);
    }
    return this.mapThen('ADD_MEM_REG', [{ desc, fd }], ([windows]) => {
      this.installMemory([...this.regions, { desc, windows }], []);
      return null;
    });
  }

  remMemReg(msg: Message): null {
    const desc = decodeSingleRegion(msg.payload, msg.request);
    if (msg.fds.length > 1) expectFds(msg, 1); // a stray fd MAY come along; the connection closes it
    const gone = this.regions.filter((r) => sameRegion(r.desc, desc));
    if (gone.length === 0) {
      // Already removed (QEMU 7.2 repeats per queue pair): ack.
      return null;
    }
    this.installMemory(this.regions.filter((r) => !gone.includes(r)), gone);
    return null;
  }

  /** Switch to a new region set: validate, remap started rings, then unmap what is no longer used. */
  private installMemory(next: MappedRegion[], retire: MappedRegion[]): void {
    let mem: GuestMemory | null = null;
    if (next.length > 0) {
      try {
        mem = new GuestMemory(next.flatMap((m) => m.windows));
      } catch (err) {
        const fresh = next.filter((m) => !this.regions.includes(m));
        for (const m of fresh) unmapRegions(this.native, m.windows);
        throw err;
      }
    }
    this.current = mem;
    this.regions = next;
    this.applyDirtyLog();
    try {
      this.host.remapRings(mem);
    } finally {
      for (const m of retire) if (!next.includes(m)) unmapRegions(this.native, m.windows);
    }
  }

  /** SET_LOG_BASE: map the front-end's dirty bitmap; reply u64 0 (QEMU 7.2 waits for a reply). */
  setLogBase(msg: Message): Uint8Array {
    expectSize(msg.payload, 16, msg.request);
    expectFds(msg, 1);
    const dv = new DataView(msg.payload.buffer, msg.payload.byteOffset, 16);
    const size = readU64(dv, 0, msg.request, 'mmap_size');
    const offset = readU64(dv, 8, msg.request, 'mmap_offset');
    checkAreaFd(this.native, msg.request, msg.fds[0], offset, size, 'ERR_VU_BAD_FDS');
    const [fd] = msg.fds.splice(0);
    if (size === 0 || size > 2 ** 32) {
      closeAll(this.native, [fd]);
      throw new VhostError('ERR_VU_BAD_PAYLOAD', `SET_LOG_BASE: log size ${size} outside 1..4 GiB`);
    }
    let buf: ArrayBuffer;
    try {
      buf = this.native.mmapShared(fd, size, offset, true);
    } catch (err) {
      throw new VhostError('ERR_MEM_MAP', `SET_LOG_BASE: cannot map the log: ${(err as Error).message}`, { cause: err });
    } finally {
      closeAll(this.native, [fd]);
    }
    const old = this.logBuffer;
    this.logBuffer = buf;
    this.dirtyLog = new DirtyLog(new Uint8Array(buf));
    this.applyDirtyLog();
    if (old) this.native.munmap(old);
    this.log.debug({ size }, 'dirty log mapped');
    return u64Payload(0);
  }

  /** Logging is on when LOG_ALL is acked and a log is mapped; the memory carries it to every writer. */
  applyDirtyLog(): void {
    if (this.current) this.current.dirtyLog = this.host.logging() ? this.dirtyLog : null;
  }

  /** Unmap the dirty log and every region. */
  drop(): void {
    if (this.logBuffer) this.native.munmap(this.logBuffer);
    this.logBuffer = null;
    this.dirtyLog = null;
    for (const m of this.regions) unmapRegions(this.native, m.windows);
    this.regions = [];
    this.current = null;
  }

  /** Which of the regions or the dirty log took a SIGBUS (native/sigbus.c), or null. */
  faulted(): string | null {
    for (const m of this.regions) {
      if (m.windows.some((w) => this.native.mappingFaults(w.buffer) > 0)) return `memory region at GPA 0x${m.desc.gpa.toString(16)}`;
    }
    if (this.logBuffer && this.native.mappingFaults(this.logBuffer) > 0) return 'dirty log';
    return null;
  }

  /** Guest memory ADD_MEM_REG may still add: the limit minus every other region (a repeated region is not new). */
  private memoryBudget(desc: RegionDescriptor): number {
    return this.regions.reduce((left, r) => (sameRegion(r.desc, desc) ? left : left - r.desc.size), this.limits.maxGuestMemory);
  }
}

function sameRegion(a: RegionDescriptor, b: RegionDescriptor): boolean {
  return a.gpa === b.gpa && a.uva === b.uva && a.size === b.size;
}
