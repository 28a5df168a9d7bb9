/**
 * The io_uring disk engine (native/uring.c, src/blk/uring-engine.ts) against real files: data both ways, short
 * reads at end of file, errors as Node-style errno errors, more requests than ring slots, bursts, fallocate, the
 * C checks on request records, and the choice between io_uring and the node:fs fallback.
 */
import { describe, test, expect, beforeAll, afterAll } from 'vitest';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNative } from '../../src/native/binding.js';
import { URING_OP_STRIDE, type NativeBinding, type NativeUring } from '../../src/native/types.js';
import { chooseEngine, FALLOC_PUNCH_HOLE, FALLOC_ZERO_RANGE, UringEngine } from '../../src/blk/uring-engine.js';
import { RawDisk } from '../../src/blk/raw-disk.js';

const MiB = 1 << 20;
let dir: string;
let path: string;
let fd: number;
let eng: UringEngine;

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhostd-uring-'));
  path = join(dir, 'img');
  writeFileSync(path, pattern(MiB, 1));
  fd = openSync(path, 'r+');
  eng = UringEngine.create().acquire();
});
afterAll(() => {
  eng.release();
  closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
});

describe('UringEngine on a regular file', () => {
  test('readv fills several views in order; writev writes them; the file holds the bytes', async () => {
    const a = new Uint8Array(100);
    const b = new Uint8Array(3996);
    expect(await eng.readv(fd, [a, b], 4096)).toBe(4096);
    const want = pattern(MiB, 1).subarray(4096, 8192);
    expect(Buffer.concat([a, b]).equals(Buffer.from(want))).toBe(true);
    const w = pattern(8192, 9);
    expect(await eng.writev(fd, [w.subarray(0, 5000), w.subarray(5000)], 65536)).toBe(8192);
    expect(readFileSync(path).subarray(65536, 65536 + 8192).equals(Buffer.from(w))).toBe(true);
  });

  test('a read across end of file is short; one at end of file returns 0', async () => {
    const b = new Uint8Array(4096);
    expect(await eng.readv(fd, [b], MiB - 100)).toBe(100);
    expect(await eng.readv(fd, [b], MiB)).toBe(0);
  });

  test('a failing request rejects with the errno (EBADF), and the engine keeps serving', async () => {
    const err = await eng.readv(1 << 30, [new Uint8Array(16)], 0).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EBADF', errno: -9, syscall: 'readv' });
    const dirFd = openSync(dir, 'r');
    try {
      await expect(eng.readv(dirFd, [new Uint8Array(16)], 0)).rejects.toMatchObject({ code: 'EISDIR' });
    } finally {
      closeSync(dirFd);
    }
    expect(await eng.readv(fd, [new Uint8Array(16)], 0)).toBe(16);
  });

  test('2000 requests at once (more than the ring has slots): every one completes with its own data, in bursts', async () => {
    const before = { ...eng.stats };
    const bufs = Array.from({ length: 2000 }, () => new Uint8Array(512));
    const res = await Promise.all(bufs.map((b, i) => eng.readv(fd, [b], (i * 512) % MiB)));
    expect(res.every((n) => n === 512)).toBe(true);
    const file = readFileSync(path);
    for (let i = 0; i < bufs.length; i++) expect(Buffer.from(bufs[i]!).equals(file.subarray((i * 512) % MiB, ((i * 512) % MiB) + 512))).toBe(true);
    expect(eng.stats.completed - before.completed).toBe(2000);
    expect(eng.stats.bursts - before.bursts).toBeLessThan(100); // one io_uring_enter per burst, not per request
    expect(eng.inFlight).toBe(0);
  });

  test('fdatasync completes (it finishes asynchronously: through the eventfd watcher)', async () => {
    await expect(eng.fdatasync(fd)).resolves.toBe(0);
  });

  test('fallocate PUNCH_HOLE and ZERO_RANGE make the range read as zeroes, keeping the size', async () => {
    await eng.writev(fd, [pattern(16384, 3)], 131072);
    await eng.fallocate(fd, FALLOC_PUNCH_HOLE, 131072, 4096);
    await eng.fallocate(fd, FALLOC_ZERO_RANGE, 131072 + 8192, 4096);
    const f = readFileSync(path);
    expect(f.length).toBe(MiB);
    expect(f.subarray(131072, 131072 + 4096).every((x) => x === 0)).toBe(true);
    expect(f.subarray(131072 + 4096, 131072 + 8192).equals(Buffer.from(pattern(16384, 3).subarray(4096, 8192)))).toBe(true);
    expect(f.subarray(131072 + 8192, 131072 + 12288).every((x) => x === 0)).toBe(true);
  });
});

