/**
 * MacKey encoding, sg reads (fast path and split across entries), parse/format round trips and the I/G bit.
 * Reference: src/net/mac.ts (MacKey = hi16 * 2**32 + lo32).
 */
import { describe, expect, test } from 'vitest';
import { SgList } from '../../../src/memory/sg-list.js';
import {
  BROADCAST,
  formatMac,
  isBroadcast,
  isMulticast,
  isZero,
  macKeyAt,
  macKeyFromSg,
  parseMac,
} from '../../../src/net/mac.js';

const BYTES = [0xfe, 0xe1, 0xbb, 0xf1, 0xc8, 0x01];
const KEY = 0xfee1 * 2 ** 32 + 0xbbf1c801;

describe('MacKey', () => {
  test('macKeyAt reads six bytes big-endian as hi16 * 2**32 + lo32', () => {
    const u8 = new Uint8Array([0, 0, ...BYTES, 0]);
    expect(macKeyAt(u8, 2)).toBe(KEY);
    expect(macKeyAt(new Uint8Array(6).fill(0xff), 0)).toBe(BROADCAST);
  });

  test('macKeyFromSg takes the fast path inside one entry and walks entries for a split MAC', () => {
    const buf = new Uint8Array([9, 9, ...BYTES, 9]);
    const one = new SgList(2);
    one.push(buf, 0, buf.length);
    expect(macKeyFromSg(one, 2)).toBe(KEY);
    for (let cut = 1; cut < 6; cut++) {
      const a = new Uint8Array([7, ...BYTES.slice(0, cut)]);
      const b = new Uint8Array([...BYTES.slice(cut), 7]);
      const sg = new SgList(3);
      sg.push(a, 1, a.length - 1); // entry offset inside its buffer is honoured
      sg.push(b, 0, b.length);
      expect(macKeyFromSg(sg, 0)).toBe(KEY);
    }
    // Split over three entries, starting in the second.
    const sg = new SgList(4);
    sg.push(new Uint8Array([1, 2]), 0, 2);
    sg.push(new Uint8Array(BYTES.slice(0, 2)), 0, 2);
    sg.push(new Uint8Array(BYTES.slice(2, 3)), 0, 1);
    sg.push(new Uint8Array(BYTES.slice(3)), 0, 3);
    expect(macKeyFromSg(sg, 2)).toBe(KEY);
  });

  test('macKeyFromSg returns -1 when the list ends before six bytes', () => {
    const sg = new SgList(2);
    sg.push(new Uint8Array(BYTES), 0, 4);
    expect(macKeyFromSg(sg, 0)).toBe(-1);
    expect(macKeyFromSg(sg, 10)).toBe(-1);
  });

  test('parseMac and formatMac round-trip and format lower case with two digits', () => {
    expect(parseMac('fe:e1:bb:f1:c8:01')).toBe(KEY);
    expect(parseMac('FE-E1-BB-F1-C8-01')).toBe(KEY);
    expect(parseMac('0:1:2:3:4:5')).toBe(0x0001 * 2 ** 32 + 0x02030405);
    expect(formatMac(KEY)).toBe('fe:e1:bb:f1:c8:01');
    expect(formatMac(0x0001 * 2 ** 32 + 0x02030405)).toBe('00:01:02:03:04:05');
    expect(formatMac(BROADCAST)).toBe('ff:ff:ff:ff:ff:ff');
    for (const k of [0, 1, KEY, BROADCAST, 0x0180c2 * 2 ** 24]) expect(parseMac(formatMac(k))).toBe(k);
  });

  test('parseMac throws ERR_CONFIG on bad syntax', () => {
    for (const bad of ['', 'fe:e1:bb:f1:c8', 'fe:e1:bb:f1:c8:01:02', 'fe:e1:bb:f1:c8:0g', 'fe:e1-bb:f1:c8:01', 'fee1bbf1c801', '100:1:2:3:4:5', ' fe:e1:bb:f1:c8:01']) {
      expect(() => parseMac(bad), bad).toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }));
    }
  });

  test('formatMac rejects numbers that are not 48-bit keys', () => {
    for (const bad of [-1, 2 ** 48, 1.5, NaN]) expect(() => formatMac(bad)).toThrow(RangeError);
  });

  test('isMulticast tests the I/G bit of the first octet; broadcast and zero are recognised', () => {
    expect(isMulticast(parseMac('01:00:5e:00:00:01'))).toBe(true);
    expect(isMulticast(parseMac('33:33:00:00:00:01'))).toBe(true);
    expect(isMulticast(BROADCAST)).toBe(true);
    expect(isMulticast(parseMac('fe:e1:bb:f1:c8:01'))).toBe(false);
    expect(isMulticast(parseMac('02:ff:ff:ff:ff:ff'))).toBe(false);
    expect(isMulticast(parseMac('00:01:00:00:00:00'))).toBe(false);
    expect(isBroadcast(BROADCAST)).toBe(true);
    expect(isZero(0)).toBe(true);
    expect(isZero(1)).toBe(false);
  });
});
