/**
 * MacTable: the switch's forwarding database, MacKey → PortId, with Snabb-style generational aging.
 * Design (Snabb apps/bridge/mac_table.lua): two Maps, `main` and `shadow`. learn() writes
 * both, lookup() reads `main`, rotate() makes `shadow` the new `main` and starts an empty `shadow`. Invariant:
 * every shadow entry is also in main with the same port. No per-entry timestamps, no clock on the hot path.
 * Age bounds: rotating every T = timeout/2 seconds, an entry last seen at time s survives until the second
 * rotation after s, i.e. it disappears at some time in (s + timeout/2, s + timeout] (plus up to one tick
 * period of lateness when ticks are coarse). veb keeps a dynamic entry exactly `timeout` (OpenBSD if_etherbridge.c).
 * Full table (`maxAddr`, dynamic + static) or a port at its own learn limit: by default nothing new is learned,
 * nothing is evicted, the refusal is counted, and frames to the unknown MAC are flooded (etherbridge_map,
 * if_etherbridge.c). With `evict` (the daemon's setting, docs/configuration.md): the oldest dynamic entry of
 * the port holding most dynamic entries is evicted instead (at a port's own limit: that port's oldest), so a
 * port flooding the table with addresses mostly evicts its own. Static entries are never evicted.
 * Static entries: live in `statics`, outside the rotating generations, never aged, moved or replaced by learning.
 * MAC moves are counted and damped: more than `moveDampCount` moves of one MAC within `moveDampSec` are refused
 * (the entry stays where it is) until that window ends (veb moves at once; docs/configuration.md).
 * Version: `version` changes whenever a learn or lookup could answer differently than before (an entry added, moved,
 * deleted, aged by a rotation, flushed; a static entry; a limit), so a caller may cache answers while it is unchanged
 * (the switch's per-ingress flow cache). A refresh of a known entry does not change it: the next learn of that
 * source is a shadow hit either way. The data path takes keys as 24-bit halves placed once (MacMap.place): no
 * 48-bit key is boxed, learning included.
 */
import { isMulticast, isZero, type MacKey } from './mac.js';
import { NO_PORT, type PortId } from './port.js';
import { HALF, MacMap } from './mac-map.js';

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
/** learn() result: the MAC has a static entry (never learned over). */
export const LEARN_STATIC = 5;
/** learn() result: a move refused by damping (too many moves of this MAC in the window). */
export const LEARN_DAMPED = 6;
/** learn() result: new entry added after evicting another (`lastEvictedPort` tells whose). */
export const LEARN_EVICTED = 7;
/** One of the LEARN_* values. */
export type LearnResult = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7;

/** Default MAC-move damping: more than this many moves of one MAC ... */
export const DEFAULT_MOVE_DAMP_COUNT = 4;
/** ... within this many seconds are refused until the window ends. */
export const DEFAULT_MOVE_DAMP_SEC = 10;
/** Move-window packing: windowStartSec * MOVE_PACK + count. */
const MOVE_PACK = 64;

/** Default table size (veb's default, ifconfig(8), is 100: far too small for VM fleets). */
export const DEFAULT_MAX_ADDR = 4096;
/** Default dynamic entry lifetime in seconds (veb `timeout`, ifconfig(8)). */
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
  /** Maximum number of entries, dynamic and static (≥ 1). */
  maxAddr?: number;
  /** Dynamic entry lifetime in seconds (≥ 2); entries go after (timeout/2, timeout]. */
  timeoutSec?: number;
  /** Default per-port limit of dynamic entries (default: maxAddr). */
  portMaxAddr?: number;
  /** Fair eviction when full instead of refusing (default false: veb's behaviour). */
  evict?: boolean;
  /** Moves of one MAC allowed per window; 0 disables damping (default 4). */
  moveDampCount?: number;
  /** Damping window in seconds (default 10). */
  moveDampSec?: number;
}