describe('uringSubmit checks every request record in C', () => {
  const native = loadNative() as NativeBinding & NativeUring;
  const cases: Array<[string, number[], unknown[]]> = [
    ['unknown op', [7, 0, 3, 0, 0, 1], [new Uint8Array(8)]],
    ['negative fd', [0, 0, -1, 0, 0, 1], [new Uint8Array(8)]],
    ['NaN offset', [0, 0, 3, NaN, 0, 1], [new Uint8Array(8)]],
    ['fractional tag', [0, 0.5, 3, 0, 0, 1], [new Uint8Array(8)]],
    ['offset past 2^53', [0, 0, 3, 2 ** 54, 0, 1], [new Uint8Array(8)]],
    ['no views', [0, 0, 3, 0, 0, 0], [new Uint8Array(8)]],
    ['1025 views', [0, 0, 3, 0, 0, 1025], Array.from({ length: 1025 }, () => new Uint8Array(1))],
    ['views past the table', [0, 0, 3, 0, 1, 1], [new Uint8Array(8)]],
    ['a view that is not a Uint8Array', [0, 0, 3, 0, 0, 1], [new Uint16Array(4)]],
    ['fdatasync with a range', [2, 0, 3, 4096, 0, 0], []],
    ['fallocate with another mode', [3, 0, 3, 0, 4096, 1], []],
    ['fallocate of nothing', [3, 0, 3, 0, 0, 3], []],
  ];
  for (const [name, rec, views] of cases) {
    test(`${name}: RangeError, nothing submitted`, () => {
      const ring = native.uringSetup(8, -1);
      try {
        const ops = new Float64Array(URING_OP_STRIDE);
        ops.set(rec);
        ops[2] = rec[2] === 3 ? fd : rec[2]!;
        expect(() => native.uringSubmit(ring, ops, 1, views as Uint8Array[])).toThrow(RangeError);
        expect(native.uringReap(ring, new Float64Array(32), 16, false)).toBe(0);
      } finally {
        native.uringClose(ring);
      }
    });
  }

  test('count beyond the table and a foreign ring object are refused', () => {
    const ring = native.uringSetup(8, -1);
    try {
      expect(() => native.uringSubmit(ring, new Float64Array(URING_OP_STRIDE), 2, [])).toThrow(RangeError);
      expect(() => native.uringSubmit({ sqEntries: 8, cqEntries: 16 }, new Float64Array(URING_OP_STRIDE), 1, [])).toThrow(TypeError);
    } finally {
      native.uringClose(ring);
    }
    expect(() => native.uringSubmit(ring, new Float64Array(URING_OP_STRIDE), 1, [])).toThrow(/closed/);
  });
});

