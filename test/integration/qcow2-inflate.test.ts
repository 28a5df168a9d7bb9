/**
 * Compressed clusters inflate on the libuv thread pool, never on the event loop (the synchronous zlib calls are
 * replaced by ones that fail the test), and a stream that inflates past one cluster is refused (bounded output).
 */
import { describe, expect, test, vi } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { Qcow2Image } from '../../src/blk/qcow2/image.js';
import { ImageError } from '../../src/blk/qcow2/errors.js';
import { hasQemuImg, qemuImg } from '../helpers/qcow2-tools.js';
import { tempDirsPerTest } from '../helpers/temp-dirs.js';

const calls = vi.hoisted(() => ({ sync: 0, async: 0 }));
vi.mock('node:zlib', async (importOriginal) => {
  const z = await importOriginal<typeof import('node:zlib')>();
  const onLoop = (name: string) => () => {
    calls.sync++;
    throw new Error(`zlib.${name} called: inflating on the event loop`);
  };
  return {
    ...z,
    inflateRawSync: onLoop('inflateRawSync'),
    inflateSync: onLoop('inflateSync'),
    unzipSync: onLoop('unzipSync'),
    inflateRaw: (...args: Parameters<typeof z.inflateRaw>) => {
      calls.async++;
      return z.inflateRaw(...args);
    },
  };
});

const CS = 65536;
const tmp = tempDirsPerTest();

/** A 4-cluster image compressed by qemu-img: cluster i holds bytes (i + 1) repeated with a little noise. */
function compressedImage(dir: string): { file: string; data: Buffer } {
  const data = Buffer.alloc(4 * CS);
  for (let i = 0; i < data.length; i++) data[i] = i % 1000 === 0 ? i & 0xff : Math.floor(i / CS) + 1;
  const raw = join(dir, 'src.raw');
  writeFileSync(raw, data);
  const file = join(dir, 'c.qcow2');
  qemuImg('convert', '-q', '-c', '-O', 'qcow2', raw, file);
  return { file, data };
}

/** Host byte offset of guest cluster 0's compressed data (64 KiB clusters: 54 offset bits). */
function compressedOffset(img: Buffer): number {
  const l1 = Number(img.readBigUInt64BE(40));
  const l2 = Number(img.readBigUInt64BE(l1) & 0x00ff_ffff_ffff_fe00n);
  const e = img.readBigUInt64BE(l2);
  expect(e >> 62n).toBe(1n); // compressed, not COPIED
  return Number(e & ((1n << 54n) - 1n));
}

describe.skipIf(!hasQemuImg)('compressed clusters', () => {
  test('read back exactly, inflated off the event loop', async () => {
    const { file, data } = compressedImage(tmp());
    const img = await Qcow2Image.open(file, { readOnly: true });
    try {
      const out = Buffer.alloc(data.length);
      await Promise.all([0, 1, 2, 3].map((c) => img.read(c * CS, [out.subarray(c * CS, (c + 1) * CS)])));
      expect(out.equals(data)).toBe(true);
      expect(calls.sync).toBe(0);
      expect(calls.async).toBeGreaterThanOrEqual(4);
    } finally {
      await img.close();
    }
  });

  test('a stream that inflates past one cluster is refused as corrupt, without inflating it all', async () => {
    const { file } = compressedImage(tmp());
    const buf = readFileSync(file);
    // 64 MiB of output in ~64 KiB of input would fit the entry's sector count; only one cluster may come out.
    const bomb = deflateRawSync(Buffer.alloc(64 * 1024 * 1024, 1), { level: 9 });
    const at = compressedOffset(buf);
    const patched = Buffer.concat([buf.subarray(0, at), bomb.subarray(0, Math.min(bomb.length, 400)), buf.subarray(at + Math.min(bomb.length, 400))]);
    writeFileSync(file, patched.subarray(0, buf.length));
    const img = await Qcow2Image.open(file, { readOnly: true });
    try {
      const err = await img.read(0, [Buffer.alloc(CS)]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ImageError);
      expect((err as ImageError).kind).toBe('CorruptImage');
      expect((err as ImageError).message).toMatch(/inflates past the cluster size/);
      expect(calls.sync).toBe(0);
    } finally {
      await img.close();
    }
  });
});
