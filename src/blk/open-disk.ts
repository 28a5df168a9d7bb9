/**
 * openDisk: the one place the daemon opens images. The format is the configured one, or detected from the file:
 * qcow2 when it starts with the qcow2 magic "QFI\xfb", raw otherwise (a qcow2 image is never probed as raw: its
 * magic always wins).
 */
import { open } from 'node:fs/promises';
import type { Disk } from './disk.js';
import { RawDisk } from './raw-disk.js';
import { Qcow2Image } from './qcow2/image.js';
import type { Logger } from '../util/log.js';

export type DiskFormat = 'raw' | 'qcow2';

export const QCOW2_MAGIC = 0x514649fb;

/** 'qcow2' if the file starts with the qcow2 magic, else 'raw'. */
export async function detectFormat(path: string): Promise<DiskFormat> {
  const fh = await open(path, 'r');
  try {
    const b = new Uint8Array(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 && new DataView(b.buffer).getUint32(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
  } finally {
    await fh.close();
  }
}

/** Open an image in the given format (undefined: detect). */
export async function openDisk(path: string, format: DiskFormat | undefined, readOnly: boolean, log: Logger, opts: { cacheBytes?: number } = {}): Promise<Disk> {
  const fmt = format ?? (await detectFormat(path));
  if (fmt === 'raw') return RawDisk.open(path, { readOnly });
  return Qcow2Image.open(path, { readOnly, log, l2CacheBytes: opts.cacheBytes });
}
