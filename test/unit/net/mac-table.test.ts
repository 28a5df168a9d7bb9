/**
 * MacTable: learn/lookup/move, main+shadow aging bounds driven by explicit tick() times, the address cap,
 * remove(port), flush() and entries(). Reference: docs/configuration.md (`timeout`, `maxaddr`).
 */
import { describe, expect, test } from 'vitest';
import { parseMac } from '../../../src/net/mac.js';
import { LEARN_FULL, LEARN_INVALID, LEARN_KNOWN, LEARN_MOVED, LEARN_NEW, LEARN_STATIC, MacTable } from '../../../src/net/mac-table.js';

const A = parseMac('02:00:00:00:00:0a');
const B = parseMac('02:00:00:00:00:0b');
const C = parseMac('02:00:00:00:00:0c');

describe('MacTable', () => {
  test('learn() then lookup() finds the port; unknown keys miss with -1', () => {
    const t = new MacTable();
    expect(t.lookup(A)).toBe(-1);
    expect(t.learn(A, 3)).toBe(LEARN_NEW);
    expect(t.learn(A, 3)).toBe(LEARN_KNOWN);
    expect(t.lookup(A)).toBe(3);
    expect(t.size).toBe(1);
    expect(t.learned).toBe(1);
  });

  test('learn() refuses multicast and all-zero sources', () => {
    const t = new MacTable();
    expect(t.learn(parseMac('01:00:5e:00:00:01'), 1)).toBe(LEARN_INVALID);
    expect(t.learn(parseMac('ff:ff:ff:ff:ff:ff'), 1)).toBe(LEARN_INVALID);
    expect(t.learn(0, 1)).toBe(LEARN_INVALID);
    expect(t.size).toBe(0);
  });

  test('learnHL() (the data path, 24-bit halves) answers as learn() does, multicast and zero included', () => {
    const t = new MacTable();
    const hl = (k: number, port: number) => t.learnHL(Math.floor(k / 0x100_0000), k % 0x100_0000, port);
    expect(hl(parseMac('01:00:5e:00:00:01'), 1)).toBe(LEARN_INVALID);
    expect(hl(parseMac('03:00:00:00:00:00'), 1)).toBe(LEARN_INVALID); // I/G bit set, rest zero
    expect(hl(0, 1)).toBe(LEARN_INVALID);
    expect(hl(A, 1)).toBe(LEARN_NEW);
    expect(t.learn(A, 1)).toBe(LEARN_KNOWN);
    expect(hl(A, 2)).toBe(LEARN_MOVED);
    expect(t.lookupHL(Math.floor(A / 0x100_0000), A % 0x100_0000)).toBe(2);
    t.addStatic(B, 4);
    expect(hl(B, 1)).toBe(LEARN_STATIC);
    expect(t.lookup(B)).toBe(4);
    expect(t.size).toBe(2);
  });

  test('a MAC seen on another port moves at once and is counted', () => {
    const t = new MacTable();
    t.learn(A, 1);
    expect(t.learn(A, 2)).toBe(LEARN_MOVED);
    expect(t.lookup(A)).toBe(2);
    expect(t.moves).toBe(1);
    expect(t.size).toBe(1);
  });

  test('an entry not refreshed disappears at the second rotation, a refreshed one survives', () => {
    const t = new MacTable({ timeoutSec: 240 }); // rotation every 120 s
    expect(t.tick(0)).toBe(0); // epoch
    t.learn(A, 1);
    t.learn(B, 2);
    expect(t.tick(119)).toBe(0);
    expect(t.tick(120)).toBe(1);
    expect(t.lookup(A)).toBe(1); // first rotation: still in main
    t.learn(B, 2); // B refreshed in the new generation
    expect(t.tick(240)).toBe(1);
    expect(t.lookup(A)).toBe(-1); // gone after two rotations (age in (120, 240])
    expect(t.lookup(B)).toBe(2);
    expect(t.tick(360)).toBe(1);
    expect(t.lookup(B)).toBe(-1);
    expect(t.rotations).toBe(3);
  });

  test('a long tick gap rotates at most twice and restarts the epoch', () => {
    const t = new MacTable({ timeoutSec: 240 });
    t.tick(1000);
    t.learn(A, 1);
    expect(t.tick(100_000)).toBe(2);
    expect(t.lookup(A)).toBe(-1);
    expect(t.tick(100_119)).toBe(0);
    expect(t.tick(100_120)).toBe(1);
  });

  test('when full, new addresses are not learned and nothing is evicted; known ones still refresh and move', () => {
    const t = new MacTable({ maxAddr: 2 });
    expect(t.learn(A, 1)).toBe(LEARN_NEW);
    expect(t.learn(B, 1)).toBe(LEARN_NEW);
    expect(t.learn(C, 1)).toBe(LEARN_FULL);
    expect(t.learnFull).toBe(1);
    expect(t.lookup(C)).toBe(-1);
    expect(t.learn(A, 2)).toBe(LEARN_MOVED);
    t.tick(0);
    t.tick(120);
    t.tick(240); // both age out, room again
    expect(t.learn(C, 1)).toBe(LEARN_NEW);
  });

  test('remove(port) drops every entry of that port from both generations; flush() drops all', () => {
    const t = new MacTable();
    t.learn(A, 1);
    t.learn(B, 1);
    t.learn(C, 2);
    t.tick(0);
    t.tick(120); // A, B, C now only in main
    t.learn(A, 1); // A also in shadow
    expect(t.remove(1)).toBe(2);
    expect(t.lookup(A)).toBe(-1);
    expect(t.lookup(B)).toBe(-1);
    expect(t.lookup(C)).toBe(2);
    t.rotate();
    expect(t.lookup(A)).toBe(-1); // not resurrected from shadow
    t.learn(A, 1);
    t.flush();
    expect(t.size).toBe(0);
  });

  test('entries() lists every entry with an approximate age bound', () => {
    const t = new MacTable({ timeoutSec: 240 });
    t.tick(0);
    t.learn(A, 1);
    t.tick(120);
    t.learn(B, 2);
    const e = t.entries(130).sort((x, y) => x.mac - y.mac);
    expect(e).toEqual([
      { mac: A, port: 1, ageSec: 130, static: false },
      { mac: B, port: 2, ageSec: 10, static: false },
    ]);
  });

  test('rejects a zero address limit and a timeout below 2 s', () => {
    expect(() => new MacTable({ maxAddr: 0 })).toThrow(RangeError);
    expect(() => new MacTable({ timeoutSec: 1 })).toThrow(RangeError);
  });
});
