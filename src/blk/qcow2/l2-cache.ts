/**
 * L2Cache: an LRU of whole L2 tables keyed by host offset. Dirty tables stay until write-back cleans them; a table
 * being loaded is shared by every request that asks for it meanwhile.
 */
import type { FileIo } from '../file-io.js';
import { preadvFull } from './io.js';

export interface L2Table {
  buf: Buffer;
  dirty: boolean;
}

export class L2Cache {
  private readonly tables = new Map<number, L2Table>();
  private readonly loading = new Map<number, Promise<L2Table>>();

  constructor(
    private readonly io: FileIo,
    private readonly path: string,
    private readonly cs: number,
    /** Tables kept (dirty ones may exceed it until the next write-back). */
    readonly maxTables: number,
  ) {}

  get size(): number {
    return this.tables.size;
  }

  /** The table at host offset `off`, read from the file on a miss. */
  async load(off: number): Promise<L2Table> {
    const hit = this.tables.get(off);
    if (hit) {
      this.tables.delete(off); // LRU: move to the back
      this.tables.set(off, hit);
      return hit;
    }
    const pending = this.loading.get(off);
    if (pending) return pending;
    const p = (async () => {
      const buf = Buffer.alloc(this.cs);
      await preadvFull(this.io, [buf], off, this.path);
      const t: L2Table = { buf, dirty: false };
      this.tables.set(off, t);
      this.evictClean();
      return t;
    })();
    this.loading.set(off, p);
    try {
      return await p;
    } finally {
      this.loading.delete(off);
    }
  }

  /** A new table (allocated or copied), dirty until written back. */
  add(off: number, buf: Buffer): L2Table {
    const t: L2Table = { buf, dirty: true };
    this.tables.set(off, t);
    return t;
  }

  /** The dirty tables with their host offsets. */
  dirtyTables(): Array<[number, L2Table]> {
    return [...this.tables].filter(([, t]) => t.dirty);
  }

  /** Drop least-recently-used clean tables above the cache size (dirty ones wait for write-back). */
  evictClean(): void {
    if (this.tables.size <= this.maxTables) return;
    for (const [off, t] of this.tables) {
      if (this.tables.size <= this.maxTables) break;
      if (!t.dirty) this.tables.delete(off);
    }
  }
}
