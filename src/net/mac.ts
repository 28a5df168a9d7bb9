/**
 * MAC addresses as plain numbers. Owns the MacKey encoding, reading keys out of frame bytes, and the text form.
 * Design: a 48-bit MAC is one JS number, `hi16 * 2**32 + lo32` (first octet most significant), so it is an
 * exact integer below 2^53, a cheap Map key and comparable with `===`; no BigInt, no strings on the hot path
 * (Snabb mac2u64). IEEE 802 §8.2: the I/G bit (lowest bit of the
 * first octet) marks group (multicast/broadcast) addresses.
 */
import { SgList } from '../memory/sg-list.js';
import { VhostError } from '../util/errors.js';

/** A 48-bit MAC address as an integer: `hi16 * 2**32 + lo32`, first octet most significant. */
export type MacKey = number;

/** Number of octets in a MAC address. */
export const MAC_LEN = 6;

/** ff:ff:ff:ff:ff:ff */
export const BROADCAST: MacKey = 0xffff_ffff_ffff;

/** 00:00:00:00:00:00 (never a valid source; never learned). */
export const ZERO_MAC: MacKey = 0;

const TWO32 = 0x1_0000_0000;

/** Key of the 6 bytes at `u8[off..off+6)`. The caller guarantees the bytes are in range (hot path, no checks). */
export function macKeyAt(u8: Uint8Array, off: number): MacKey {
  const hi = (u8[off] << 8) | u8[off + 1];
  const lo = ((u8[off + 2] << 24) | (u8[off + 3] << 16) | (u8[off + 4] << 8) | u8[off + 5]) >>> 0;
  return hi * TWO32 + lo;
}

/**
 * Key of the 6 bytes at logical offset `pos` of `sg`, or -1 if the list ends first.
 * Fast path: the 6 bytes sit in one entry (the usual case). A MAC split across entries (a guest may split a
 * frame anywhere) takes the byte-by-byte path.
 */
export function macKeyFromSg(sg: SgList, pos: number): MacKey {
  const n = sg.count;
  for (let i = 0; i < n; i++) {
    const len = sg.lens[i];
    if (pos < len) {
      if (pos + MAC_LEN <= len) return macKeyAt(sg.bufs[i], sg.offs[i] + pos);
      return macKeyAcross(sg, i, pos);
    }
    pos -= len;
  }
  return -1;
}

/** Slow path of macKeyFromSg: the MAC starts at `pos` inside entry `i` and continues in later entries. */
function macKeyAcross(sg: SgList, i: number, pos: number): MacKey {
  let key = 0;
  let got = 0;
  for (; i < sg.count && got < MAC_LEN; i++) {
    const buf = sg.bufs[i];
    const base = sg.offs[i];
    const len = sg.lens[i];
    for (; pos < len && got < MAC_LEN; pos++, got++) key = key * 256 + buf[base + pos];
    pos = 0;
  }
  return got === MAC_LEN ? key : -1;
}

/** True for group addresses (multicast and broadcast): I/G bit set. */
export function isMulticast(key: MacKey): boolean {
  // key / 2^32 < 2^16, so `|0` truncation is exact; bit 8 of hi16 is the I/G bit of the first octet.
  return (((key / TWO32) | 0) & 0x100) !== 0;
}

/** True for ff:ff:ff:ff:ff:ff. */
export function isBroadcast(key: MacKey): boolean {
  return key === BROADCAST;
}

/** True for 00:00:00:00:00:00. */
export function isZero(key: MacKey): boolean {
  return key === ZERO_MAC;
}

const MAC_RE = /^[0-9a-f]{1,2}([:-])[0-9a-f]{1,2}(\1[0-9a-f]{1,2}){4}$/i;

/**
 * Parse `fe:e1:bb:f1:c8:01` (also `-` separated, 1–2 hex digits per octet, any case). Control path: throws
 * VhostError ERR_CONFIG on bad syntax.
 */
export function parseMac(text: string): MacKey {
  if (typeof text !== 'string' || !MAC_RE.test(text)) {
    throw new VhostError('ERR_CONFIG', `invalid MAC address ${JSON.stringify(text)} (expected xx:xx:xx:xx:xx:xx)`);
  }
  let key = 0;
  for (const part of text.split(/[:-]/)) key = key * 256 + parseInt(part, 16);
  return key;
}

/** Lower-case colon form, two digits per octet: `fe:e1:bb:f1:c8:01`. */
export function formatMac(key: MacKey): string {
  if (!Number.isInteger(key) || key < 0 || key > BROADCAST) throw new RangeError(`not a MacKey: ${key}`);
  let out = '';
  for (let shift = 40; shift >= 0; shift -= 8) {
    const octet = Math.floor(key / 2 ** shift) % 256;
    out += (shift === 40 ? '' : ':') + (octet < 16 ? '0' : '') + octet.toString(16);
  }
  return out;
}
