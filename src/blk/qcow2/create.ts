/**
 * createQcow2(): write a new, empty qcow2 v3 image (64 KiB clusters, 16-bit refcounts), optionally an overlay on a
 * backing image whose format is stated in the header. Layout as qemu-img lays it out:
 *   cluster 0 header (+ extensions + backing name), 1 refcount table, 2 refcount block, 3.. L1 table.
 */
import { open, stat } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { ImageError } from './errors.js';
import { encodeHeaderV3, QCOW2_MAGIC } from './header.js';
import { setRefcount } from './entries.js';
import { Qcow2Image } from './image.js';

export interface CreateOptions {
  /** Virtual size in bytes (rounded up to 512); defaults to the backing image's size. */
  size?: number;
  /** Backing image path (absolute, or relative to the current directory). */
  backing?: string;
  clusterBits?: number;
}

/** Parse a size such as 50G, 512M, 1T, 4096 (binary units, as vmctl and qemu-img read them). */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtpe]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) throw new ImageError('InvalidFormat', `invalid size "${text}" (use e.g. 50G, 512M, 4096)`);
  const mult = 1024 ** ' kmgtpe'.indexOf((m[2] || ' ').toLowerCase());
  const n = Number(m[1]) * mult;
  if (!Number.isFinite(n) || n <= 0 || n > 2 ** 52) throw new ImageError('InvalidFormat', `size "${text}" out of range`);
  return Math.ceil(n / 512) * 512;
}

export async function createQcow2(file: string, opts: CreateOptions): Promise<void> {
  const clusterBits = opts.clusterBits ?? 16;
  const cs = 2 ** clusterBits;
  let backingName: string | undefined;
  let backingFormat: string | undefined;
  let size = opts.size;
  if (opts.backing !== undefined) {
    const absBase = resolve(opts.backing);
    const st = await stat(absBase).catch((err: Error) => {
      throw new ImageError('Io', `cannot open backing image: ${err.message}`, { path: absBase, op: 'create' });
    });
    if (!st.isFile()) throw new ImageError('InvalidFormat', 'backing image is not a regular file', { path: absBase, op: 'create' });
    const fh = await open(absBase, 'r');
    const magic = Buffer.alloc(4);
    try {
      await fh.read(magic, 0, 4, 0);
    } finally {
      await fh.close();
    }
    if (magic.readUInt32BE(0) === QCOW2_MAGIC) {
      backingFormat = 'qcow2';
      const base = await Qcow2Image.open(absBase, { readOnly: true });
      size ??= base.size;
      await base.close();
    } else {
      backingFormat = 'raw';
      size ??= Math.ceil(st.size / 512) * 512;
    }
    // Stored relative to the overlay's directory (how qcow2 resolves it), absolute if given absolute.
    backingName = isAbsolute(opts.backing) ? opts.backing : relative(dirname(resolve(file)), absBase);
  }
  if (size === undefined) throw new ImageError('InvalidFormat', 'a size is required without a backing image', { path: file, op: 'create' });
  size = Math.ceil(size / 512) * 512;
  const l2Entries = cs / 8;
  const l1Size = Math.max(1, Math.ceil(size / (cs * l2Entries)));
  const l1Clusters = Math.ceil((l1Size * 8) / cs);
  const refcountOrder = 4;
  const totalClusters = 3 + l1Clusters;
  if (totalClusters > (cs * 8) / 16) throw new ImageError('InvalidFormat', 'image too large for one refcount block', { path: file, op: 'create' });
  const header = encodeHeaderV3({
    clusterBits,
    size,
    l1Size,
    l1TableOffset: 3 * cs,
    refcountTableOffset: cs,
    refcountTableClusters: 1,
    refcountOrder,
    backingFile: backingName,
    backingFormat,
  });
  const reftable = Buffer.alloc(cs);
  reftable.writeBigUInt64BE(BigInt(2 * cs), 0);
  const refblock = Buffer.alloc(cs);
  for (let c = 0; c < totalClusters; c++) setRefcount(refblock, c, 16, 1);
  const fh = await open(file, 'wx').catch((err: Error) => {
    throw new ImageError('Io', `cannot create: ${err.message}`, { path: file, op: 'create' });
  });
  try {
    await fh.writev([header, reftable, refblock], 0);
    await fh.truncate(totalClusters * cs); // the L1 table: zeros
    await fh.datasync();
  } finally {
    await fh.close();
  }
}
