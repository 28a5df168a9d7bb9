/**
 * MacMap: a Map keyed by 48-bit MAC addresses that never boxes its keys. A MacKey (hi16·2^32 + lo32) is above V8's
 * small-integer range, so `Map.get(key)` allocates a heap number on every call (measured: 16 B per lookup,
 * bench/net/switch-forward.bench.ts). MacMap splits the key into two 24-bit halves, both small integers, and keeps
 * one inner Map per upper half: two lookups, no allocation per frame. Iteration (control path) rebuilds keys.
 */
import type { MacKey } from './mac.js';

/** Keys are split at 2^24: hi = floor(key / HALF), lo = key % HALF. */
export const HALF = 0x100_0000; // 2^24

export class MacMap<V> {
  private readonly outer = new Map<number, Map<number, V>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(key: MacKey): V | undefined {
    const inner = this.outer.get((key / HALF) | 0);
    return inner === undefined ? undefined : inner.get(key % HALF | 0);
  }

  /** get() by halves (hi = key / 2^24, lo = key % 2^24): small integers, so no boxing even across calls. */
  getHL(hi: number, lo: number): V | undefined {
    const inner = this.outer.get(hi);
    return inner === undefined ? undefined : inner.get(lo);
  }

  has(key: MacKey): boolean {
    const inner = this.outer.get((key / HALF) | 0);
    return inner !== undefined && inner.has(key % HALF | 0);
  }

  set(key: MacKey, value: V): this {
    const hi = (key / HALF) | 0;
    let inner = this.outer.get(hi);
    if (inner === undefined) {
      inner = new Map<number, V>();
      this.outer.set(hi, inner);
    }
    const lo = key % HALF | 0;
    if (!inner.has(lo)) this.count++;
    inner.set(lo, value);
    return this;
  }

  delete(key: MacKey): boolean {
    const hi = (key / HALF) | 0;
    const inner = this.outer.get(hi);
    if (inner === undefined || !inner.delete(key % HALF | 0)) return false;
    this.count--;
    if (inner.size === 0) this.outer.delete(hi);
    return true;
  }

  clear(): void {
    this.outer.clear();
    this.count = 0;
  }

  *entries(): IterableIterator<[MacKey, V]> {
    for (const [hi, inner] of this.outer) for (const [lo, v] of inner) yield [hi * HALF + lo, v];
  }

  *keys(): IterableIterator<MacKey> {
    for (const [k] of this.entries()) yield k;
  }

  [Symbol.iterator](): IterableIterator<[MacKey, V]> {
    return this.entries();
  }
}
