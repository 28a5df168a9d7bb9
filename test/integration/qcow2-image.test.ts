/**
 * Qcow2Image against qemu-img as the oracle: images made by qemu-img read back byte-identical to
 * `qemu-img convert -O raw`; seeded random writes match an in-memory reference, `qemu-img check` is clean and
 * `qemu-img compare` matches a raw mirror.
 */
import { describe, expect, test } from 'vitest';
import { readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Image } from '../../src/blk/qcow2/image.js';
import { hasQemuImg, prng, qemuCheck, qemuCompare, qemuImg, qemuIo } from '../helpers/qcow2-tools.js';
import { tempDirsPerTest } from '../helpers/temp-dirs.js';

const MiB = 1024 * 1024;
const tmp = tempDirsPerTest();

/** Read the whole image through Qcow2Image in odd-sized chunks split over two buffers. */
async function readAll(img: Qcow2Image): Promise<Buffer> {
  const out = Buffer.alloc(img.size);
  const step = 3 * 65536 + 777;
  for (let o = 0; o < img.size; o += step) {
    const n = Math.min(step, img.size - o);
    const cut = Math.floor(n / 3);
    await img.read(o, [out.subarray(o, o + cut), out.subarray(o + cut, o + n)]);
  }
  return out;
}

function rawOf(dir: string, file: string): Buffer {
  const raw = join(dir, 'oracle.raw');
  qemuImg('convert', '-O', 'raw', file, raw);
  return readFileSync(raw);
}

/** Fill an image with a deterministic scatter of qemu-io writes. */
function scatter(file: string, fmt: string, size: number, seed: number, count = 24): void {
  const r = prng(seed);
  const cmds: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = 512 * (1 + Math.floor(r() * 300));
    const off = 512 * Math.floor(r() * ((size - len) / 512));
    cmds.push(`write -P ${1 + Math.floor(r() * 254)} ${off} ${len}`);
  }
  qemuIo(file, fmt, ...cmds);
}

describe.skipIf(!hasQemuImg)('Qcow2Image reads images made by qemu-img', () => {
  const cases: Array<[string, string[]]> = [
    ['v2 (compat=0.10)', ['-o', 'compat=0.10']],
    ['v3 (compat=1.1)', ['-o', 'compat=1.1']],
    ['v3 with 4 KiB clusters', ['-o', 'cluster_size=4096']],
    ['v3 with 512-byte clusters', ['-o', 'cluster_size=512']],
    ['refcount_bits=1', ['-o', 'refcount_bits=1']],
    ['refcount_bits=8', ['-o', 'refcount_bits=8']],
    ['refcount_bits=64', ['-o', 'refcount_bits=64']],
    ['preallocation=metadata', ['-o', 'preallocation=metadata']],
  ];
  for (const [name, opts] of cases) {
    test(`${name}: reads byte-identical to qemu-img convert -O raw`, async () => {
      const dir = tmp();
      const f = join(dir, 'img.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', ...opts, f, String(8 * MiB + 4096));
      scatter(f, 'qcow2', 8 * MiB, 7);
      const img = await Qcow2Image.open(f, { readOnly: true });
      try {
        expect((await readAll(img)).equals(rawOf(dir, f))).toBe(true);
      } finally {
        await img.close();
      }
    });
  }

  test('zero clusters (qemu-io write -z) and discards read as zeros', async () => {
    const dir = tmp();
    const f = join(dir, 'img.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', f, String(4 * MiB));
    qemuIo(f, 'qcow2', 'write -P 0xaa 0 4M', 'write -z 65536 131072', 'write -z -u 1M 65536', 'discard 2M 196608');
    const img = await Qcow2Image.open(f, { readOnly: true });
    const data = await readAll(img);
    await img.close();
    expect(data.equals(rawOf(dir, f))).toBe(true);
    expect(data.subarray(65536, 196608).every((b) => b === 0)).toBe(true);
  });

  test('compressed clusters (qemu-img convert -c) read back exactly', async () => {
    const dir = tmp();
    const src = join(dir, 'src.raw');
    const r = prng(3);
    const buf = Buffer.alloc(3 * MiB + 12345);
    for (let i = 0; i < buf.length; i++) buf[i] = i % 4096 < 2048 ? (i * 7) & 0xff : Math.floor(r() * 4); // compressible
    writeFileSync(src, buf);
    const f = join(dir, 'c.qcow2');
    qemuImg('convert', '-c', '-O', 'qcow2', src, f);
    const img = await Qcow2Image.open(f, { readOnly: true });
    const data = await readAll(img);
    await img.close();
    expect(data.equals(rawOf(dir, f))).toBe(true);
  });

  test('a three-level backing chain with relative names and mixed formats', async () => {
    const dir = tmp();
    const base = join(dir, 'base.raw');
    writeFileSync(base, Buffer.alloc(2 * MiB, 0x11));
    const mid = join(dir, 'mid.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', mid, String(3 * MiB));
    qemuIo(mid, 'qcow2', 'write -P 0x22 1M 100k');
    const top = join(dir, 'top.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', top, String(4 * MiB));
    qemuIo(top, 'qcow2', 'write -P 0x33 1050k 10k', 'write -z 0 64k');
    const img = await Qcow2Image.open(top, { readOnly: true });
    expect(img.backing?.format).toBe('qcow2');
    const data = await readAll(img);
    await img.close();
    expect(data.equals(rawOf(dir, top))).toBe(true);
  });

  test('an image with an internal snapshot reads its active state', async () => {
    const dir = tmp();
    const f = join(dir, 's.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', f, String(2 * MiB));
    qemuIo(f, 'qcow2', 'write -P 1 0 2M');
    qemuImg('snapshot', '-c', 'snap1', f);
    qemuIo(f, 'qcow2', 'write -P 2 100k 300k');
    const img = await Qcow2Image.open(f, { readOnly: true });
    const data = await readAll(img);
    await img.close();
    expect(data.equals(rawOf(dir, f))).toBe(true);
  });
});