/** Forwarding database with main/shadow aging. */
export class MacTable {
  /** Limits; changed only by setLimits() (configuration reload). */
  maxAddr: number;
  timeoutSec: number;
  /** Rotation period T = timeout/2. */
  rotateSec: number;
  portMaxAddr: number;
  readonly evict: boolean;
  readonly moveDampCount: number;
  readonly moveDampSec: number;

  // MacMap, not Map: a 48-bit key would be boxed on every Map operation (an allocation per frame), and a guest could
  // pick MACs that share a bucket. All of them use the process's keys, so one place() serves several (lookupHL).
  private main = new MacMap<PortId>();
  private shadow = new MacMap<PortId>();
  /** Static entries: consulted before `main` by lookup(), never replaced by learn(), never aged or evicted. */
  private readonly statics = new MacMap<PortId>();
  /** Dynamic entries (in `main`) per port, and per-port learn limits; indexed by PortId, grown on demand. */
  private counts = new Int32Array(8);
  private limits = new Int32Array(8);
  /** Recent moves per MAC: windowStartSec * MOVE_PACK + moves in the window. Pruned on tick(). */
  private readonly moveWin = new MacMap<number>();
  /** Time of the last rotation (set by the first tick()); NaN until then. */
  private lastRotateSec = NaN;
  /** Coarse clock: the last tick() time (0 before the first); damping windows use it. */
  private nowSec = 0;

  /** Learn attempts refused because the table (or the port's limit) was full. */
  learnFull = 0;
  /** New entries learned. */
  learned = 0;
  /** Entries that moved to another port. */
  moves = 0;
  /** Moves refused by damping. */
  movesDamped = 0;
  /** Dynamic entries evicted to make room. */
  evicted = 0;
  /** Port whose entry the last LEARN_EVICTED evicted. */
  lastEvictedPort: PortId = NO_PORT;
  /** Generation rotations done. */
  rotations = 0;
  /**
   * Changes on every mutation that can change what learn() or lookup() answers (see the file comment); never on a
   * refresh of a known entry. A plain number: it leaves the small-integer range only after ~2^30 changes, and stays
   * exact (a double) far beyond any table's lifetime.
   */
  version = 0;

  constructor(opts: MacTableOptions = {}) {
    const maxAddr = opts.maxAddr ?? DEFAULT_MAX_ADDR;
    const timeoutSec = opts.timeoutSec ?? DEFAULT_TIMEOUT_SEC;
    if (!Number.isInteger(maxAddr) || maxAddr < 1) throw new RangeError(`maxAddr must be an integer ≥ 1, got ${maxAddr}`);
    if (!(timeoutSec >= 2) || !Number.isFinite(timeoutSec)) throw new RangeError(`timeoutSec must be ≥ 2, got ${timeoutSec}`);
    const portMax = opts.portMaxAddr ?? maxAddr;
    if (!Number.isInteger(portMax) || portMax < 1) throw new RangeError(`portMaxAddr must be an integer ≥ 1, got ${portMax}`);
    const dampCount = opts.moveDampCount ?? DEFAULT_MOVE_DAMP_COUNT;
    const dampSec = opts.moveDampSec ?? DEFAULT_MOVE_DAMP_SEC;
    if (!Number.isInteger(dampCount) || dampCount < 0 || dampCount >= MOVE_PACK - 1) throw new RangeError(`moveDampCount must be an integer in 0..${MOVE_PACK - 2}, got ${dampCount}`);
    if (!(dampSec > 0)) throw new RangeError(`moveDampSec must be > 0, got ${dampSec}`);
    this.maxAddr = maxAddr;
    this.timeoutSec = timeoutSec;
    this.rotateSec = timeoutSec / 2;
    this.portMaxAddr = portMax;
    this.evict = opts.evict ?? false;
    this.moveDampCount = dampCount;
    this.moveDampSec = dampSec;
    this.limits.fill(portMax);
  }

