/**
 * mapRegion/unmapRegions: turn a frontend region + fd into MemoryRegion windows via the addon's mmapShared.
 * Design: Node 20 caps one typed array at 4 GiB, so a region is mapped as windows of
 * at most 1 GiB. Window boundaries sit at 1 GiB-aligned *guest physical* addresses, not at region-relative offsets:
 * rings must lie inside one window, and guest allocators place rings in naturally aligned blocks, which never
 * cross a 1 GiB-aligned GPA. Each window is its own MemoryRegion with consecutive gpa/uva and origin = desc.
 * Spec: vhost-user SET_MEM_TABLE / ADD_MEM_REG (fd bytes [mmap_offset, mmap_offset+size) back the region).
 */
import type { NativeBinding } from '../native/types.js';
import { VhostError } from '../util/errors.js';
import { MemoryRegion, MAX_ADDR, type RegionDesc } from './region.js';

/** Largest window mapped as one ArrayBuffer. */
export const MAP_WINDOW = 2 ** 30;

/** The [gpa, size) windows a region is split into (exported for tests; no syscalls). */
export function regionWindows(desc: RegionDesc, window = MAP_WINDOW): { gpa: number; size: number }[] {
  const out: { gpa: number; size: number }[] = [];
  const end = desc.gpa + desc.size;
  let g = desc.gpa;
  while (g < end) {
    const next = Math.min(end, (Math.floor(g / window) + 1) * window);
    out.push({ gpa: g, size: next - g });
    g = next;
  }
  return out;
}

/**
 * Map fd bytes [mmapOffset, mmapOffset+size) read-write and shared. The caller still owns (and closes) `fd`.
 * @throws VhostError ERR_MEM_RANGE for sizes/addresses ≥ 2^53 or size 0, ERR_MEM_MAP when mmap fails (windows
 *   mapped so far are unmapped first).
 */
export function mapRegion(native: NativeBinding, desc: RegionDesc, fd: number): MemoryRegion[] {
  for (const [k, v] of [['gpa', desc.gpa], ['uva', desc.uva], ['mmapOffset', desc.mmapOffset]] as const) {
    if (!Number.isSafeInteger(v) || v < 0 || v + desc.size > MAX_ADDR) {
      throw new VhostError('ERR_MEM_RANGE', `memory region ${k} 0x${v.toString(16)} + size 0x${desc.size.toString(16)} is not below 2^53`);
    }
  }
  if (!Number.isSafeInteger(desc.size) || desc.size <= 0) {
    throw new VhostError('ERR_MEM_RANGE', `memory region at GPA 0x${desc.gpa.toString(16)} has invalid size ${desc.size}`);
  }
  const origin: RegionDesc = { gpa: desc.gpa, size: desc.size, uva: desc.uva, mmapOffset: desc.mmapOffset };
  const out: MemoryRegion[] = [];
  try {
    for (const w of regionWindows(desc)) {
      const delta = w.gpa - desc.gpa;
      const ab = native.mmapShared(fd, w.size, desc.mmapOffset + delta, true);
      out.push(new MemoryRegion({ gpa: w.gpa, size: w.size, uva: desc.uva + delta, mmapOffset: desc.mmapOffset + delta }, ab, 0, origin));
    }
  } catch (err) {
    unmapRegions(native, out);
    if (err instanceof VhostError) throw err;
    throw new VhostError('ERR_MEM_MAP', `mmap of memory region GPA 0x${desc.gpa.toString(16)} size 0x${desc.size.toString(16)} (fd ${fd}, offset 0x${desc.mmapOffset.toString(16)}) failed`, { cause: err });
  }
  return out;
}

/** munmap every window (detaching its ArrayBuffer, so stale views read as empty). Idempotent. */
export function unmapRegions(native: NativeBinding, regions: readonly MemoryRegion[]): void {
  for (const r of regions) native.munmap(r.buffer);
}
