/**
 * MacTable: the switch's forwarding database, MacKey → PortId, with Snabb-style generational aging.
 * Design (house style §3.7, Snabb apps/bridge/mac_table.lua): two Maps, `main` and `shadow`. learn() writes
 * both, lookup() reads `main`, rotate() makes `shadow` the new `main` and starts an empty `shadow`. Invariant:
 * every shadow entry is also in main with the same port. No per-entry timestamps, no clock on the hot path.
 * Age bounds: rotating every T = timeout/2 seconds, an entry last seen at time s survives until the second
 * rotation after s, i.e. it disappears at some time in (s + timeout/2, s + timeout] (plus up to one tick
 * period of lateness when ticks are coarse). veb keeps a dynamic entry exactly `timeout` (veb-switch.md §1.10).
 * Full table (`maxAddr`, counted on `main`): nothing new is learned, nothing is evicted, the refusal is
 * counted, and frames to the unknown MAC are flooded (etherbridge_map behaviour, veb-switch.md §1.10, §4.2).
 * Static entries (later issue): live in `statics`, outside the rotating generations, never aged or moved.
 */
import { isMulticast, isZero, type MacKey } from './mac.js';
import { NO_PORT, type PortId } from './port.js';

/** learn() result: source already known on this port (refreshed). */
export const LEARN_KNOWN = 0;
/** learn() result: new entry added. */
export const LEARN_NEW = 1;
/** learn() result: the MAC was on another port and now points here (MAC move). */
export const LEARN_MOVED = 2;
/** learn() result: table full, not learned. */
export const LEARN_FULL = 3;
/** learn() result: multicast or all-zero source, never learned. */
export const LEARN_INVALID = 4;
/** One of the LEARN_* values. */
export type LearnResult = 0 | 1 | 2 | 3 | 4;

/** Default table size (veb's default is 100, far too small for VM fleets: veb-switch.md §4.2). */
export const DEFAULT_MAX_ADDR = 4096;
/** Default dynamic entry lifetime in seconds (veb `timeout`, veb-switch.md §1.2). */
export const DEFAULT_TIMEOUT_SEC = 240;

/** One row of entries(), for display (`vhostctl` / veb's `addr` listing). */
export interface MacEntry {
  mac: MacKey;
  port: PortId;
  /** Upper bound on seconds since last seen (generation granularity); 0 for static entries. */
  ageSec: number;
  static: boolean;
}

/** Options of a MacTable. */
export interface MacTableOptions {
  /** Maximum number of entries (≥ 1). */
  maxAddr?: number;
  /** Dynamic entry lifetime in seconds (≥ 2); entries go after (timeout/2, timeout]. */
  timeoutSec?: number;
}

/** Forwarding database with main/shadow aging. */
export class MacTable {
  readonly maxAddr: number;
  readonly timeoutSec: number;
  /** Rotation period T = timeout/2. */
  readonly rotateSec: number;

  private main = new Map<MacKey, PortId>();
  private shadow = new Map<MacKey, PortId>();
  /**
   * Static entries (later issue, veb `static IF MAC`): consulted before `main` by lookup(), never replaced by
   * learn(), not counted against maxAddr by rotation. Empty for now; only entries()/remove()/size see it.
   */
  private readonly statics = new Map<MacKey, PortId>();
  /** Time of the last rotation (set by the first tick()); NaN until then. */
  private lastRotateSec = NaN;

  /** Learn attempts refused because the table was full. */
  learnFull = 0;
  /** New entries learned. */
  learned = 0;
  /** Entries that moved to another port. */
  moves = 0;
  /** Generation rotations done. */
  rotations = 0;

  constructor(opts: MacTableOptions = {}) {
    const maxAddr = opts.maxAddr ?? DEFAULT_MAX_ADDR;
    const timeoutSec = opts.timeoutSec ?? DEFAULT_TIMEOUT_SEC;
    if (!Number.isInteger(maxAddr) || maxAddr < 1) throw new RangeError(`maxAddr must be an integer ≥ 1, got ${maxAddr}`);
    if (!(timeoutSec >= 2) || !Number.isFinite(timeoutSec)) throw new RangeError(`timeoutSec must be ≥ 2, got ${timeoutSec}`);
    this.maxAddr = maxAddr;
    this.timeoutSec = timeoutSec;
    this.rotateSec = timeoutSec / 2;
  }

