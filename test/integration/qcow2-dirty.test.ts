/**
 * Dirty images (lazy refcounts): a read-write open rebuilds the refcounts from the metadata, clears the dirty bit and
 * logs one warning. Images are made by qemu-img/qemu-io, then their refcounts are damaged and the dirty bit set by
 * editing bytes; afterwards `qemu-img check` is clean and the data matches `qemu-img convert -O raw` from before.
 */
import { describe, expect, test } from 'vitest';
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Image } from '../../src/blk/qcow2/image.js';
import { hasQemuImg, qemuCheck, qemuImg, qemuIo } from '../helpers/qcow2-tools.js';
import { tempDirsPerTest } from '../helpers/temp-dirs.js';

const MiB = 1024 * 1024;
const tmp = tempDirsPerTest();

function rawOf(file: string, out: string): Buffer {
  qemuImg('convert', '-O', 'raw', file, out);
  return readFileSync(out);
}

/** Byte-level access to an image file. */
function bytes(file: string): { u64(off: number): bigint; set64(off: number, v: bigint): void; set16(off: number, v: number): void; u16(off: number): number; close(): void } {
  const fd = openSync(file, 'r+');
  const rd = (off: number, n: number): Buffer => {
    const b = Buffer.alloc(n);
    readSync(fd, b, 0, n, off);
    return b;
  };
  return {
    u64: (off) => rd(off, 8).readBigUInt64BE(0),
    u16: (off) => rd(off, 2).readUInt16BE(0),
    set64: (off, v) => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(v);
      writeSync(fd, b, 0, 8, off);
    },
    set16: (off, v) => {
      const b = Buffer.alloc(2);
      b.writeUInt16BE(v);
      writeSync(fd, b, 0, 2, off);
    },
    close: () => closeSync(fd),
  };
}

const OFFSET_MASK = 0x00ff_ffff_ffff_fe00n;

/** Damage refcounts of a 64 KiB-cluster, 16-bit-refcount image and set the dirty bit. Returns the touched clusters. */
function damage(file: string, how: 'entries' | 'drop-refblock'): void {
  const b = bytes(file);
  try {
    const cs = 65536;
    const reftable = Number(b.u64(48));
    const rb0 = Number(b.u64(reftable) & ~0x1ffn);
    if (how === 'drop-refblock') {
      b.set64(reftable, 0n); // the only refcount block is gone: every cluster reads as free
    } else {
      const l1 = Number(b.u64(40));
      const l2 = Number(b.u64(l1) & OFFSET_MASK);
      const data = Number(b.u64(l2) & OFFSET_MASK);
      expect(data).toBeGreaterThan(0);
      b.set16(rb0 + (data / cs) * 2, 0); // allocated data cluster counted as free
      b.set16(rb0 + (l2 / cs) * 2, 0); // L2 table counted as free
      b.set16(rb0 + (l1 / cs) * 2, b.u16(rb0 + (l1 / cs) * 2) + 3); // L1 table over-counted (a leak)
    }
    b.set64(72, b.u64(72) | 1n); // incompatible_features bit 0: dirty
  } finally {
    b.close();
  }
}

function dirtyBit(file: string): bigint {
  const b = bytes(file);
  try {
    return b.u64(72) & 1n;
  } finally {
    b.close();
  }
}

async function repairAndVerify(dir: string, f: string, before: Buffer): Promise<void> {
  expect(qemuCheck(f).status).not.toBe(0); // the damage is visible to the oracle
  const warns: string[] = [];
  const log = { warn: (_o: object, m: string) => void warns.push(m) };
  const img = await Qcow2Image.open(f, { readOnly: false, log });
  try {
    expect(warns.filter((m) => /repaired/.test(m))).toHaveLength(1);
    expect(img.header.incompatibleFeatures & 1n).toBe(0n);
    expect(dirtyBit(f)).toBe(0n);
    const got = Buffer.alloc(img.size);
    await img.read(0, [got]);
    expect(got.equals(before)).toBe(true);
  } finally {
    await img.close();
  }
  const chk = qemuCheck(f);
  expect(chk.status, chk.text).toBe(0);
  expect(rawOf(f, join(dir, 'after.raw')).equals(before)).toBe(true);

  // Writing afterwards keeps the image clean.
  const img2 = await Qcow2Image.open(f, { readOnly: false, log });
  const w = Buffer.alloc(3 * 65536 + 1000, 0xab);
  try {
    await img2.write(5 * MiB + 123, [w]);
    await img2.write(100, [Buffer.alloc(700, 0xcd)]);
    await img2.flush();
  } finally {
    await img2.close();
  }
  expect(warns.filter((m) => /repaired/.test(m))).toHaveLength(1);
  const chk2 = qemuCheck(f);
  expect(chk2.status, chk2.text).toBe(0);
  const expected = Buffer.from(before);
  w.copy(expected, 5 * MiB + 123);
  expected.fill(0xcd, 100, 800);
  expect(rawOf(f, join(dir, 'after2.raw')).equals(expected)).toBe(true);
}

