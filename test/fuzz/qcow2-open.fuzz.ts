/**
 * Fuzz target: opening a hostile qcow2 image (src/blk/qcow2/image.ts): the input is the whole image file
 * (header, L1/L2 and refcount tables, snapshot table, extensions, compressed clusters). It is opened read-only and
 * read at a few offsets, then opened read-write (dirty images rebuild their refcounts, autoclear bits are cleared),
 * written, flushed and read back. Contract: only ImageError; nothing hangs and no allocation goes over the
 * engine's budget (the header's table sizes are the attacker's).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageError } from '../../src/blk/qcow2/errors.js';
import { Qcow2Image } from '../../src/blk/qcow2/image.js';
import type { FuzzTarget } from './engine.js';
import { QCOW2_DICTIONARY } from './qcow2-header.fuzz.js';

// On tmpfs when there is one: flush's fdatasync is then free, and the image never touches a disk.
const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vhostd-fuzz-qcow2-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, 'image.qcow2');
const sector = new Uint8Array(512);
const pattern = new Uint8Array(512).fill(0x5a);

async function exercise(readOnly: boolean): Promise<void> {
  let img: Qcow2Image;
  try {
    img = await Qcow2Image.open(file, { readOnly });
  } catch (err) {
    if (err instanceof ImageError) return;
    throw err;
  }
  try {
    const size = img.size;
    const points = [0, 512, size / 2, size - 512].map((p) => Math.floor(p / 512) * 512).filter((p) => p >= 0 && p + 512 <= size);
    for (const p of points) {
      try {
        await img.read(p, [sector]);
      } catch (err) {
        if (!(err instanceof ImageError)) throw err;
      }
    }
    if (!readOnly && points.length) {
      try {
        await img.write(points[0], [pattern]);
        await img.flush();
        await img.read(points[0], [sector]);
      } catch (err) {
        if (!(err instanceof ImageError)) throw err;
        return;
      }
      if (!sector.every((b) => b === 0x5a)) throw new Error('qcow2 contract: a sector written and flushed reads back different');
    }
  } finally {
    await img.close();
  }
}

export const target: FuzzTarget = {
  name: 'qcow2-open',
  maxLen: 16384,
  allowed: (err) => err instanceof ImageError,
  dictionary: QCOW2_DICTIONARY,
  async run(data) {
    writeFileSync(file, data);
    await exercise(true);
    writeFileSync(file, data);
    await exercise(false);
  },
};
