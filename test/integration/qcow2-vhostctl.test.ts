/**
 * `vhostctl create` as an operator runs it (build/src/bin/vhostctl.js as a child process); qemu-img checks the result.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { hasQemuImg, qemuCheck, qemuImg, qemuInfo, qemuIo } from '../helpers/qcow2-tools.js';
import { tempDirsPerTest } from '../helpers/temp-dirs.js';
import { parseSize } from '../../src/blk/qcow2/create.js';
import { Qcow2Image } from '../../src/blk/qcow2/image.js';

const root = resolve(import.meta.dirname, '../..');
const BIN = join(root, 'build/src/bin/vhostctl.js');
function vhostctl(cwd: string, ...args: string[]): { status: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8' });
  return { status: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const tmp = tempDirsPerTest();

test('parseSize reads sizes like vmctl', () => {
  expect(parseSize('50G')).toBe(50 * 2 ** 30);
  expect(parseSize('512M')).toBe(512 * 2 ** 20);
  expect(parseSize('1t')).toBe(2 ** 40);
  expect(parseSize('1000')).toBe(1024); // rounded up to 512
  expect(() => parseSize('12X')).toThrow(/invalid size/);
});

describe.skipIf(!hasQemuImg)('vhostctl create', () => {
  beforeAll(() => {
    if (!existsSync(BIN)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  }, 300_000);

  test('-h prints usage; no arguments and unknown commands fail with a message', () => {
    const dir = tmp();
    expect(vhostctl(dir, '-h')).toMatchObject({ status: 0, out: expect.stringMatching(/create \[-b base\] -s size file/) });
    expect(vhostctl(dir).status).toBe(1);
    const bad = vhostctl(dir, 'frobnicate');
    expect(bad.status).toBe(1);
    expect(bad.err).toMatch(/unknown command "frobnicate"/);
  });

  test('create -s 50G writes a v3 image that qemu-img checks clean and describes', () => {
    const dir = tmp();
    const r = vhostctl(dir, 'create', '-s', '50G', 'disk.qcow2');
    expect(r.status, r.err).toBe(0);
    const f = join(dir, 'disk.qcow2');
    expect(qemuCheck(f).status).toBe(0);
    const info = qemuInfo(f) as { format: string; 'virtual-size': number; 'cluster-size': number; 'format-specific': { data: { compat: string; 'refcount-bits': number; corrupt: boolean } } };
    expect(info.format).toBe('qcow2');
    expect(info['virtual-size']).toBe(50 * 2 ** 30);
    expect(info['cluster-size']).toBe(65536);
    expect(info['format-specific'].data).toMatchObject({ compat: '1.1', 'refcount-bits': 16, corrupt: false });
    // qemu-io can write to it and the result stays clean.
    qemuIo(f, 'qcow2', 'write -P 0x5 1G 1M');
    expect(qemuCheck(f).status).toBe(0);
  });

  test('create -b BASE writes an overlay with the backing format stated; size defaults to the base', async () => {
    const dir = tmp();
    qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '3M');
    qemuIo(join(dir, 'base.qcow2'), 'qcow2', 'write -P 0x42 0 1M');
    writeFileSync(join(dir, 'plain.raw'), Buffer.alloc(1 << 20, 0x17));
    expect(vhostctl(dir, 'create', '-b', 'base.qcow2', 'over.qcow2').status).toBe(0);
    expect(vhostctl(dir, 'create', '-b', join(dir, 'plain.raw'), '-s', '2M', 'over-raw.qcow2').status).toBe(0);
    const info = qemuInfo(join(dir, 'over.qcow2')) as Record<string, unknown>;
    expect(info).toMatchObject({ 'virtual-size': 3 * 2 ** 20, 'backing-filename': 'base.qcow2', 'backing-filename-format': 'qcow2' });
    expect(qemuInfo(join(dir, 'over-raw.qcow2'))).toMatchObject({ 'backing-filename-format': 'raw' });
    expect(qemuCheck(join(dir, 'over.qcow2')).status).toBe(0);
    const img = await Qcow2Image.open(join(dir, 'over.qcow2'), { readOnly: false });
    const b = Buffer.alloc(4096);
    await img.read(4096, [b]);
    expect(b.every((x) => x === 0x42)).toBe(true);
    await img.write(100, [Buffer.alloc(10, 1)]);
    await img.close();
    expect(qemuCheck(join(dir, 'over.qcow2')).status).toBe(0);
  });

  test('errors: missing size, existing file, missing base', () => {
    const dir = tmp();
    expect(vhostctl(dir, 'create', 'x.qcow2')).toMatchObject({ status: 1, err: expect.stringMatching(/missing -s size/) });
    expect(vhostctl(dir, 'create', '-s', '1M', 'x.qcow2').status).toBe(0);
    expect(vhostctl(dir, 'create', '-s', '1M', 'x.qcow2')).toMatchObject({ status: 1, err: expect.stringMatching(/EEXIST|exists/) });
    expect(vhostctl(dir, 'create', '-b', 'nope.qcow2', 'y.qcow2')).toMatchObject({ status: 1, err: expect.stringMatching(/backing/) });
    expect(vhostctl(dir, 'create', '-s', 'lots', 'z.qcow2')).toMatchObject({ status: 1, err: expect.stringMatching(/invalid size/) });
  });
});
