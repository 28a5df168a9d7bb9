/**
 * Header parsing and hostile images: each case is a named test built from the annotated VALID_V3 fixture with one
 * field changed. Every one is refused with an ImageError of the right kind, naming the problem; none crashes.
 */
import { describe, expect, test } from 'vitest';
import { readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Image } from '../../../../src/blk/qcow2/image.js';
import { ImageError } from '../../../../src/blk/qcow2/errors.js';
import { parseHeader } from '../../../../src/blk/qcow2/header.js';
import { buildImage, COPIED, CS, encodeFixture, VALID_V3, withField } from '../../../helpers/qcow2-fixtures.js';
import { tempDirsPerTest } from '../../../helpers/temp-dirs.js';

const tmp = tempDirsPerTest();

async function openErr(file: string, readOnly = true): Promise<ImageError> {
  try {
    const img = await Qcow2Image.open(file, { readOnly });
    await img.close();
  } catch (err) {
    expect(err).toBeInstanceOf(ImageError);
    return err as ImageError;
  }
  throw new Error('open succeeded');
}

describe('qcow2 header parsing', () => {
  test('the valid v3 fixture parses with every field as annotated', () => {
    const h = parseHeader(Buffer.concat([encodeFixture(VALID_V3), Buffer.alloc(CS)]).subarray(0, CS), 4 * CS, 'x');
    expect(h).toMatchObject({ version: 3, clusterBits: 16, size: 16 * 1024 * 1024, l1Size: 1, l1TableOffset: 0x30000, refcountTableOffset: 0x10000, refcountOrder: 4, headerLength: 112, backingFile: null });
  });

  test('a v2 header (72 bytes) implies refcount_order 4 and no feature bits', () => {
    const v2 = encodeFixture(withField(VALID_V3, 'version', 2)).subarray(0, 72);
    const h = parseHeader(Buffer.concat([v2, Buffer.alloc(CS - 72)]), 4 * CS, 'x');
    expect(h).toMatchObject({ version: 2, refcountOrder: 4, headerLength: 72, incompatibleFeatures: 0n });
  });

  test('the valid fixture opens and reads zeros', async () => {
    const f = join(tmp(), 'ok.qcow2');
    buildImage(f, VALID_V3);
    const img = await Qcow2Image.open(f, { readOnly: false });
    const b = Buffer.alloc(4096, 1);
    await img.read(12345, [b]);
    expect(b.every((x) => x === 0)).toBe(true);
    await img.close();
  });
});