  /** Number of dynamic entries (all of `main`) plus static entries. */
  get size(): number {
    return this.main.size + this.statics.size;
  }

  /**
   * Record that `key` was seen as a source on `port`. Hot path: no allocation, and for a known source one Map
   * read (the shadow hit). Multicast and all-zero keys are refused (etherbridge_map).
   */
  learn(key: MacKey, port: PortId): LearnResult {
    const s = this.shadow.get(key);
    if (s === port) return LEARN_KNOWN;
    if (isMulticast(key) || isZero(key)) return LEARN_INVALID;
    // Later issue: `if (this.statics.size !== 0 && this.statics.has(key)) return LEARN_STATIC;`
    const m = this.main.get(key);
    if (m === undefined) {
      if (this.main.size >= this.maxAddr) {
        this.learnFull++;
        return LEARN_FULL;
      }
      this.main.set(key, port);
      this.shadow.set(key, port);
      this.learned++;
      return LEARN_NEW;
    }
    this.shadow.set(key, port);
    if (m === port) return LEARN_KNOWN;
    this.main.set(key, port);
    this.moves++;
    return LEARN_MOVED;
  }

  /** Port of `key`, or NO_PORT (-1). Hot path: one Map read. */
  lookup(key: MacKey): PortId {
    // Later issue: static entries first (`statics.size !== 0` guard keeps the common case one read).
    const p = this.main.get(key);
    return p === undefined ? NO_PORT : p;
  }

  /** Start a new generation: entries not seen since the previous rotation are dropped. */
  rotate(): void {
    const old = this.main;
    this.main = this.shadow;
    old.clear();
    this.shadow = old;
    this.rotations++;
  }

  /**
   * Aging clock, from a coarse timer. The first call sets the epoch; then one rotation per elapsed T. After two
   * rotations both generations are empty, so a long gap (suspend, stalled loop) costs at most two. A clock that
   * goes backwards restarts the epoch. Returns the number of rotations done.
   */
  tick(nowSec: number): number {
    if (!(nowSec >= this.lastRotateSec)) {
      this.lastRotateSec = nowSec;
      return 0;
    }
    let n = 0;
    while (nowSec - this.lastRotateSec >= this.rotateSec) {
      this.rotate();
      this.lastRotateSec += this.rotateSec;
      if (++n === 2) {
        // Both generations are empty now; skip the rest of the gap instead of rotating empty maps.
        if (nowSec - this.lastRotateSec >= this.rotateSec) this.lastRotateSec = nowSec;
        break;
      }
    }
    return n;
  }

  /** Drop every entry (dynamic and static) of `port`, e.g. on disconnect. Control path. Returns entries removed. */
  remove(port: PortId): number {
    let n = 0;
    for (const [k, p] of this.main) {
      if (p === port) {
        this.main.delete(k);
        n++;
      }
    }
    for (const [k, p] of this.shadow) if (p === port) this.shadow.delete(k);
    for (const [k, p] of this.statics) {
      if (p === port) {
        this.statics.delete(k);
        n++;
      }
    }
    return n;
  }

  /** Drop all dynamic entries (veb `flush`). Static entries stay. */
  flush(): void {
    this.main.clear();
    this.shadow.clear();
  }

  /**
   * Snapshot for display, static entries first. `ageSec` is an upper bound: an entry refreshed in the current
   * generation was seen within (now - lastRotation); one only in `main` within that plus T. Control path.
   */
  entries(nowSec?: number): MacEntry[] {
    const out: MacEntry[] = [];
    for (const [mac, port] of this.statics) out.push({ mac, port, ageSec: 0, static: true });
    const since = nowSec === undefined || Number.isNaN(this.lastRotateSec) ? 0 : Math.max(0, nowSec - this.lastRotateSec);
    for (const [mac, port] of this.main) {
      const ageSec = this.shadow.has(mac) ? since : since + this.rotateSec;
      out.push({ mac, port, ageSec, static: false });
    }
    return out;
  }
}