/** Random writes through Qcow2Image and into a raw mirror; then qemu-img check and compare. */
async function randomWrites(img: Qcow2Image, mirror: Buffer, seed: number, count: number, maxLen: number): Promise<void> {
  const r = prng(seed);
  for (let i = 0; i < count; i++) {
    const op = r();
    const len = 1 + Math.floor(r() * maxLen);
    const off = Math.floor(r() * (img.size - len));
    if (op < 0.8) {
      const data = Buffer.alloc(len);
      for (let k = 0; k < len; k += 97) data.fill((seed + i + k) & 0xff, k, Math.min(len, k + 97));
      const cut = Math.floor(r() * len);
      await img.write(off, [data.subarray(0, cut), data.subarray(cut)]);
      data.copy(mirror, off);
    } else if (op < 0.9) {
      await img.writeZeroes(off, len, r() < 0.5);
      mirror.fill(0, off, off + len);
    } else {
      await img.flush();
    }
    if (i % 16 === 0) {
      const o2 = Math.floor(r() * (img.size - 70000));
      const got = Buffer.alloc(70000);
      await img.read(o2, [got]);
      expect(got.equals(mirror.subarray(o2, o2 + 70000))).toBe(true);
    }
  }
}

async function verify(dir: string, f: string, mirror: Buffer, opts: { expectLeaksOk?: boolean } = {}): Promise<void> {
  const img = await Qcow2Image.open(f, { readOnly: true });
  expect((await readAll(img)).equals(mirror)).toBe(true);
  await img.close();
  const chk = qemuCheck(f);
  if (!opts.expectLeaksOk) expect(chk.status, chk.text).toBe(0);
  else expect([0, 3], chk.text).toContain(chk.status);
  const ref = join(dir, 'mirror.raw');
  writeFileSync(ref, mirror);
  const cmp = qemuCompare(f, ref);
  expect(cmp.status, cmp.text).toBe(0);
}

