/**
 * Guest memory for the driver-side rigs: one memfd-backed region mapped with mapRegion (so its views carry copy
 * handles, as in the daemon) at guest-physical 0, with the device's GuestMemory and the driver's views on the same
 * bytes; and a logger that writes nothing.
 */
import { Writable } from 'node:stream';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { mapRegion } from '../../src/memory/mmap-regions.js';
import type { MemoryRegion } from '../../src/memory/region.js';
import { loadNative } from '../../src/native/binding.js';
import { createLogger, type Logger } from '../../src/util/log.js';

export interface MappedGuest {
  readonly regions: MemoryRegion[];
  readonly mem: GuestMemory;
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;
}

/** Map `size` bytes of `fd` at guest-physical 0 and front-end address `uva`. */
export function mapGuest(fd: number, size: number, uva: number): MappedGuest {
  const regions = mapRegion(loadNative(), { gpa: 0, size, uva, mmapOffset: 0 }, fd);
  const buffer = regions[0].buffer;
  return { regions, mem: new GuestMemory(regions), u8: regions[0].u8, u16: new Uint16Array(buffer), u32: new Uint32Array(buffer) };
}

/** A logger at `level` that discards every line. */
export function quietLogger(level = 'warn'): Logger {
  return createLogger({ level, destination: new Writable({ write: (_c, _e, cb) => cb() }) });
}
