/**
 * Fuzz target with planted bugs, to prove the engine finds what it is meant to find (test/fuzz/fuzz.test.ts):
 * a TypeError behind a 4-byte magic ("VHST", one comparison per byte so coverage can lead there; the dictionary
 * holds its two halves, as a format's dictionary holds its magic numbers), and, in the
 * hang variant, an endless loop behind the same magic.
 */
import type { FuzzTarget } from './engine.js';

function planted(data: Uint8Array, hang: boolean): void {
  if (data.length < 4) return;
  if (data[0] !== 0x56) return;
  if (data[1] !== 0x48) return;
  if (data[2] !== 0x53) return;
  if (data[3] !== 0x54) return;
  if (hang) for (;;);
  (null as unknown as { x: number }).x = 1;
}

/** Two halves of the magic: reaching the second needs the coverage of the first to have been kept. */
const dictionary = [new Uint8Array([0x56, 0x48]), new Uint8Array([0x53, 0x54])];

export const crashTarget: FuzzTarget = {
  name: 'selftest-crash',
  maxLen: 16,
  allowed: () => false,
  cover: ['/build/test/fuzz/selftest'],
  dictionary,
  run: (d) => planted(d, false),
};

export const hangTarget: FuzzTarget = {
  name: 'selftest-hang',
  maxLen: 16,
  allowed: () => false,
  cover: ['/build/test/fuzz/selftest'],
  dictionary,
  run: (d) => planted(d, true),
};