describe('engine choice', () => {
  test('VHOSTD_DISK_ENGINE=threads forces node:fs; a RawDisk then reports threads and still reads and writes', async () => {
    expect(chooseEngine({ VHOSTD_DISK_ENGINE: 'threads' })).toMatchObject({ engine: null, name: 'threads' });
    const saved = process.env.VHOSTD_DISK_ENGINE;
    process.env.VHOSTD_DISK_ENGINE = 'threads';
    try {
      const disk = await RawDisk.open(path, { readOnly: false });
      expect(disk.engine).toBe('threads');
      const b = new Uint8Array(512);
      await disk.write(0, [pattern(512, 5)]);
      await disk.read(0, [b]);
      expect(b).toEqual(pattern(512, 5));
      await disk.close();
    } finally {
      if (saved === undefined) delete process.env.VHOSTD_DISK_ENGINE;
      else process.env.VHOSTD_DISK_ENGINE = saved;
    }
  });

  test('a refused io_uring_setup falls back to threads under auto, and is an error under io_uring', () => {
    const refuse = (): UringEngine => {
      throw Object.assign(new Error('io_uring_setup failed: EPERM'), { code: 'EPERM' });
    };
    // No disk of this file is open here, so no shared engine exists and the choice calls create().
    expect(chooseEngine({ VHOSTD_DISK_ENGINE: 'auto' }, refuse)).toMatchObject({ engine: null, name: 'threads', reason: expect.stringContaining('EPERM') });
    expect(chooseEngine({}, refuse)).toMatchObject({ engine: null, name: 'threads' });
    expect(() => chooseEngine({ VHOSTD_DISK_ENGINE: 'io_uring' }, refuse)).toThrow(/io_uring is not available: io_uring_setup failed: EPERM/);
    expect(() => chooseEngine({ VHOSTD_DISK_ENGINE: 'bogus' })).toThrow(/auto, io_uring or threads/);
  });

  test('a RawDisk on io_uring: a file shrunk under it fails the read (no progress) instead of hanging', async () => {
    const p = join(dir, 'shrink');
    writeFileSync(p, pattern(65536, 2));
    const saved = process.env.VHOSTD_DISK_ENGINE;
    process.env.VHOSTD_DISK_ENGINE = 'io_uring';
    let disk: RawDisk;
    try {
      disk = await RawDisk.open(p, { readOnly: false });
    } finally {
      if (saved === undefined) delete process.env.VHOSTD_DISK_ENGINE;
      else process.env.VHOSTD_DISK_ENGINE = saved;
    }
    expect(disk.engine).toBe('io_uring');
    truncateSync(p, 4096);
    await expect(disk.read(8192, [new Uint8Array(4096)])).rejects.toThrow(/no progress/);
    await disk.close();
  });

  test('RawDisk: discard punches a hole on io_uring (reads zeroes) and keeps the data on threads; write-zeroes zeroes on both', async () => {
    const saved = process.env.VHOSTD_DISK_ENGINE;
    try {
      for (const engine of ['io_uring', 'threads'] as const) {
        const p = join(dir, `discard-${engine}`);
        writeFileSync(p, pattern(65536, 4));
        process.env.VHOSTD_DISK_ENGINE = engine;
        const disk = await RawDisk.open(p, { readOnly: false });
        expect(disk.engine).toBe(engine);
        await disk.discard(4096, 8192);
        await disk.writeZeroes(32768, 4096, false);
        await disk.writeZeroes(40960, 4096, true);
        await disk.close();
        const f = readFileSync(p);
        expect(f.length).toBe(65536);
        const discarded = f.subarray(4096, 12288);
        if (engine === 'io_uring') expect(discarded.every((x) => x === 0)).toBe(true);
        else expect(discarded.equals(Buffer.from(pattern(65536, 4).subarray(4096, 12288)))).toBe(true);
        expect(f.subarray(32768, 36864).every((x) => x === 0)).toBe(true);
        expect(f.subarray(40960, 45056).every((x) => x === 0)).toBe(true);
        expect(f.subarray(36864, 40960).equals(Buffer.from(pattern(65536, 4).subarray(36864, 40960)))).toBe(true);
      }
    } finally {
      if (saved === undefined) delete process.env.VHOSTD_DISK_ENGINE;
      else process.env.VHOSTD_DISK_ENGINE = saved;
    }
  });
});
