/** mulberry32: small seeded PRNG for tests and the fuzzer (no dependencies); same seed ⇒ same sequence. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 2^32). */
  u32(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + (this.u32() % (hi - lo + 1));
  }
  bool(pTrue = 0.5): boolean {
    return this.u32() / 2 ** 32 < pTrue;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

/** `len` seeded pseudo-random bytes (disk images, request data): same seed ⇒ same bytes, and a longer run extends a shorter one. */
export function pattern(len: number, seed: number): Uint8Array {
  return new Rng(seed).bytes(len);
}
