/**
 * MacMap's keyed placement (docs/security.md, "Switch: single fetch and hashing of guest MACs"). V8 hashes
 * small-integer Map keys with a fixed function (ComputeUnseededHash) and chains keys of one bucket, so MACs chosen
 * to collide under it make every lookup walk the chain. These tests build such MACs, then count, with V8's bucket
 * rule, how many entries a lookup of each stored key walks: deterministic probe counts, no timing.
 */
import { describe, expect, test, vi } from 'vitest';
import { MacMap, HALF } from '../../../src/net/mac-map.js';
import { collidingMacs, v8Buckets, v8IntHash } from '../../helpers/mac-collisions.js';

/** Probe counts of a Map<number, …> under V8's chaining: each key walks its bucket's chain up to itself. */
function probes(keys: Iterable<number>, n: number): { total: number; max: number } {
  const mask = v8Buckets(n) - 1;
  const chains = new Map<number, number>();
  for (const k of keys) chains.set(v8IntHash(k) & mask, (chains.get(v8IntHash(k) & mask) ?? 0) + 1);
  let total = 0;
  let max = 0;
  for (const c of chains.values()) {
    total += (c * (c + 1)) / 2;
    max = Math.max(max, c);
  }
  return { total, max };
}

/** Probe counts of a get() of every key stored in `m` (outer map by upper half, then the inner map). */
function mapProbes(m: MacMap<number>): { mean: number; max: number } {
  // The two levels as MacMap stores them (private fields, read for the model only).
  const outer = (m as unknown as { outer: Map<number, Map<number, number>> }).outer;
  const o = probes(outer.keys(), outer.size);
  let total = 0;
  let max = 0;
  for (const inner of outer.values()) {
    const p = probes(inner.keys(), inner.size);
    total += p.total;
    max = Math.max(max, p.max);
  }
  // Each key pays the outer chain of its upper half (counted once per key: weighted by inner sizes) plus its own.
  let outerTotal = 0;
  const mask = v8Buckets(outer.size) - 1;
  const chain = new Map<number, number[]>();
  for (const [hi, inner] of outer) {
    const b = v8IntHash(hi) & mask;
    const list = chain.get(b) ?? [];
    list.push(inner.size);
    chain.set(b, list);
  }
  for (const list of chain.values()) list.forEach((size, i) => (outerTotal += size * (i + 1)));
  return { mean: (outerTotal + total) / m.size, max: o.max + max };
}

const KEYS = [0x0123_4567, 0x89ab_cdef];

describe('MacMap keyed placement', () => {
  const macs = collidingMacs(4000);

  test('the constructed MACs do collide under the unkeyed layout (one bucket: 4000 probes for the last)', () => {
    expect(macs).toHaveLength(4000);
    const lows = macs.map((k) => k % HALF);
    const p = probes(lows, lows.length);
    expect(p.max).toBe(4000);
    expect(p.total / lows.length).toBeGreaterThan(2000);
  });

  test('stored under the keyed permutation they do not: short chains, as for random keys', () => {
    const m = new MacMap<number>(KEYS);
    macs.forEach((k, i) => m.set(k, i));
    expect(m.size).toBe(4000);
    const p = mapProbes(m);
    expect(p.max).toBeLessThanOrEqual(16);
    expect(p.mean).toBeLessThan(4);
    // And every entry is still found, and iteration gives back the original keys.
    macs.forEach((k, i) => expect(m.getHL((k / HALF) | 0, k % HALF)).toBe(i));
    expect([...m.keys()].sort((a, b) => a - b)).toEqual([...macs].sort((a, b) => a - b));
  });

  test('with the process keys too (random per process), and they differ between processes', async () => {
    const m = new MacMap<number>();
    macs.forEach((k, i) => m.set(k, i));
    expect(mapProbes(m).max).toBeLessThanOrEqual(16);
    // A fresh module instance stands for a fresh process: its keys place the same MACs differently.
    vi.resetModules();
    const again = (await import('../../../src/net/mac-map.js')) as typeof import('../../../src/net/mac-map.js');
    const m2 = new again.MacMap<number>();
    macs.forEach((k, i) => m2.set(k, i));
    const place = (x: MacMap<number>) => [...(x as unknown as { outer: Map<number, unknown> }).outer.keys()].slice(0, 16);
    expect(place(m2)).not.toEqual(place(m));
  });

  test('the permutation is a bijection: set/get/delete/iterate over a mix of keys', () => {
    const m = new MacMap<number>(KEYS);
    const keys = [0, 1, HALF - 1, HALF, 0xffff_ffff_ffff, 0xfee1_ba00_0001, 0x0200_0000_0000, 0x0180_c200_0000];
    keys.forEach((k, i) => m.set(k, i));
    expect(m.size).toBe(keys.length);
    keys.forEach((k, i) => {
      expect(m.get(k)).toBe(i);
      expect(m.has(k)).toBe(true);
    });
    expect(new Map(m.entries())).toEqual(new Map(keys.map((k, i) => [k, i])));
    expect(m.delete(keys[2])).toBe(true);
    expect(m.delete(keys[2])).toBe(false);
    expect(m.has(keys[2])).toBe(false);
    expect(m.size).toBe(keys.length - 1);
    m.clear();
    expect(m.size).toBe(0);
    expect([...m]).toEqual([]);
  });

  test('the placed-halves operations (what the MAC table learning uses) agree with the key operations', () => {
    const m = new MacMap<number>(KEYS);
    const keys = [1, HALF - 1, HALF, 0xfee1_ba00_0001, 0x0200_0000_000a, 0x0600_0000_000a];
    const placed = (k: number): [number, number] => {
      m.place(Math.floor(k / HALF), k % HALF);
      return [m.placedHi, m.placedLo];
    };
    keys.forEach((k, i) => m.setPlaced(...placed(k), i));
    expect(m.size).toBe(keys.length);
    keys.forEach((k, i) => {
      expect(m.get(k)).toBe(i);
      expect(m.hasPlaced(...placed(k))).toBe(true);
      expect(m.getPlaced(...placed(k))).toBe(i);
    });
    m.setPlaced(...placed(keys[0]), 9); // overwrite: no new entry
    expect(m.size).toBe(keys.length);
    expect(m.get(keys[0])).toBe(9);
    expect(new Map(m.entries())).toEqual(new Map(keys.map((k, i) => [k, i === 0 ? 9 : i])));
    expect(m.deletePlaced(...placed(keys[3]))).toBe(true);
    expect(m.deletePlaced(...placed(keys[3]))).toBe(false);
    expect(m.has(keys[3])).toBe(false);
    expect(m.size).toBe(keys.length - 1);
  });
});
