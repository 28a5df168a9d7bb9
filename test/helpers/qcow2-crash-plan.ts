/** The deterministic write sequence shared by the crash-test child and the parent that checks the result. */
import { prng } from './qcow2-tools.js';

export function crashWrite(seed: number, i: number, size: number): { offset: number; data: Buffer } {
  const r = prng(seed * 1_000_003 + i);
  const len = 1 + Math.floor(r() * 150_000);
  const offset = Math.floor(r() * (size - len));
  return { offset, data: Buffer.alloc(len, 1 + (i % 255)) };
}
