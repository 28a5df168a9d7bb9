/**
 * Test data for disk tests: reproducible pseudo-random bytes (an LCG, so host and expectations agree without
 * storing files) and md5 hex digests to compare with what a guest's md5sum prints.
 */
import { createHash } from 'node:crypto';

export const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

/** `len` bytes from seed `seed`: the same bytes on every run. */
export function bytes(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  let x = seed >>> 0;
  for (let i = 0; i < len; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}
