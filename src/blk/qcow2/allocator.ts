/**
 * Cluster allocation: appends at the end of the host file with refcount 1. Clusters freed in this session are not
 * reused (spec-legal: they stay free with refcount 0, and qemu-img check reports nothing).
 */
import type { ImageError } from './errors.js';
import type { HostSpace, Refcounts } from './refcounts.js';

export class Allocator {
  constructor(
    private readonly refs: Refcounts,
    private readonly space: HostSpace,
    private readonly cs: number,
    private readonly corrupt: (m: string, offset: number, op: string) => ImageError,
  ) {}

  /** One new cluster with refcount 1 (in memory; write-back makes it durable). */
  async cluster(): Promise<number> {
    for (let tries = 0; tries < 1 << 20; tries++) {
      const at = this.space.end;
      await this.refs.ensureBlockFor(at);
      if (at !== this.space.end) continue;
      this.space.end += this.cs;
      if ((await this.refs.of(at)) !== 0) continue; // counted but beyond EOF: leave it alone
      await this.refs.adjust(at, 1);
      return at;
    }
    throw this.corrupt('no free cluster found at the end of the file', this.space.end, 'allocate');
  }
}
