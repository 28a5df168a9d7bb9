/**
 * FlowCache: one ingress port's memory of the switch's MAC table steps. Per (source MAC, destination MAC) it keeps
 * the destination lookup's answer, valid for one MacTable.version (src/net/mac-table.ts). The switch decides what a
 * hit may skip (Switch.learnAndLookup); this file only holds the slots.
 * Design: 2^FLOW_BITS direct-mapped slots in typed arrays, preallocated per port: a lookup is a multiplicative hash
 * and five integer compares, an update five stores; nothing is allocated and nothing is ever evicted explicitly
 * (a slot is overwritten by the next flow that maps to it, or goes stale when the version moves). The MACs are
 * the 24-bit halves the switch keeps in Frame (small integers, never boxed). A guest that picks addresses which
 * share a slot only makes its own frames miss, i.e. cost what they cost without the cache.
 */
import type { Frame } from './frame.js';
import type { PortId } from './port.js';

/** Slots per ingress port: 2^FLOW_BITS (16 lost a third of the flows of a 16-port fan-out to collisions). */
export const FLOW_BITS = 6;
const FLOW_SLOTS = 1 << FLOW_BITS;

export class FlowCache {
  /** Per slot: destination lower half, source lower half, destination upper half, source upper half. */
  private readonly macs = new Int32Array(FLOW_SLOTS * 4);
  private readonly outs = new Int32Array(FLOW_SLOTS);
  /** Table version each slot is valid for; -1 = empty (versions start at 0). */
  private readonly vers = new Float64Array(FLOW_SLOTS).fill(-1);

  /** Slot of the frame's (source, destination). */
  slot(frame: Frame): number {
    return Math.imul(frame.dstLo ^ (frame.dstHi << 7) ^ (frame.srcLo << 3) ^ frame.srcHi, 0x9e3779b1) >>> (32 - FLOW_BITS);
  }

  /** True if `slot` holds this frame's (source, destination) at table version `ver`. */
  hit(frame: Frame, slot: number, ver: number): boolean {
    const m = this.macs;
    const i = slot << 2;
    return this.vers[slot] === ver && m[i] === frame.dstLo && m[i + 1] === frame.srcLo && m[i + 2] === frame.dstHi && m[i + 3] === frame.srcHi;
  }

  /** The answer stored in `slot` (after hit() said yes). */
  out(slot: number): PortId {
    return this.outs[slot];
  }

  /** Remember `out` for this frame's (source, destination) at version `ver`. */
  store(frame: Frame, slot: number, ver: number, out: PortId): void {
    const m = this.macs;
    const i = slot << 2;
    m[i] = frame.dstLo;
    m[i + 1] = frame.srcLo;
    m[i + 2] = frame.dstHi;
    m[i + 3] = frame.srcHi;
    this.outs[slot] = out;
    this.vers[slot] = ver;
  }
}
