/**
 * mapRegion/unmapRegions: turn a frontend region + fd into MemoryRegion windows via the addon's mmapShared.
 * Design: Node 20 caps one typed array at 4 GiB, so a region is mapped as windows of
 * at most 1 GiB. Window boundaries sit at 1 GiB-aligned *guest physical* addresses, not at region-relative offsets:
 * rings must lie inside one window, and guest allocators place rings in naturally aligned blocks, which never
 * cross a 1 GiB-aligned GPA. Each window is its own MemoryRegion with consecutive gpa/uva and origin = desc.
 * Spec: vhost-user SET_MEM_TABLE / ADD_MEM_REG (fd bytes [mmap_offset, mmap_offset+size) back the region).
 */
import { setImmediate } from 'node:timers/promises';
import type { NativeBinding } from '../native/types.js';
import { VhostError } from '../util/errors.js';
import { MemoryRegion, MAX_ADDR, type RegionDesc } from './region.js';
import { copyBatch } from './copy-batch.js';

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

/** Windows mapped per event-loop turn when a table needs more: each 1 GiB window costs V8 a full GC (~2-3 ms). */
export const MAP_WINDOWS_PER_TURN = 4;

function checkDesc(desc: RegionDesc): void {
  for (const [k, v] of [['gpa', desc.gpa], ['uva', desc.uva], ['mmapOffset', desc.mmapOffset]] as const) {
    if (!Number.isSafeInteger(v) || v < 0 || v + desc.size > MAX_ADDR) {
      throw new VhostError('ERR_MEM_RANGE', `memory region ${k} 0x${v.toString(16)} + size 0x${desc.size.toString(16)} is not below 2^53`);
    }
  }
  if (!Number.isSafeInteger(desc.size) || desc.size <= 0) {
    throw new VhostError('ERR_MEM_RANGE', `memory region at GPA 0x${desc.gpa.toString(16)} has invalid size ${desc.size}`);
  }
}

/** What each window's `origin` names: a copy of the region's own four fields, whatever else `desc` carries. */
function originOf(desc: RegionDesc): RegionDesc {
  return { gpa: desc.gpa, size: desc.size, uva: desc.uva, mmapOffset: desc.mmapOffset };
}

/** A table mapped in part when mapping failed: munmap every window mapped so far. */
function unmapTable(native: NativeBinding, table: readonly MemoryRegion[][]): void {
  for (const w of table) unmapRegions(native, w);
}

function mapWindow(native: NativeBinding, desc: RegionDesc, fd: number, w: { gpa: number; size: number }, origin: RegionDesc): MemoryRegion {
  const delta = w.gpa - desc.gpa;
  let ab: ArrayBuffer;
  try {
    ab = native.mmapShared(fd, w.size, desc.mmapOffset + delta, true);
  } catch (err) {
    throw new VhostError('ERR_MEM_MAP', `mmap of memory region GPA 0x${desc.gpa.toString(16)} size 0x${desc.size.toString(16)} (fd ${fd}, offset 0x${desc.mmapOffset.toString(16)}) failed`, { cause: err });
  }
  try {
    const handle = native.mappingHandle(ab);
    return new MemoryRegion({ gpa: w.gpa, size: w.size, uva: desc.uva + delta, mmapOffset: desc.mmapOffset + delta }, ab, 0, origin, handle);
  } catch (err) {
    native.munmap(ab);
    throw err;
  }
}

/**
 * Map fd bytes [mmapOffset, mmapOffset+size) read-write and shared. The caller still owns (and closes) `fd`.
 * @throws VhostError ERR_MEM_RANGE for sizes/addresses ≥ 2^53 or size 0, ERR_MEM_MAP when mmap fails (windows
 *   mapped so far are unmapped first).
 */
export function mapRegion(native: NativeBinding, desc: RegionDesc, fd: number): MemoryRegion[] {
  checkDesc(desc);
  const origin = originOf(desc);
  const out: MemoryRegion[] = [];
  try {
    for (const w of regionWindows(desc)) out.push(mapWindow(native, desc, fd, w, origin));
  } catch (err) {
    unmapRegions(native, out);
    throw err;
  }
  return out;
}

/**
 * Map several regions (one memory table). V8 counts every window's ArrayBuffer as external memory and runs a full
 * GC after each 1 GiB one, so a table of many GiB would hold the event loop for seconds, and every other device
 * with it: past `perTurn` windows the mapping goes on over several turns (a promise), `perTurn` windows at a time.
 * `cancelled()` is asked after each yield (the connection may have gone); everything mapped is then unmapped.
 * Returns the windows per region, in order.
 */
export function mapRegions(
  native: NativeBinding,
  items: readonly { desc: RegionDesc; fd: number }[],
  perTurn = MAP_WINDOWS_PER_TURN,
  cancelled: () => boolean = () => false,
): MemoryRegion[][] | Promise<MemoryRegion[][]> {
  for (const it of items) checkDesc(it.desc);
  const total = items.reduce((n, it) => n + regionWindows(it.desc).length, 0);
  if (total <= perTurn) {
    const out: MemoryRegion[][] = [];
    try {
      for (const it of items) out.push(mapRegion(native, it.desc, it.fd));
    } catch (err) {
      unmapTable(native, out);
      throw err;
    }
    return out;
  }
  return mapInTurns(native, items, perTurn, cancelled);
}

async function mapInTurns(
  native: NativeBinding,
  items: readonly { desc: RegionDesc; fd: number }[],
  perTurn: number,
  cancelled: () => boolean,
): Promise<MemoryRegion[][]> {
  const out: MemoryRegion[][] = [];
  let n = 0;
  try {
    for (const it of items) {
      const origin = originOf(it.desc);
      const wins: MemoryRegion[] = [];
      out.push(wins);
      for (const w of regionWindows(it.desc)) {
        if (n > 0 && n % perTurn === 0) {
          await setImmediate();
          if (cancelled()) throw new VhostError('ERR_MEM_MAP', 'the connection closed while its memory was being mapped');
        }
        wins.push(mapWindow(native, it.desc, it.fd, w, origin));
        n++;
      }
    }
  } catch (err) {
    unmapTable(native, out);
    throw err;
  }
  return out;
}

/** munmap every window (detaching its ArrayBuffer, so stale views read as empty). Idempotent. */
export function unmapRegions(native: NativeBinding, regions: readonly MemoryRegion[]): void {
  copyBatch.run(); // queued copies land first (the addon would refuse them once their mapping is gone)
  for (const r of regions) native.munmap(r.buffer);
}
