/**
 * MacMap: a Map keyed by 48-bit MAC addresses that never boxes its keys, and whose bucket placement a guest cannot
 * predict. A MacKey (hi16·2^32 + lo32) is above V8's small-integer range, so `Map.get(key)` allocates a heap number
 * on every call (measured: 16 B per lookup, bench/net/switch-forward.bench.ts). MacMap splits the key into two
 * 24-bit halves, both small integers, and keeps one inner Map per upper half: two lookups, no allocation per frame.
 *
 * Keyed placement (docs/security.md, "Switch: single fetch and hashing of guest MACs"): V8 hashes small-integer Map
 * keys with a fixed, unseeded function and chains colliding keys in one bucket, so a guest that sends a few thousand
 * source MACs chosen to share a bucket turns every lookup into a walk of the whole chain (measured: 4,000 such keys,
 * ~50 ns → ~40 µs per get). MacMap therefore stores each MAC under a keyed permutation of its halves: a 4-round
 * Feistel network over the two 24-bit halves with round keys drawn at random once per process (or given, for
 * tests). Without the keys a guest cannot tell which addresses share a bucket, so chains stay as short as for
 * random keys (V8's OrderedHashMap keeps at most 2 entries per bucket on average and grows by doubling); the number
 * of entries is bounded by the MAC table's limits. Iteration (control path) inverts the permutation.
 */
import { randomFillSync } from 'node:crypto';
import type { MacKey } from './mac.js';

/** Keys are split at 2^24: hi = floor(key / HALF), lo = key % HALF. */
export const HALF = 0x100_0000; // 2^24
const MASK = HALF - 1;

/** Round keys of this process: random, drawn once at start-up. */
const PROCESS_KEYS: readonly number[] = Array.from(randomFillSync(new Uint32Array(4)));

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
  private readonly k2: number;
  private readonly k3: number;
  /** Output of place(): the permuted halves (small integers in fields: nothing allocated). */
  private pHi = 0;
  private pLo = 0;

  /** `keys`: four 32-bit round keys (tests); default: this process's random keys. */
  constructor(keys: readonly number[] = PROCESS_KEYS) {
    if (keys.length !== 4) throw new RangeError('MacMap needs 4 round keys');
    this.k0 = keys[0] | 0;
    this.k1 = keys[1] | 0;
    this.k2 = keys[2] | 0;
    this.k3 = keys[3] | 0;
  }

  get size(): number {
    return this.count;
  }

  /** Keyed permutation of (hi, lo) into pHi/pLo. */
  private place(hi: number, lo: number): void {
    let l = hi;
    let r = lo;
    let t = l ^ mix(r, this.k0);
    l = r;
    r = t;
    t = l ^ mix(r, this.k1);
    l = r;
    r = t;
    t = l ^ mix(r, this.k2);
    l = r;
    r = t;
    t = l ^ mix(r, this.k3);
    this.pHi = r;
    this.pLo = t;
  }

  /** Inverse of place(): the MacKey stored under (pHi, pLo). */
  private unplace(pHi: number, pLo: number): MacKey {
    let l = pHi;
    let r = pLo;
    let t = r ^ mix(l, this.k3);
    r = l;
    l = t;
    t = r ^ mix(l, this.k2);
    r = l;
    l = t;
    t = r ^ mix(l, this.k1);
    r = l;
    l = t;
    t = r ^ mix(l, this.k0);
    return t * HALF + l;
  }

  get(key: MacKey): V | undefined {
    return this.getHL((key / HALF) | 0, key % HALF | 0);
  }

  /** get() by halves (hi = key / 2^24, lo = key % 2^24): small integers, so no boxing even across calls. */
  getHL(hi: number, lo: number): V | undefined {
    this.place(hi, lo);
    const inner = this.outer.get(this.pHi);
    return inner === undefined ? undefined : inner.get(this.pLo);
  }

  has(key: MacKey): boolean {
    this.place((key / HALF) | 0, key % HALF | 0);
    const inner = this.outer.get(this.pHi);
    return inner !== undefined && inner.has(this.pLo);
  }

  set(key: MacKey, value: V): this {
    this.place((key / HALF) | 0, key % HALF | 0);
    const hi = this.pHi;
    const lo = this.pLo;
    let inner = this.outer.get(hi);
    if (inner === undefined) {
      inner = new Map<number, V>();
      this.outer.set(hi, inner);
    }
    if (!inner.has(lo)) this.count++;
    inner.set(lo, value);
    return this;
  }

  delete(key: MacKey): boolean {
    this.place((key / HALF) | 0, key % HALF | 0);
    const hi = this.pHi;
    const inner = this.outer.get(hi);
    if (inner === undefined || !inner.delete(this.pLo)) return false;
    this.count--;
    if (inner.size === 0) this.outer.delete(hi);
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
