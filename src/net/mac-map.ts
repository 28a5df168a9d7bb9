/**
 * MacMap: a Map keyed by 48-bit MAC addresses that never boxes its keys, and whose bucket placement a guest cannot
 * predict. A MacKey (hi16·2^32 + lo32) is above V8's small-integer range, so `Map.get(key)` allocates a heap number
 * on every call (measured: 16 B per lookup, bench/net/switch-forward.bench.ts). MacMap splits the key into two
 * 24-bit halves, both small integers, and keeps one inner Map per upper half: two lookups, no allocation per frame.
 *
 * Keyed placement (docs/security.md, "Switch: single fetch and hashing of guest MACs"): V8 hashes small-integer Map
 * keys with a fixed, unseeded function and chains colliding keys in one bucket, so a guest that sends a few thousand
 * source MACs chosen to share a bucket turns every lookup into a walk of the whole chain (measured: 4,000 such keys,
 * ~50 ns → ~40 µs per get). MacMap therefore stores each MAC under a keyed permutation of its halves: a 2-round
 * Feistel network over the two 24-bit halves (upper' = upper ^ F(lower), lower' = lower ^ F'(upper')) whose round
 * keys are drawn at random once per process (or given, for tests). Both stored halves depend on secret keys and on
 * the whole address, so without the keys a guest cannot tell which addresses share a bucket of either level, and
 * chains stay as short as for random keys (V8's OrderedHashMap holds at most 2 entries per bucket on average and
 * grows by doubling); the number of entries is bounded by the MAC table's limits. The guest never sees the stored
 * halves. Two rounds, not more: the placement is computed on every lookup, and these keys only have to hide bucket
 * choices, not resist an attacker who sees outputs. Iteration (control path) inverts the permutation.
 */
import { randomFillSync } from 'node:crypto';
import type { MacKey } from './mac.js';

/** Keys are split at 2^24: hi = floor(key / HALF), lo = key % HALF. */
export const HALF = 0x100_0000; // 2^24
const MASK = HALF - 1;

/** Round keys of this process: random, drawn once at start-up. */
const PROCESS_KEYS: readonly number[] = Array.from(randomFillSync(new Uint32Array(2)));

/** Feistel round function: a 32-bit mixer (murmur3's finalizer) of the half and the round key, cut to 24 bits. */
function mix(x: number, k: number): number {
  let h = (x ^ k) | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h & MASK;
}

export class MacMap<V> {
  private readonly outer = new Map<number, Map<number, V>>();
  private count = 0;
  private readonly k0: number;
  private readonly k1: number;
  /** Output of place(): the stored halves of the last key placed (small integers in fields: nothing allocated). */
  placedHi = 0;
  placedLo = 0;

  /** `keys`: two 32-bit round keys (tests); default: this process's random keys. */
  constructor(keys: readonly number[] = PROCESS_KEYS) {
    if (keys.length !== 2) throw new RangeError('MacMap needs 2 round keys');
    this.k0 = keys[0] | 0;
    this.k1 = keys[1] | 0;
  }

  get size(): number {
    return this.count;
  }

  /** Keyed permutation of (hi, lo) into placedHi/placedLo (hot path: two round functions). */
  place(hi: number, lo: number): void {
    const h = hi ^ mix(lo, this.k0);
    this.placedHi = h;
    this.placedLo = lo ^ mix(h, this.k1);
  }

  /** Inverse of place(): the MacKey stored under (pHi, pLo). */
  private unplace(pHi: number, pLo: number): MacKey {
    const lo = pLo ^ mix(pHi, this.k1);
    return (pHi ^ mix(lo, this.k0)) * HALF + lo;
  }

  /** get() by stored halves, as place() on a map with the same keys left them (one place() for several maps). */
  getPlaced(pHi: number, pLo: number): V | undefined {
    const inner = this.outer.get(pHi);
    return inner === undefined ? undefined : inner.get(pLo);
  }

  get(key: MacKey): V | undefined {
    return this.getHL((key / HALF) | 0, key % HALF | 0);
  }

  /** get() by halves (hi = key / 2^24, lo = key % 2^24): small integers, so no boxing even across calls. */
  getHL(hi: number, lo: number): V | undefined {
    // place() written out, with locals: small enough for V8 to inline into the switch's per-frame path.
    const h = hi ^ mix(lo, this.k0);
    const inner = this.outer.get(h);
    return inner === undefined ? undefined : inner.get(lo ^ mix(h, this.k1));
  }

  has(key: MacKey): boolean {
    this.place((key / HALF) | 0, key % HALF | 0);
    return this.hasPlaced(this.placedHi, this.placedLo);
  }

  /** has() by stored halves (see getPlaced). */
  hasPlaced(pHi: number, pLo: number): boolean {
    const inner = this.outer.get(pHi);
    return inner !== undefined && inner.has(pLo);
  }

  set(key: MacKey, value: V): this {
    this.place((key / HALF) | 0, key % HALF | 0);
    this.setPlaced(this.placedHi, this.placedLo, value);
    return this;
  }

  /** set() by stored halves (see getPlaced): what the MAC table's learning uses, so no key is boxed. */
  setPlaced(pHi: number, pLo: number, value: V): void {
    let inner = this.outer.get(pHi);
    if (inner === undefined) {
      inner = new Map<number, V>();
      this.outer.set(pHi, inner);
    }
    if (!inner.has(pLo)) this.count++;
    inner.set(pLo, value);
  }

  delete(key: MacKey): boolean {
    this.place((key / HALF) | 0, key % HALF | 0);
    return this.deletePlaced(this.placedHi, this.placedLo);
  }

  /** delete() by stored halves (see getPlaced). */
  deletePlaced(pHi: number, pLo: number): boolean {
    const inner = this.outer.get(pHi);
    if (inner === undefined || !inner.delete(pLo)) return false;
    this.count--;
    if (inner.size === 0) this.outer.delete(pHi);
    return true;
  }

  clear(): void {
    this.outer.clear();
    this.count = 0;
  }

  *entries(): IterableIterator<[MacKey, V]> {
    for (const [hi, inner] of this.outer) for (const [lo, v] of inner) yield [this.unplace(hi, lo), v];
  }

  *keys(): IterableIterator<MacKey> {
    for (const [k] of this.entries()) yield k;
  }

  [Symbol.iterator](): IterableIterator<[MacKey, V]> {
    return this.entries();
  }
}
