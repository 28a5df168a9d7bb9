/**
 * GuestMemory: the region table and address translation (GPA for descriptors, UVA for ring addresses).
 * Design: regions are validated once (no GPA or UVA overlap) and kept sorted by GPA; findGpa checks the most
 * recently used region first (Snabb map_from_guest), then binary-searches. mapGpa splits a
 * buffer at region ends into several SgList entries (libvhost-user virtqueue_map_desc).
 * Spec: vhost-user spec, "Memory access" (three address spaces; buffers may straddle regions; rings must not).
 */
import { VhostError } from '../util/errors.js';
import type { SgList } from './sg-list.js';
import type { DirtyLog } from './dirty-log.js';
import { MemoryRegion } from './region.js';

/** A region and the byte offset of an address inside it (control path results). */
export interface RegionOffset {
  region: MemoryRegion;
  offset: number;
}

export class GuestMemory {
  /** Regions sorted by GPA. */
  readonly regions: readonly MemoryRegion[];
  private readonly byGpa: MemoryRegion[];
  private mru: MemoryRegion | null = null;
  /** Set while live-migration logging is on (VHOST_F_LOG_ALL + SET_LOG_BASE): writers mark what they wrote. */
  dirtyLog: DirtyLog | null = null;

  /**
   * O(n log n) in the number of windows (a TiB region is a thousand of them): sorted by start, ranges overlap
   * exactly when some range overlaps its successor.
   * @throws VhostError ERR_MEM_OVERLAP when two regions overlap in GPA or UVA space.
   */
  constructor(regions: readonly MemoryRegion[]) {
    for (const a of regions) if (!(a.size > 0)) throw new VhostError('ERR_MEM_RANGE', `memory region ${a.describe()} has size 0`);
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    checkSortedDisjoint(sorted, (r) => r.gpa, 'GPA');
    checkSortedDisjoint([...regions].sort((a, b) => a.uva - b.uva), (r) => r.uva, 'UVA');
    this.byGpa = sorted;
    this.regions = sorted;
  }

  /**
   * Test helper: regions over plain ArrayBuffers (uva defaults to gpa, mmapOffset 0). No addon needed. `handle`:
   * the buffer's mappingHandle() when it is an mmapShared() mapping (copies then go through copyBurst).
   */
  static fromArrayBuffers(list: readonly { gpa: number; uva?: number; buffer: ArrayBuffer; handle?: number }[]): GuestMemory {
    return new GuestMemory(
      list.map((e) => new MemoryRegion({ gpa: e.gpa, size: e.buffer.byteLength, uva: e.uva ?? e.gpa, mmapOffset: 0 }, e.buffer, 0, undefined, e.handle)),
    );
  }

  /** The region containing byte `gpa`, or null. Hot path: MRU first, then binary search. */
  findGpa(gpa: number): MemoryRegion | null {
    const m = this.mru;
    if (m !== null && gpa >= m.gpa && gpa - m.gpa < m.size) return m;
    const rs = this.byGpa;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = rs[mid];
      if (gpa < r.gpa) hi = mid - 1;
      else if (gpa - r.gpa >= r.size) lo = mid + 1;
      else {
        this.mru = r;
        return r;
      }
    }
    return null;
  }

  /**
   * Append entries covering [gpa, gpa+len) to `sg`, split at region ends. Returns false if len is 0 (zero-length
   * descriptors are invalid), any byte lies outside guest memory, or `sg` is full; `sg` may then hold a partial
   * mapping and the caller fails the request.
   */
  mapGpa(gpa: number, len: number, sg: SgList): boolean {
    if (!(len > 0) || gpa + len > Number.MAX_SAFE_INTEGER) return false;
    while (len > 0) {
      const r = this.findGpa(gpa);
      if (r === null) return false;
      const off = gpa - r.gpa;
      const avail = r.size - off;
      const n = len < avail ? len : avail;
      if (!sg.push(r.u8, off, n, gpa, r.handle)) return false;
      gpa += n;
      len -= n;
    }
    return true;
  }

  /** The region holding all of [gpa, gpa+len) and the offset of gpa in it, or null (control path). */
  gpaRange(gpa: number, len: number): RegionOffset | null {
    const r = this.findGpa(gpa);
    if (r === null || !r.containsGpa(gpa, len)) return null;
    return { region: r, offset: gpa - r.gpa };
  }

  /** The region holding all of [uva, uva+len) and the offset of uva in it, or null. Rings must satisfy this. */
  uvaRange(uva: number, len: number): RegionOffset | null {
    for (const r of this.byGpa) {
      if (r.containsUva(uva, len)) return { region: r, offset: uva - r.uva };
    }
    return null;
  }

  /** The region containing byte `uva` (for error messages: tells "outside memory" from "straddles"). */
  findUva(uva: number): MemoryRegion | null {
    for (const r of this.byGpa) if (uva >= r.uva && uva - r.uva < r.size) return r;
    return null;
  }

  /** Hex description of the whole table, for logs. */
  describe(): string {
    return this.byGpa.map((r) => r.describe()).join(', ') || '(no regions)';
  }
}

function checkSortedDisjoint(sorted: readonly MemoryRegion[], start: (r: MemoryRegion) => number, space: string): void {
  for (let i = 0; i + 1 < sorted.length; i++) {
    const a = sorted[i];
    const b = sorted[i + 1];
    if (start(b) < start(a) + a.size) throw new VhostError('ERR_MEM_OVERLAP', `memory regions overlap in ${space} space: ${a.describe()} and ${b.describe()}`);
  }
}