  /**
   * Change the table size and the dynamic entry lifetime (configuration reload). A smaller table keeps the entries
   * it has and learns nothing more (or evicts) until it is under the limit; the new timeout applies from the next
   * rotation. The default per-port limit follows `maxAddr` when it was not set apart from it.
   */
  setLimits(opts: { maxAddr?: number; timeoutSec?: number }): void {
    const maxAddr = opts.maxAddr ?? this.maxAddr;
    const timeoutSec = opts.timeoutSec ?? this.timeoutSec;
    if (!Number.isInteger(maxAddr) || maxAddr < 1) throw new RangeError(`maxAddr must be an integer ≥ 1, got ${maxAddr}`);
    if (!(timeoutSec >= 2) || !Number.isFinite(timeoutSec)) throw new RangeError(`timeoutSec must be ≥ 2, got ${timeoutSec}`);
    if (this.portMaxAddr === this.maxAddr && maxAddr !== this.maxAddr) {
      const old = this.portMaxAddr;
      for (let i = 0; i < this.limits.length; i++) if (this.limits[i] === old) this.limits[i] = maxAddr;
      this.portMaxAddr = maxAddr;
    }
    this.maxAddr = maxAddr;
    this.timeoutSec = timeoutSec;
    this.rotateSec = timeoutSec / 2;
    this.version++;
  }

  /**
   * Something outside the table that a cached decision also depends on changed (the switch's ports and their
   * knobs): change `version` so every cached answer is revalidated. Control path.
   */
  bump(): void {
    this.version++;
  }

  /** Number of dynamic entries (all of `main`) plus static entries. */
  get size(): number {
    return this.main.size + this.statics.size;
  }

  /** Number of static entries. */
  get staticCount(): number {
    return this.statics.size;
  }

  /** Dynamic entries of `port`. */
  portCount(port: PortId): number {
    return port >= 0 && port < this.counts.length ? this.counts[port] : 0;
  }