describe.skipIf(!hasQemuImg)('Qcow2Image writes', () => {
  const variants: Array<[string, string[]]> = [
    ['v3', []],
    ['v2', ['-o', 'compat=0.10']],
    ['v3, 4 KiB clusters', ['-o', 'cluster_size=4096']],
    ['v3, refcount_bits=1', ['-o', 'refcount_bits=1']],
    ['v3, refcount_bits=64, 512-byte clusters', ['-o', 'refcount_bits=64,cluster_size=512']],
  ];
  for (const [name, opts] of variants) {
    test(`${name}: random unaligned writes and write-zeroes match a raw mirror; check clean`, async () => {
      const dir = tmp();
      const f = join(dir, 'w.qcow2');
      const size = 6 * MiB + 1536;
      qemuImg('create', '-q', '-f', 'qcow2', ...opts, f, String(size));
      scatter(f, 'qcow2', size, 11, 8);
      const mirror = rawOf(dir, f);
      const img = await Qcow2Image.open(f, { readOnly: false });
      await randomWrites(img, mirror, 1234, 150, 200_000);
      await img.close();
      await verify(dir, f, mirror);
    });
  }

  test('writes into an overlay copy-on-write from the backing chain', async () => {
    const dir = tmp();
    const base = join(dir, 'base.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, String(5 * MiB));
    scatter(base, 'qcow2', 5 * MiB, 5, 30);
    const top = join(dir, 'top.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top, String(6 * MiB));
    const mirror = rawOf(dir, top);
    const baseBefore = readFileSync(base);
    const img = await Qcow2Image.open(top, { readOnly: false });
    await randomWrites(img, mirror, 99, 120, 150_000);
    await img.discard(0, 6 * MiB); // v3 + backing: zero flags
    mirror.fill(0);
    await img.write(65536 + 100, [Buffer.alloc(1000, 7)]);
    mirror.fill(7, 65536 + 100, 65536 + 1100);
    await img.close();
    await verify(dir, top, mirror);
    expect(readFileSync(base).equals(baseBefore)).toBe(true);
  });

  test('writes into compressed clusters reallocate them', async () => {
    const dir = tmp();
    const src = join(dir, 'src.raw');
    const buf = Buffer.alloc(3 * MiB);
    for (let i = 0; i < buf.length; i++) buf[i] = (i >> 9) & 0xff;
    writeFileSync(src, buf);
    const f = join(dir, 'c.qcow2');
    qemuImg('convert', '-c', '-O', 'qcow2', src, f);
    const mirror = Buffer.from(buf);
    const img = await Qcow2Image.open(f, { readOnly: false });
    await randomWrites(img, mirror, 5, 80, 100_000);
    await img.close();
    await verify(dir, f, mirror);
  });

  test('writes after an internal snapshot leave the snapshot intact', async () => {
    const dir = tmp();
    const f = join(dir, 's.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', f, String(3 * MiB));
    scatter(f, 'qcow2', 3 * MiB, 21, 20);
    const snapRaw = rawOf(dir, f);
    qemuImg('snapshot', '-c', 'before', f);
    const mirror = Buffer.from(snapRaw);
    const img = await Qcow2Image.open(f, { readOnly: false });
    await randomWrites(img, mirror, 77, 100, 120_000);
    await img.discard(1 * MiB, 1 * MiB);
    mirror.fill(0, 1 * MiB, 2 * MiB);
    await img.close();
    await verify(dir, f, mirror);
    // The snapshot still holds the old contents.
    const copy = join(dir, 'copy.qcow2');
    copyFileSync(f, copy);
    qemuImg('snapshot', '-a', 'before', copy);
    expect(rawOf(dir, copy).equals(snapRaw)).toBe(true);
  });

  test('discard of whole clusters frees them; partial clusters keep their data', async () => {
    const dir = tmp();
    const f = join(dir, 'd.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', f, String(2 * MiB));
    const img = await Qcow2Image.open(f, { readOnly: false });
    await img.write(0, [Buffer.alloc(2 * MiB, 9)]);
    await img.discard(1000, 300_000);
    await img.close();
    const mirror = Buffer.alloc(2 * MiB, 9);
    mirror.fill(0, 65536, 262144);
    await verify(dir, f, mirror);
  });
});

describe.skipIf(!hasQemuImg)('Qcow2Image concurrency', () => {
  test('concurrent allocating writes, in-place writes and reads on distinct ranges all land', async () => {
    const dir = tmp();
    const f = join(dir, 'c.qcow2');
    const size = 8 * MiB;
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', f, String(size));
    const img = await Qcow2Image.open(f, { readOnly: false, l2CacheBytes: 8192 }); // tiny cache: evictions too
    const mirror = Buffer.alloc(size);
    const r = prng(42);
    for (let round = 0; round < 4; round++) {
      const jobs: Promise<void>[] = [];
      for (let k = 0; k < 64; k++) {
        const slot = (size / 64) * k;
        const off = slot + Math.floor(r() * 50_000);
        const len = 1 + Math.floor(r() * 60_000);
        const data = Buffer.alloc(len, (round * 64 + k) & 0xff);
        data.copy(mirror, off);
        jobs.push(img.write(off, [data]));
        if (k % 3 === 0) jobs.push(img.read(slot + 70_000, [Buffer.alloc(10_000)]));
        if (k % 16 === 0) jobs.push(img.flush());
      }
      await Promise.all(jobs);
    }
    await img.close();
    await verify(dir, f, mirror);
  });
});

describe.skipIf(!hasQemuImg)('Qcow2Image concurrent allocation', () => {
  test('32 concurrent allocating 4 KiB writers, many on the same clusters, every block lands (read back, qemu-img check and compare)', async () => {
    const dir = tmp();
    const f = join(dir, 'a.qcow2');
    const size = 16 * MiB;
    qemuImg('create', '-q', '-f', 'qcow2', f, String(size));
    const img = await Qcow2Image.open(f, { readOnly: false });
    const mirror = Buffer.alloc(size);
    const r = prng(7);
    const blocks = size / 4096;
    // Each round 32 writers each write one 4 KiB block at once; the blocks of a round fall into 8 clusters of 64 KiB,
    // so about four writers allocate the same cluster concurrently.
    for (let round = 0; round < 24; round++) {
      const clusters = Array.from({ length: 8 }, () => Math.floor(r() * (size / 65536)));
      const jobs: Promise<void>[] = [];
      const taken = new Set<number>(); // distinct blocks within a round: concurrent writes to one block have no order
      for (let k = 0; k < 32; k++) {
        const c = clusters[k % 8]!;
        let b = c * 16 + Math.floor(r() * 16);
        while (taken.has(b)) b = c * 16 + ((b + 1) % 16);
        taken.add(b);
        const data = Buffer.alloc(4096, (round * 32 + k + 1) & 0xff);
        data.writeUInt32BE(round * 32 + k, 0);
        data.copy(mirror, b * 4096);
        jobs.push(img.write(b * 4096, [data]));
      }
      await Promise.all(jobs);
      if (round % 8 === 7) await img.flush();
    }
    // Every block read back through the image matches.
    const got = Buffer.alloc(size);
    await img.read(0, [got]);
    for (let b = 0; b < blocks; b++) {
      const off = b * 4096;
      if (!got.subarray(off, off + 4096).equals(mirror.subarray(off, off + 4096))) expect.fail(`block ${b} differs`);
    }
    await img.close();
    await verify(dir, f, mirror);
  });

  test('two concurrent allocating writes into one unallocated cluster both land (no lost write)', async () => {
    const dir = tmp();
    const f = join(dir, 'o.qcow2');
    const size = 4 * MiB;
    qemuImg('create', '-q', '-f', 'qcow2', f, String(size));
    const img = await Qcow2Image.open(f, { readOnly: false });
    const mirror = Buffer.alloc(size);
    const a = Buffer.alloc(4096, 0xa1);
    const b = Buffer.alloc(8192, 0xb2);
    a.copy(mirror, 65536 + 4096);
    b.copy(mirror, 65536 + 32768);
    await Promise.all([img.write(65536 + 4096, [a]), img.write(65536 + 32768, [b])]);
    const got = Buffer.alloc(65536);
    await img.read(65536, [got]);
    expect(got.equals(mirror.subarray(65536, 131072))).toBe(true);
    await img.close();
    await verify(dir, f, mirror);
  });
});

describe.skipIf(!hasQemuImg)('Qcow2Image allocating writes over a backing file', () => {
  test('a read racing an allocating write into a backed cluster sees the backing data, never the cluster before its data is in the file', async () => {
    const dir = tmp();
    const base = join(dir, 'base.raw');
    const size = 4 * MiB;
    const content = Buffer.alloc(size);
    for (let i = 0; i < size; i += 512) content.fill((i >> 9) & 0xff || 1, i, i + 512);
    writeFileSync(base, content);
    const top = join(dir, 'top.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', top, String(size));
    const img = await Qcow2Image.open(top, { readOnly: false });
    const mirror = Buffer.from(content);
    const jobs: Promise<void>[] = [];
    const reads: Array<{ off: number; buf: Buffer }> = [];
    for (let c = 0; c < 32; c++) {
      const off = c * 65536;
      const data = Buffer.alloc(4096, 0xee);
      data.copy(mirror, off + 32768);
      jobs.push(img.write(off + 32768, [data]));
      // Reads of the head of the cluster issued right behind the write and a few turns of the event loop later (while
      // its copy-on-write and data writes run): whichever runs first, the head is backing data.
      for (let turns = 0; turns < 16; turns++) {
        const r = { off, buf: Buffer.alloc(4096) };
        reads.push(r);
        jobs.push(
          (async () => {
            for (let t = 0; t < turns; t++) await new Promise<void>((res) => setImmediate(res));
            await img.read(off, [r.buf]);
          })(),
        );
      }
      if (c % 8 === 7) jobs.push(img.flush());
    }
    await Promise.all(jobs);
    for (const r of reads) expect(r.buf.equals(content.subarray(r.off, r.off + 4096)), `read at ${r.off}`).toBe(true);
    await img.close();
    await verify(dir, top, mirror);
  });
});
