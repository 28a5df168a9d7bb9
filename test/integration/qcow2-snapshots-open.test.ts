/**
 * Snapshots at open: a dirty image opened read-write has its refcounts rebuilt from every snapshot's L1 table. A
 * crafted image whose many snapshots all name one huge L1 table is refused, naming the bound, instead of reading
 * and walking that table once per snapshot; real snapshots (qemu-img snapshot -c) still open and rebuild cleanly.
 */
import { describe, expect, test } from 'vitest';
import { closeSync, openSync, readFileSync, readSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Image } from '../../src/blk/qcow2/image.js';
import { ImageError } from '../../src/blk/qcow2/errors.js';
import { MAX_L2_TABLES_AT_OPEN } from '../../src/blk/qcow2/rebuild.js';
import { hasQemuImg, qemuCheck, qemuImg } from '../helpers/qcow2-tools.js';
import { tempDirsPerTest } from '../helpers/temp-dirs.js';

const MiB = 1024 * 1024;
const tmp = tempDirsPerTest();

function setDirty(file: string): void {
  const fd = openSync(file, 'r+');
  try {
    const b = Buffer.alloc(8);
    readSync(fd, b, 0, 8, 72);
    b.writeBigUInt64BE(b.readBigUInt64BE(0) | 1n);
    writeSync(fd, b, 0, 8, 72);
  } finally {
    closeSync(fd);
  }
}

/**
 * A fresh qemu-img image given `count` snapshots that all name one L1 table of `l1Bytes` (zeros, in a sparse tail
 * of the file), with the dirty bit set: a read-write open rebuilds the refcounts from all of them.
 */
function sharedL1Image(file: string, count: number, l1Bytes: number): void {
  qemuImg('create', '-q', '-f', 'qcow2', file, '1G');
  const l1At = 16 * MiB;
  const tableAt = 0x40000;
  const entry = Buffer.alloc(64); // 40 + 16 bytes of v3 extra data + id "1" + name "s", padded to 8
  entry.writeBigUInt64BE(BigInt(l1At), 0);
  entry.writeUInt32BE(l1Bytes / 8, 8);
  entry.writeUInt16BE(1, 12);
  entry.writeUInt16BE(1, 14);
  entry.writeUInt32BE(16, 36);
  entry.writeBigUInt64BE(BigInt(1 << 30), 48);
  entry.write('1s', 56, 'latin1');
  const fd = openSync(file, 'r+');
  try {
    ftruncateSync(fd, l1At + l1Bytes);
    writeSync(fd, Buffer.concat(Array.from({ length: count }, () => entry)), 0, 64 * count, tableAt);
    const hdr = Buffer.alloc(12);
    hdr.writeUInt32BE(count, 0);
    hdr.writeBigUInt64BE(BigInt(tableAt), 4);
    writeSync(fd, hdr, 0, 12, 60);
  } finally {
    closeSync(fd);
  }
  setDirty(file);
}

describe.skipIf(!hasQemuImg)('snapshots read at open are bounded', () => {
  test('many snapshots sharing one 32 MiB L1 table are refused at once, naming the bound', async () => {
    const f = join(tmp(), 'shared.qcow2');
    sharedL1Image(f, 64, 32 * MiB);
    const err = await Qcow2Image.open(f, { readOnly: false }).then(
      async (img) => {
        await img.close();
        return null;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ImageError);
    expect((err as ImageError).kind).toBe('Refused');
    expect((err as ImageError).message).toContain(f);
    expect((err as ImageError).message).toMatch(/the L1 tables of the first 2 of 64 snapshots total 67108864 bytes, more than the 33554432 bytes read at open/);
    expect(readFileSync(f).readBigUInt64BE(72) & 1n).toBe(1n); // nothing written: still dirty
  });

  test('one snapshot with a large L1 of its own is within the bound and is counted', async () => {
    const f = join(tmp(), 'one.qcow2');
    sharedL1Image(f, 1, 32 * MiB);
    const img = await Qcow2Image.open(f, { readOnly: false });
    await img.close();
    expect(readFileSync(f).readBigUInt64BE(72) & 1n).toBe(0n); // rebuilt and cleaned
  });

  test('more distinct L2 tables than are counted at open are refused before any is read', async () => {
    const f = join(tmp(), 'wide.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', f, '1G');
    const n = MAX_L2_TABLES_AT_OPEN + 1;
    const l1At = 1 << 30;
    const l2At = 2 ** 31;
    const l1 = Buffer.alloc(n * 8);
    for (let i = 0; i < n; i++) l1.writeBigUInt64BE((1n << 63n) | BigInt(l2At + i * 65536), i * 8);
    const fd = openSync(f, 'r+');
    try {
      ftruncateSync(fd, l2At + n * 65536); // sparse: every L2 table reads as zeros
      writeSync(fd, l1, 0, l1.length, l1At);
      const hdr = Buffer.alloc(12);
      hdr.writeUInt32BE(n, 0);
      hdr.writeBigUInt64BE(BigInt(l1At), 4);
      writeSync(fd, hdr, 0, 12, 36);
    } finally {
      closeSync(fd);
    }
    setDirty(f);
    const err = await Qcow2Image.open(f, { readOnly: false }).then(
      async (img) => {
        await img.close();
        return null;
      },
      (e: unknown) => e,
    );
    expect((err as ImageError).kind).toBe('Refused');
    expect((err as ImageError).message).toContain(`more than ${MAX_L2_TABLES_AT_OPEN} distinct L2 tables to count at open`);
  });

  test('real snapshots still open and rebuild to a clean image', async () => {
    const f = join(tmp(), 'real.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', f, '64M');
    for (let i = 0; i < 20; i++) qemuImg('snapshot', '-c', `s${i}`, f);
    setDirty(f);
    const img = await Qcow2Image.open(f, { readOnly: false });
    await img.write(0, [Buffer.alloc(65536, 7)]);
    await img.close();
    const check = qemuCheck(f);
    expect(check.status, check.text).toBe(0);
    expect(qemuImg('snapshot', '-l', f)).toContain('s19');
  });
});