  /** Set the per-port learn limit of `port` (undefined: the table's portMaxAddr). Control path. */
  setPortLimit(port: PortId, limit?: number): void {
    const n = limit ?? this.portMaxAddr;
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`port address limit must be an integer ≥ 1, got ${n}`);
    this.ensurePort(port);
    this.limits[port] = n;
    this.version++;
  }

  /**
   * Record that `key` was seen as a source on `port`. Hot path: no allocation, and for a known source one placement
   * and one Map read pair (the shadow hit). Multicast and all-zero keys are refused (etherbridge_map), static keys
   * are never learned.
   */
  learn(key: MacKey, port: PortId): LearnResult {
    return this.learnHL((key / HALF) | 0, key % HALF | 0, port);
  }

  /**
   * learn() for the data path, with the key as 24-bit halves (Frame.srcHi/srcLo): small integers are never boxed,
   * a 48-bit key passed to a call V8 did not inline is (16 B per frame, bench/net/switch-forward.bench.ts). The key
   * is placed once for every map (they share the process's keys); a known source costs two Map reads, and the rest
   * (learnPlaced) works on the placed halves too.
   */
  learnHL(hi: number, lo: number, port: PortId): LearnResult {
    const sh = this.shadow;
    sh.place(hi, lo);
    const ph = sh.placedHi;
    const pl = sh.placedLo;
    if (sh.getPlaced(ph, pl) === port) return LEARN_KNOWN;
    return this.learnPlaced(hi, lo, ph, pl, port);
  }

  /** lookup() for the data path, with the key as 24-bit halves (see learnHL). One keyed placement for both maps. */
  lookupHL(hi: number, lo: number): PortId {
    const main = this.main;
    main.place(hi, lo);
    const ph = main.placedHi;
    const pl = main.placedLo;
    if (this.statics.size !== 0) {
      const sp = this.statics.getPlaced(ph, pl);
      if (sp !== undefined) return sp;
    }
    const p = main.getPlaced(ph, pl);
    return p === undefined ? NO_PORT : p;
  }

  /** staticPort() for the data path, with the key as 24-bit halves (see learnHL). */
  staticPortHL(hi: number, lo: number): PortId {
    if (this.statics.size === 0) return NO_PORT;
    const p = this.statics.getHL(hi, lo);
    return p === undefined ? NO_PORT : p;
  }

  /** learn() past the shadow miss: `hi`/`lo` the key's halves, `ph`/`pl` their placement. */
  private learnPlaced(hi: number, lo: number, ph: number, pl: number, port: PortId): LearnResult {
    // I/G bit of the first octet is bit 16 of the upper half (isMulticast); all-zero is isZero.
    if ((hi & 0x10000) !== 0 || (hi === 0 && lo === 0)) return LEARN_INVALID;
    if (this.statics.size !== 0 && this.statics.hasPlaced(ph, pl)) return LEARN_STATIC;
    const m = this.main.getPlaced(ph, pl);
    if (m === undefined) {
      if (port >= this.counts.length) this.ensurePort(port);
      let res: LearnResult = LEARN_NEW;
      if (this.counts[port] >= this.limits[port]) {
        if (!this.evict || !this.evictOldest(port)) {
          this.learnFull++;
          return LEARN_FULL;
        }
        res = LEARN_EVICTED;
      } else if (this.main.size + this.statics.size >= this.maxAddr) {
        if (!this.evict || !this.evictOldest(this.largestPort())) {
          this.learnFull++;
          return LEARN_FULL;
        }
        res = LEARN_EVICTED;
      }
      this.main.setPlaced(ph, pl, port);
      this.shadow.setPlaced(ph, pl, port);
      this.counts[port]++;
      this.learned++;
      this.version++;
      return res;
    }
    if (m === port) {
      this.shadow.setPlaced(ph, pl, port);
      return LEARN_KNOWN;
    }
    if (this.moveDampCount !== 0 && this.damped(ph, pl)) {
      this.movesDamped++;
      return LEARN_DAMPED;
    }
    if (port >= this.counts.length) this.ensurePort(port);
    this.shadow.setPlaced(ph, pl, port);
    this.main.setPlaced(ph, pl, port);
    this.counts[m]--;
    this.counts[port]++;
    this.moves++;
    this.version++;
    return LEARN_MOVED;
  }

  /** Count one move of the key placed as (ph, pl); true if it exceeds the damping budget of the current window. */
  private damped(ph: number, pl: number): boolean {
    const now = Math.floor(this.nowSec);
    const w = this.moveWin.getPlaced(ph, pl);
    let start = now;
    let count = 0;
    if (w !== undefined) {
      start = Math.floor(w / MOVE_PACK);
      count = w - start * MOVE_PACK;
      if (now - start >= this.moveDampSec || now < start) {
        start = now;
        count = 0;
      }
    }
    if (count >= this.moveDampCount) return true;
    this.moveWin.setPlaced(ph, pl, start * MOVE_PACK + count + 1);
    return false;
  }

  /** Port of `key`, or NO_PORT (-1). Hot path: one Map read (two when static entries exist). */
  lookup(key: MacKey): PortId {
    if (this.statics.size !== 0) {
      const sp = this.statics.get(key);
      if (sp !== undefined) return sp;
    }
    const p = this.main.get(key);
    return p === undefined ? NO_PORT : p;
  }

  /** Port of the static entry for `key`, or NO_PORT (the `locked` check). Hot path: at most one Map read. */
  staticPort(key: MacKey): PortId {
    if (this.statics.size === 0) return NO_PORT;
    const p = this.statics.get(key);
    return p === undefined ? NO_PORT : p;
  }

  /**
   * Add (or re-point) a static entry (veb `static IF MAC`). A dynamic entry for the MAC is replaced. A full table
   * makes room by evicting a dynamic entry fairly; with only static entries left it refuses. Throws RangeError
   * for multicast/zero MACs. Returns false when refused. Control path.
   */
  addStatic(key: MacKey, port: PortId): boolean {
    if (isMulticast(key) || isZero(key) || !Number.isInteger(key) || key < 0) throw new RangeError('a static entry needs a unicast MAC');
    this.deleteDynamic(key);
    this.version++; // also when refused: the dynamic entry is gone
    if (!this.statics.has(key) && this.size >= this.maxAddr && !this.evictOldest(this.largestPort())) return false;
    this.statics.set(key, port);
    return true;
  }

  /** Delete the entry for `key`, static or dynamic (veb `deladdr`). Returns true if there was one. */
  delete(key: MacKey): boolean {
    const hadStatic = this.statics.delete(key);
    const had = this.deleteDynamic(key) || hadStatic;
    if (had) this.version++;
    return had;
  }

  private deleteDynamic(key: MacKey): boolean {
    const p = this.main.get(key);
    this.shadow.delete(key);
    if (p === undefined) return false;
    this.main.delete(key);
    this.counts[p]--;
    return true;
  }

  /** Port with most dynamic entries (ties: lowest id), or NO_PORT. O(ports). */
  private largestPort(): PortId {
    let best = NO_PORT;
    let most = 0;
    const c = this.counts;
    for (let i = 0; i < c.length; i++) {
      if (c[i] > most) {
        most = c[i];
        best = i;
      }
    }
    return best;
  }

  /**
   * Evict the oldest dynamic entry of `port` (first in `main`'s iteration order: after a rotation it follows first
   * sighting in the previous generation, grouped by MacMap's stored upper half, which almost every MAC has to itself).
   * False if it has none.
   */
  private evictOldest(port: PortId): boolean {
    if (port < 0 || port >= this.counts.length || this.counts[port] === 0) return false;
    for (const [k, p] of this.main) {
      if (p === port) {
        this.main.delete(k);
        this.shadow.delete(k);
        this.counts[port]--;
        this.evicted++;
        this.lastEvictedPort = port;
        this.version++;
        return true;
      }
    }
    return false;
  }

  private ensurePort(port: PortId): void {
    if (port < this.counts.length) return;
    const cap = Math.max(port + 1, this.counts.length * 2);
    const c = new Int32Array(cap);
    c.set(this.counts);
    const l = new Int32Array(cap).fill(this.portMaxAddr);
    l.set(this.limits);
    this.counts = c;
    this.limits = l;
  }

  private recount(): void {
    this.counts.fill(0);
    for (const [, p] of this.main) this.counts[p]++;
  }

  /** Start a new generation: entries not seen since the previous rotation are dropped. */
  rotate(): void {
    const old = this.main;
    this.main = this.shadow;
    old.clear();
    this.shadow = old;
    this.rotations++;
    this.version++;
    this.recount();
  }

  /**
   * Aging clock, from a coarse timer. The first call sets the epoch; then one rotation per elapsed T. After two
   * rotations both generations are empty, so a long gap (suspend, stalled loop) costs at most two. A clock that
   * goes backwards restarts the epoch. Also the damping clock. Returns the number of rotations done.
   */
  tick(nowSec: number): number {
    this.nowSec = nowSec;
    if (this.moveWin.size !== 0) {
      for (const [k, w] of this.moveWin) if (nowSec - Math.floor(w / MOVE_PACK) >= this.moveDampSec) this.moveWin.delete(k);
    }
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

  /**
   * Drop the entries of `port`, e.g. on disconnect: dynamic ones, and static ones too unless `keepStatic`.
   * Control path. Returns entries removed.
   */
  remove(port: PortId, keepStatic = false): number {
    let n = 0;
    for (const [k, p] of this.main) {
      if (p === port) {
        this.main.delete(k);
        n++;
      }
    }
    for (const [k, p] of this.shadow) if (p === port) this.shadow.delete(k);
    if (port >= 0 && port < this.counts.length) this.counts[port] = 0;
    this.version++;
    if (!keepStatic) {
      for (const [k, p] of this.statics) {
        if (p === port) {
          this.statics.delete(k);
          n++;
        }
      }
    }
    return n;
  }

  /** Drop all dynamic entries (veb `flush`). Static entries stay. */
  flush(): void {
    this.main.clear();
    this.shadow.clear();
    this.counts.fill(0);
    this.version++;
  }

  /** Drop everything, static entries too (veb `flushall`). */
  flushAll(): void {
    this.flush();
    this.statics.clear();
    this.version++;
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
