/**
 * openDisk: the one place the daemon opens images. The format is the configured one, or detected from the file:
 * qcow2 when it starts with the qcow2 magic "QFI\xfb", raw otherwise (a qcow2 image is never probed as raw: its
 * magic always wins). A probed format is logged as a warning, and a disk probed as raw is wrapped in
 * ProbedRawGuard so that the guest cannot turn it into a qcow2 image for the next probe. Backing chains follow the
 * image policy (src/blk/qcow2/backing.ts).
 */
import type { Disk } from './disk.js';
import { openImageFile } from './image-file.js';
import { RawDisk } from './raw-disk.js';
import { Qcow2Image } from './qcow2/image.js';
import type { ImagePolicy } from './qcow2/backing.js';
import { ProbedRawGuard } from './probed-raw-guard.js';
import type { Logger } from '../util/log.js';
import { lastEngineReason } from './uring-engine.js';

export type DiskFormat = 'raw' | 'qcow2';

export const QCOW2_MAGIC = 0x514649fb;

/** 'qcow2' if the file starts with the qcow2 magic, else 'raw' (a regular file or block device, checked before it is opened). */
export async function detectFormat(path: string): Promise<DiskFormat> {
  const { fh } = await openImageFile(path, { readOnly: true, allowBlockDevice: true });
  try {
    const b = new Uint8Array(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 && new DataView(b.buffer).getUint32(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
  } finally {
    await fh.close();
  }
}

export interface OpenDiskOptions {
  cacheBytes?: number;
  /** Where backing files may live, and which images they must never be. */
  policy?: ImagePolicy;
}

/** Open an image in the given format (undefined: detect). */
export async function openDisk(path: string, format: DiskFormat | undefined, readOnly: boolean, log: Logger, opts: OpenDiskOptions = {}): Promise<Disk> {
  const fmt = format ?? (await detectFormat(path));
  if (format === undefined) log.warn({ image: path, format: fmt }, `image format probed as ${fmt}; set format ${fmt} on the disk to fix it`);
  let disk: Disk;
  if (fmt === 'raw') {
    const raw = await RawDisk.open(path, { readOnly });
    disk = format === undefined ? new ProbedRawGuard(raw, log) : raw;
  } else disk = await Qcow2Image.open(path, { readOnly, log, l2CacheBytes: opts.cacheBytes, policy: opts.policy });
  log.info({ image: path, engine: disk.engine, reason: lastEngineReason() }, `disk I/O engine ${disk.engine}`);
  return disk;
}