describe.skipIf(!hasQemuImg)('dirty qcow2 images are repaired on a read-write open', () => {
  test('damaged refcount entries (data cluster, L2 table freed; L1 over-counted)', async () => {
    const dir = tmp();
    const f = join(dir, 'd.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', f, String(64 * MiB));
    qemuIo(f, 'qcow2', 'write -P 7 0 1M', 'write -P 9 10M 300k', 'write -P 3 40M 64k');
    const before = rawOf(f, join(dir, 'before.raw'));
    damage(f, 'entries');
    await repairAndVerify(dir, f, before);
  });

  test('a missing refcount block is recreated at the end of the file; snapshots and compressed clusters are counted', async () => {
    const dir = tmp();
    const f = join(dir, 'd.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', f, String(64 * MiB));
    qemuIo(f, 'qcow2', 'write -P 7 0 1M', 'write -c -P 5 20M 64k', 'write -c -P 6 21037056 64k');
    qemuImg('snapshot', '-c', 'snap1', f);
    qemuIo(f, 'qcow2', 'write -P 8 512k 128k', 'write -P 9 30M 64k');
    const before = rawOf(f, join(dir, 'before.raw'));
    const snapRaw = join(dir, 'snap.raw');
    qemuImg('convert', '-l', 'snapshot.name=snap1', '-O', 'raw', f, snapRaw);
    const snapBefore = readFileSync(snapRaw);
    damage(f, 'drop-refblock');
    await repairAndVerify(dir, f, before);
    // The internal snapshot survived the rebuild and the later writes.
    qemuImg('convert', '-l', 'snapshot.name=snap1', '-O', 'raw', f, snapRaw);
    expect(readFileSync(snapRaw).equals(snapBefore)).toBe(true);
  });

  test('a refcount table too small for the file is replaced by a larger one (512-byte clusters)', async () => {
    const dir = tmp();
    const f = join(dir, 'd.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on,cluster_size=512', f, String(16 * MiB));
    qemuIo(f, 'qcow2', 'write -P 7 0 10M', 'write -P 9 12M 64k');
    const before = rawOf(f, join(dir, 'before.raw'));
    const b = bytes(f);
    try {
      const rtClusters = Number(b.u64(56) >> 32n);
      expect(rtClusters).toBeGreaterThan(1);
      // Shrink the table to one cluster (64 refcount blocks = 8 MiB of the file): the rest is no longer counted.
      const hdr = Buffer.alloc(4);
      hdr.writeUInt32BE(1);
      const fd = openSync(f, 'r+');
      writeSync(fd, hdr, 0, 4, 56);
      closeSync(fd);
      b.set64(72, b.u64(72) | 1n);
    } finally {
      b.close();
    }
    const warns: string[] = [];
    const img = await Qcow2Image.open(f, { readOnly: false, log: { warn: (_o, m) => void warns.push(m) } });
    try {
      expect(img.header.refcountTableClusters).toBeGreaterThan(1);
      expect(warns.filter((m) => /repaired/.test(m))).toHaveLength(1);
      const got = Buffer.alloc(img.size);
      await img.read(0, [got]);
      expect(got.equals(before)).toBe(true);
      await img.write(14 * MiB + 7, [Buffer.alloc(5000, 0x11)]);
    } finally {
      await img.close();
    }
    const chk = qemuCheck(f);
    expect(chk.status, chk.text).toBe(0);
    before.fill(0x11, 14 * MiB + 7, 14 * MiB + 5007);
    expect(rawOf(f, join(dir, 'after.raw')).equals(before)).toBe(true);
  });

  test('a dirty image opened read-only is left untouched', async () => {
    const dir = tmp();
    const f = join(dir, 'd.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', f, String(8 * MiB));
    qemuIo(f, 'qcow2', 'write -P 7 0 256k');
    damage(f, 'entries');
    const img = await Qcow2Image.open(f, { readOnly: true });
    await img.close();
    expect(dirtyBit(f)).toBe(1n);
  });
});