describe('hostile and unsupported images are refused', () => {
  const cases: Array<[string, string, string | number | bigint, string, RegExp]> = [
    ['bad magic', 'magic', 0x514649fa, 'InvalidFormat', /bad magic/],
    ['version 4', 'version', 4, 'UnsupportedFeature', /version 4/],
    ['cluster_bits 30', 'cluster_bits', 30, 'InvalidFormat', /cluster_bits/],
    ['huge L1 size', 'l1_size', 0x10000000, 'CorruptImage', /L1 table too large/],
    ['L1 too small for the virtual size', 'size', 0x40000000, 'CorruptImage', /L1 table too small/],
    ['virtual size beyond 2^52', 'size', 1n << 60n, 'InvalidFormat', /virtual size/],
    ['L1 table past the end of the file', 'l1_table_offset', 0x100000, 'CorruptImage', /past the end of the file/],
    ['L1 table overlapping the header', 'l1_table_offset', 0, 'CorruptImage', /overlaps the header/],
    ['L1 table unaligned', 'l1_table_offset', 0x30200, 'CorruptImage', /not cluster-aligned/],
    ['refcount table overlapping the L1 table', 'refcount_table_offset', 0x30000, 'CorruptImage', /overlaps the L1 table/],
    ['refcount table too large', 'refcount_table_clusters', 0x10000, 'CorruptImage', /refcount table too large/],
    ['encryption (crypt_method 2, LUKS)', 'crypt_method', 2, 'UnsupportedFeature', /encryption/],
    ['external data file (incompatible bit 2)', 'incompatible_features', 4, 'UnsupportedFeature', /external data file/],
    ['extended L2 (incompatible bit 4)', 'incompatible_features', 16, 'UnsupportedFeature', /extended L2/],
    ['unknown incompatible bit 10', 'incompatible_features', 1024, 'UnsupportedFeature', /incompatible bit 10/],
    ['refcount_order 7', 'refcount_order', 7, 'InvalidFormat', /refcount_order/],
    ['header_length not a multiple of 8', 'header_length', 108, 'InvalidFormat', /header_length/],
    ['too many snapshots', 'nb_snapshots', 1_000_000, 'CorruptImage', /too many snapshots/],
  ];
  for (const [name, field, value, kind, msg] of cases) {
    test(name, async () => {
      const f = join(tmp(), 'bad.qcow2');
      buildImage(f, withField(VALID_V3, field, value));
      const err = await openErr(f);
      expect(err.kind).toBe(kind);
      expect(err.message).toMatch(msg);
    });
  }

  test('zstd compression type is refused naming zstd', async () => {
    const f = join(tmp(), 'zstd.qcow2');
    buildImage(f, withField(withField(VALID_V3, 'incompatible_features', 8), 'compression_type', 1));
    expect((await openErr(f)).message).toMatch(/zstd/);
  });

  test('L1 entry pointing into the refcount table is refused at open', async () => {
    const f = join(tmp(), 'l1meta.qcow2');
    buildImage(f, VALID_V3, { l1: { 0: BigInt(CS) | COPIED } });
    const err = await openErr(f);
    expect(err.kind).toBe('CorruptImage');
    expect(err.message).toMatch(/overlaps/);
  });

  test('L1 entry pointing past the end of the file is refused at open', async () => {
    const f = join(tmp(), 'l1eof.qcow2');
    buildImage(f, VALID_V3, { l1: { 0: 0x7fff0000n | COPIED } });
    expect((await openErr(f)).message).toMatch(/past the end of the file/);
  });

  test('refcount block past the end of the file is refused at open', async () => {
    const f = join(tmp(), 'rbeof.qcow2');
    buildImage(f, VALID_V3, { reftable: { 0: 2n * BigInt(CS), 1: 0x40000000n } });
    expect((await openErr(f)).message).toMatch(/refcount block 1 .* past the end/);
  });

  test('an L2 entry past the end of the file fails the request, not the process', async () => {
    const f = join(tmp(), 'l2eof.qcow2');
    buildImage(f, VALID_V3, { l1: { 0: 4n * BigInt(CS) | COPIED }, l2: { 2: 0x10000000000n | COPIED } });
    const img = await Qcow2Image.open(f, { readOnly: false });
    const b = Buffer.alloc(512);
    await expect(img.read(2 * CS, [b])).rejects.toMatchObject({ kind: 'CorruptImage' });
    await expect(img.write(2 * CS, [b])).rejects.toMatchObject({ kind: 'CorruptImage' });
    await img.read(0, [b]); // the rest of the disk still works
    await img.close();
  });

  test('an L2 entry pointing at the L1 table is never written with guest data', async () => {
    const f = join(tmp(), 'l2meta.qcow2');
    buildImage(f, VALID_V3, { l1: { 0: 4n * BigInt(CS) | COPIED }, l2: { 0: 3n * BigInt(CS) | COPIED } });
    const img = await Qcow2Image.open(f, { readOnly: false });
    await expect(img.write(0, [Buffer.alloc(512, 1)])).rejects.toMatchObject({ kind: 'CorruptImage' });
    await img.close();
  });

  test('dirty bit: read-only open leaves it set, read-write open rebuilds the refcounts and clears it', async () => {
    const f = join(tmp(), 'dirty.qcow2');
    buildImage(f, withField(VALID_V3, 'incompatible_features', 1));
    const ro = await Qcow2Image.open(f, { readOnly: true });
    expect(ro.header.incompatibleFeatures).toBe(1n);
    await ro.close();
    const warns: string[] = [];
    const img = await Qcow2Image.open(f, { readOnly: false, log: { warn: (_o, m) => void warns.push(m) } });
    expect(img.header.incompatibleFeatures).toBe(0n);
    expect(warns).toHaveLength(1);
    expect(warns[0]).toMatch(/dirty.*repaired/);
    await img.close();
    expect(readFileSync(f).readBigUInt64BE(72)).toBe(0n);
  });

  test('dirty bit with a refcount that overflows its width (1-bit refcounts, L2 table referenced twice) is refused', async () => {
    const f = join(tmp(), 'dirty-overflow.qcow2');
    const text = withField(withField(withField(VALID_V3, 'incompatible_features', 1), 'refcount_order', 0), 'l1_size', 2);
    buildImage(f, text, { l1: { 0: 4n * BigInt(CS), 1: 4n * BigInt(CS) }, l2: { 0: 0n } });
    const ro = await Qcow2Image.open(f, { readOnly: true });
    await ro.close();
    const err = await openErr(f, false);
    expect(err.kind).toBe('CorruptImage');
    expect(err.message).toMatch(/1-bit refcounts/);
    expect(readFileSync(f).readBigUInt64BE(72)).toBe(1n); // nothing was written
  });

  test('corrupt bit: read-only open works, read-write open is refused', async () => {
    const f = join(tmp(), 'corrupt.qcow2');
    buildImage(f, withField(VALID_V3, 'incompatible_features', 2));
    const img = await Qcow2Image.open(f, { readOnly: true });
    await img.close();
    expect((await openErr(f, false)).kind).toBe('CorruptImage');
  });

  test('read-write open clears autoclear bits', async () => {
    const f = join(tmp(), 'ac.qcow2');
    buildImage(f, withField(VALID_V3, 'autoclear_features', 3));
    await (await Qcow2Image.open(f, { readOnly: false })).close();
    const img = await Qcow2Image.open(f, { readOnly: true });
    expect(img.header.autoclearFeatures).toBe(0n);
    await img.close();
  });
});

