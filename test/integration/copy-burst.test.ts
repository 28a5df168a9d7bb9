/**
 * copyBurst (native/copy.c) refuses every op it cannot prove safe: handles that are stale (munmapped, or a later
 * mapping in the same slot: another guest), of another thread, or not handles at all; offsets and lengths that are
 * not integers or leave the mapping. Valid ops are memmoves (overlap included). Refused ops are skipped and counted.
 */
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, test } from 'vitest';
import { loadNative } from '../../src/native/binding.js';
import { COPY_MAX_LEN, COPY_OP_FIELDS } from '../../src/native/types.js';

const native = loadNative();
const SIZE = 64 * 1024;

function mapping(size = SIZE): { fd: number; ab: ArrayBuffer; u8: Uint8Array; h: number } {
  const fd = native.memfdCreate('copy-burst', size);
  const ab = native.mmapShared(fd, size, 0, true);
  return { fd, ab, u8: new Uint8Array(ab), h: native.mappingHandle(ab) };
}

function ops(...list: number[][]): Float64Array {
  return new Float64Array(list.flat());
}

describe('copyBurst', () => {
  const fds: number[] = [];
  const track = <T extends { fd: number }>(m: T): T => {
    fds.push(m.fd);
    return m;
  };
  afterAll(() => {
    for (const fd of fds) native.close(fd);
  });

  test('valid ops copy between mappings and within one (overlapping: memmove)', () => {
    const a = track(mapping());
    const b = track(mapping());
    expect(a.h).toBeGreaterThanOrEqual(0);
    expect(b.h).not.toBe(a.h);
    for (let i = 0; i < 256; i++) a.u8[i] = i;
    const o = ops([b.h, 100, a.h, 0, 256], [a.h, 1, a.h, 0, 200], [b.h, SIZE - 8, a.h, 8, 8]);
    expect(native.copyBurst(o, 3)).toBe(0);
    expect([...b.u8.subarray(100, 356)]).toEqual([...Array(256).keys()]);
    expect([...a.u8.subarray(1, 201)]).toEqual([...Array(200).keys()]); // as if copied through a buffer
    expect([...b.u8.subarray(SIZE - 8)]).toEqual([7, 8, 9, 10, 11, 12, 13, 14]); // in order: after the shift by one
    // n counts ops: only the first op of a longer array runs.
    b.u8.fill(0);
    expect(native.copyBurst(o, 1)).toBe(0);
    expect(b.u8[SIZE - 1]).toBe(0);
    native.munmap(a.ab);
    native.munmap(b.ab);
  });

  test('a handle is stale after munmap, also once its slot holds a new mapping (another guest)', () => {
    const src = track(mapping());
    src.u8.fill(0xaa);
    const old = track(mapping());
    const stale = old.h;
    native.munmap(old.ab);
    expect(native.mappingHandle(old.ab)).toBe(-1);
    expect(native.copyBurst(ops([stale, 0, src.h, 0, 16]), 1)).toBe(1);
    expect(native.copyBurst(ops([src.h, 0, stale, 0, 16]), 1)).toBe(1);
    // The next mapping takes the freed slot (lowest free), with a new generation: the old handle never names it.
    const next = track(mapping());
    expect(next.h % 65536).toBe(stale % 65536);
    expect(next.h).not.toBe(stale);
    expect(native.copyBurst(ops([stale, 0, src.h, 0, 16], [next.h, 16, src.h, 0, 16]), 2)).toBe(1);
    expect([...next.u8.subarray(0, 16)]).toEqual(new Array(16).fill(0)); // untouched by the stale op
    expect([...next.u8.subarray(16, 32)]).toEqual(new Array(16).fill(0xaa)); // the current handle works
    native.munmap(next.ab);
    native.munmap(src.ab);
  });

  test('offsets and lengths outside the mapping, non-integers and non-handles are refused, the rest still runs', () => {
    const a = track(mapping());
    const b = track(mapping());
    a.u8.fill(0x55);
    const bad: number[][] = [
      [b.h, SIZE - 15, a.h, 0, 16], // dst end past the mapping
      [b.h, 0, a.h, SIZE - 15, 16], // src end past the mapping
      [b.h, SIZE + 1, a.h, 0, 1], // offset past the end
      [b.h, 0, a.h, 0, 0], // empty
      [b.h, 0, a.h, 0, COPY_MAX_LEN + 1], // longer than any op may be
      [b.h, -1, a.h, 0, 4],
      [b.h, 0.5, a.h, 0, 4],
      [b.h, 0, a.h, 0, NaN],
      [b.h, Infinity, a.h, 0, 4],
      [b.h, 0, a.h, 2 ** 64, 4],
      [-1, 0, a.h, 0, 4],
      [b.h + 0.5, 0, a.h, 0, 4],
      [2 ** 53, 0, a.h, 0, 4],
      [b.h + 65536, 0, a.h, 0, 4], // a generation that was never handed out
      [NaN, 0, a.h, 0, 4],
    ];
    const good = [b.h, 32, a.h, 0, 8];
    expect(native.copyBurst(ops(...bad, good), bad.length + 1)).toBe(bad.length);
    expect([...b.u8.subarray(0, 32)]).toEqual(new Array(32).fill(0));
    expect([...b.u8.subarray(32, 40)]).toEqual(new Array(8).fill(0x55));
    expect(b.u8[SIZE - 1]).toBe(0);
    // The whole mapping, exactly, is fine.
    const big = track(mapping(COPY_MAX_LEN));
    const big2 = track(mapping(COPY_MAX_LEN));
    expect(native.copyBurst(ops([big2.h, 0, big.h, 0, COPY_MAX_LEN]), 1)).toBe(0);
    for (const m of [a, b, big, big2]) native.munmap(m.ab);
  });

  test('a bad call throws; mappingHandle takes only mmapShared() buffers', () => {
    const a = track(mapping());
    expect(() => native.copyBurst(new Uint8Array(40) as unknown as Float64Array, 1)).toThrow(TypeError);
    expect(() => native.copyBurst(new Float64Array(COPY_OP_FIELDS * 2), 3)).toThrow(RangeError);
    expect(native.copyBurst(new Float64Array(0), 0)).toBe(0);
    expect(() => native.mappingHandle(new ArrayBuffer(16))).toThrow(TypeError);
    native.munmap(a.ab);
  });

  test("another thread's handle is refused (copyBurst only copies through the calling thread's mappings)", async () => {
    const a = track(mapping());
    a.u8.fill(0x11);
    const addon = `${process.cwd()}/native/build/Release/vhost_native.node`;
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const n = require(workerData.addon);
       const fd = n.memfdCreate('w', 4096);
       const ab = n.mmapShared(fd, 4096, 0, true);
       const own = n.mappingHandle(ab);
       const ops = new Float64Array([own, 0, workerData.h, 0, 16, workerData.h, 0, own, 0, 16, own, 64, own, 0, 16]);
       const refused = n.copyBurst(ops, 3);
       n.munmap(ab);
       n.close(fd);
       parentPort.postMessage(refused);`,
      { eval: true, workerData: { addon, h: a.h } },
    );
    const refused = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    expect(refused).toBe(2); // both ops touching the main thread's mapping; the worker's own op ran
    expect([...a.u8.subarray(0, 16)]).toEqual(new Array(16).fill(0x11));
    native.munmap(a.ab);
  });
});
