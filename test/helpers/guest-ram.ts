/**
 * GuestRam: memfd-backed guest RAM for the driver-side test client, laid out like QEMU's: one memfd shared by
 * two regions at different mmap offsets and non-contiguous front-end virtual addresses, but contiguous guest
 * physical addresses, so buffers and descriptors that cross a region end are exercised. The test maps the memfd itself and gives the driver a
 * GuestMemory over the same bytes the back-end maps from the fds it receives.
 */
import { loadNative } from '../../src/native/binding.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { RegionDescriptor } from '../../src/vhost-user/message.js';

export interface GuestRamOptions {
  /** Size of each of the two regions in bytes (default 2 MiB). */
  regionSize?: number;
  /** Number of regions (1 or 2, default 2). */
  regions?: number;
  /** Pretend front-end virtual addresses start here (QEMU's VA of guest RAM). */
  uvaBase?: number;
  /** DPDK virtio_user style: guest physical address == front-end virtual address. */
  gpaEqualsUva?: boolean;
}

export class GuestRam {
  readonly fd: number;
  readonly regions: RegionDescriptor[];
  readonly mem: GuestMemory;
  private readonly buffers: ArrayBuffer[];

  constructor(opts: GuestRamOptions = {}) {
    const native = loadNative();
    const size = opts.regionSize ?? 2 * 1024 * 1024;
    const count = opts.regions ?? 2;
    const uvaBase = opts.uvaBase ?? 0x7f00_0000_0000;
    this.fd = native.memfdCreate('guest-ram', size * count);
    this.regions = [];
    for (let i = 0; i < count; i++) {
      const uva = uvaBase + i * (size + 0x10_0000); // a hole between the regions' VAs, as in a real process
      this.regions.push({ gpa: opts.gpaEqualsUva ? uva : 0x10_0000 + i * size, size, uva, mmapOffset: i * size });
    }
    this.buffers = this.regions.map((r) => native.mmapShared(this.fd, r.size, r.mmapOffset, true));
    this.mem = GuestMemory.fromArrayBuffers(this.regions.map((r, i) => ({ gpa: r.gpa, uva: r.uva, buffer: this.buffers[i] })));
  }

  /** One fd per region, as SET_MEM_TABLE sends them (the same memfd each time; the receiver gets its own copy). */
  fds(): number[] {
    return this.regions.map(() => this.fd);
  }

  close(): void {
    const native = loadNative();
    for (const b of this.buffers) native.munmap(b);
    native.close(this.fd);
  }
}