function withBacking(dir: string, file: string, name: string, format?: string): void {
  let text = VALID_V3;
  const extra: Array<[number, Buffer]> = [];
  let off = 112;
  if (format) {
    const ext = Buffer.alloc(8 + Math.ceil(format.length / 8) * 8);
    ext.writeUInt32BE(0xe2792aca, 0);
    ext.writeUInt32BE(format.length, 4);
    ext.write(format, 8, 'latin1');
    extra.push([off, ext]);
    off += ext.length;
  }
  off += 8; // end marker
  extra.push([off, Buffer.from(name)]);
  text = withField(withField(text, 'backing_file_offset', off), 'backing_file_size', Buffer.byteLength(name));
  if (format) text = text.replace(/^end_of_extensions.*$/m, ''); // the end marker now follows the extension
  buildImage(join(dir, file), text, { extra });
}

describe('backing files are opened safely', () => {
  test('a raw backing file without a stated format is refused (no raw probing)', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'base.raw'), Buffer.alloc(CS));
    withBacking(dir, 'top.qcow2', 'base.raw');
    expect((await openErr(join(dir, 'top.qcow2'))).message).toMatch(/probing raw is refused/);
  });

  test('a stated raw backing file is used, resolved relative to the image directory', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'base.raw'), Buffer.alloc(CS, 0x5a));
    withBacking(dir, 'top.qcow2', 'base.raw', 'raw');
    const img = await Qcow2Image.open(join(dir, 'top.qcow2'), { readOnly: true });
    const b = Buffer.alloc(CS + 10);
    await img.read(0, [b]);
    expect(b.subarray(0, CS).every((x) => x === 0x5a) && b.subarray(CS).every((x) => x === 0)).toBe(true);
    await img.close();
  });

  test('a backing file that is not a regular file is refused, even in an allowed directory', async () => {
    const dir = tmp();
    withBacking(dir, 'top.qcow2', '/dev/zero', 'raw');
    expect((await openErr(join(dir, 'top.qcow2'))).message).toMatch(/outside the allowed directories/);
    const err = await Qcow2Image.open(join(dir, 'top.qcow2'), { readOnly: true, policy: { backingDirs: ['/dev'] } }).then(
      () => null,
      (e: ImageError) => e,
    );
    expect(err?.kind).toBe('Refused');
    expect(err?.message).toMatch(/character device, not a regular file/);
  });

  test('a protocol prefix (json:) is refused', async () => {
    const dir = tmp();
    withBacking(dir, 'top.qcow2', 'json:{"driver":"file","filename":"/etc/passwd"}', 'raw');
    expect((await openErr(join(dir, 'top.qcow2'))).message).toMatch(/protocol prefix/);
  });

  test('an unsupported backing format is refused naming it', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'base.vmdk'), Buffer.alloc(CS));
    withBacking(dir, 'top.qcow2', 'base.vmdk', 'vmdk');
    expect((await openErr(join(dir, 'top.qcow2'))).message).toMatch(/vmdk/);
  });

  test('a backing loop is refused', async () => {
    const dir = tmp();
    withBacking(dir, 'a.qcow2', 'b.qcow2', 'qcow2');
    withBacking(dir, 'b.qcow2', 'a.qcow2', 'qcow2');
    expect((await openErr(join(dir, 'a.qcow2'))).message).toMatch(/loops/);
    withBacking(dir, 'self.qcow2', 'self-link.qcow2', 'qcow2');
    symlinkSync(join(dir, 'self.qcow2'), join(dir, 'self-link.qcow2'));
    expect((await openErr(join(dir, 'self.qcow2'))).message).toMatch(/loops/);
  });

  test('a chain of 16 backing images opens; 17 is refused', async () => {
    const dir = tmp();
    buildImage(join(dir, 'i0.qcow2'), VALID_V3);
    for (let i = 1; i <= 17; i++) withBacking(dir, `i${i}.qcow2`, `i${i - 1}.qcow2`, 'qcow2');
    const ok = await Qcow2Image.open(join(dir, 'i16.qcow2'), { readOnly: true });
    await ok.close();
    expect((await openErr(join(dir, 'i17.qcow2'))).message).toMatch(/deeper than 16/);
  });
});
