/**
 * MACs that collide in V8's Map buckets when stored as plain small-integer keys (what MacMap did before its keyed
 * placement): for mac-map.test.ts (probe counts) and bench/net/mac-table.bench.ts (lookup time).
 */
import { HALF } from '../../src/net/mac-map.js';

/** V8's ComputeUnseededHash (src/utils/utils.h), the hash of a small-integer Map key, masked to a Smi. */
export function v8IntHash(key: number): number {
  let h = key >>> 0;
  h = (~h + (h << 15)) >>> 0;
  h = (h ^ (h >>> 12)) >>> 0;
  h = (h + (h << 2)) >>> 0;
  h = (h ^ (h >>> 4)) >>> 0;
  h = Math.imul(h, 2057) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return h & 0x3fffffff;
}

/** Buckets of a V8 OrderedHashMap holding n entries (no deletions): capacity max(4, 2^ceil(log2 n)), 2 per bucket. */
export function v8Buckets(n: number): number {
  let cap = 4;
  while (cap < n) cap *= 2;
  return cap / 2;
}

/**
 * `n` (≤ 4096) locally administered MACs 02:00:00:xx:xx:xx whose lower 24-bit halves share the low 12 bits of
 * V8's hash, i.e. one bucket in every Map of up to 4096 buckets (8192 entries).
 */
export function collidingMacs(n: number): number[] {
  const hi = 0x020000;
  const out: number[] = [];
  for (let lo = 0; lo < HALF && out.length < n; lo++) if ((v8IntHash(lo) & 0xfff) === 0x5a5) out.push(hi * HALF + lo);
  return out;
}
