/**
 * Fuzz target: qcow2 header parsing (src/blk/qcow2/header.ts): cluster 0 of a hostile image, with the file as
 * long as the input and as a huge file (tables then point anywhere). Contract: only ImageError; an accepted header
 * has a supported cluster size, tables inside the file, aligned, and within the size caps, and a backing file
 * name inside the header cluster.
 */
import { ImageError } from '../../src/blk/qcow2/errors.js';
import { MAX_L1_BYTES, MAX_REFTABLE_BYTES, MAX_SNAPSHOTS, parseHeader } from '../../src/blk/qcow2/header.js';
import type { FuzzTarget } from './engine.js';

const be32 = (v: number): Uint8Array => new Uint8Array([v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff]);
/** Magic, extension types, versions, cluster_bits edges and feature bits, big-endian as in the file. */
export const QCOW2_DICTIONARY: readonly Uint8Array[] = [0x514649fb, 0xe2792aca, 0x6803f857, 0x23852875, 0x0537be77, 0x44415441, 2, 3, 8, 9, 16, 21, 22, 104, 112, 0x200, 0x10000].map(be32);

function check(data: Uint8Array, fileSize: number): void {
  let h;
  try {
    h = parseHeader(Buffer.from(data.buffer, data.byteOffset, data.length), fileSize, 'fuzz.qcow2');
  } catch (err) {
    if (err instanceof ImageError) return;
    throw err;
  }
  const cs = 2 ** h.clusterBits;
  const bad = (m: string): never => {
    throw new Error(`qcow2 header contract: ${m}`);
  };
  if (h.clusterBits < 9 || h.clusterBits > 21) bad(`cluster_bits ${h.clusterBits}`);
  if (h.l1Size * 8 > MAX_L1_BYTES) bad(`L1 of ${h.l1Size} entries`);
  if (h.l1Size > 0 && (h.l1TableOffset % cs !== 0 || h.l1TableOffset + h.l1Size * 8 > fileSize)) bad('L1 table misplaced');
  if (h.refcountTableClusters === 0 || h.refcountTableClusters * cs > MAX_REFTABLE_BYTES) bad('refcount table size');
  if (h.refcountTableOffset % cs !== 0 || h.refcountTableOffset + h.refcountTableClusters * cs > fileSize) bad('refcount table misplaced');
  if (h.nbSnapshots > MAX_SNAPSHOTS) bad(`${h.nbSnapshots} snapshots`);
  if (h.refcountOrder > 6) bad(`refcount_order ${h.refcountOrder}`);
  if (h.backingFile !== null && (h.backingFile.length === 0 || h.backingFileOffset + h.backingFileSize > Math.min(cs, data.length))) bad('backing name outside the header');
}

export const target: FuzzTarget = {
  name: 'qcow2-header',
  maxLen: 4096,
  allowed: (err) => err instanceof ImageError,
  dictionary: QCOW2_DICTIONARY,
  run(data) {
    check(data, data.length);
    check(data, 2 ** 40);
  },
};
