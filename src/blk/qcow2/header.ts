/**
 * qcow2 header codec and validation (docs/qcow2.md; QEMU docs/interop/qcow2.txt). Everything big-endian.
 * parseHeader() checks every field that later code relies on, so that a hostile image is refused here with a
 * clear ImageError instead of causing huge allocations or reads far outside the file.
 */
import { ImageError } from './errors.js';

export const QCOW2_MAGIC = 0x514649fb;
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_FDE = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;

/** QEMU limits (qcow2.h): L1 ≤ 32 MiB, refcount table ≤ 8 MiB, 65536 snapshots. */
/** Byte offsets of the header fields that are rewritten in place after open (big-endian, see docs/qcow2.md). */
export const HDR_REFTABLE_OFFSET = 48; // u64 refcount_table_offset, then u32 refcount_table_clusters at 56
export const HDR_INCOMPAT_FEATURES = 72;
export const HDR_AUTOCLEAR_FEATURES = 88;

export const MAX_L1_BYTES = 32 * 1024 * 1024;
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
export const MAX_SNAPSHOTS = 65536;
/** Virtual sizes above this are refused (QEMU: 2^61 at most; JS numbers are exact to 2^53). */
export const MAX_VIRTUAL_SIZE = 2 ** 52;

export interface HeaderExtension {
  type: number;
  data: Buffer;
}

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  extensions: HeaderExtension[];
  backingFile: string | null;
  backingFormat: string | null;
  /** Names from the feature name table extension, keyed "incompat:3" etc. */
  featureNames: Map<string, string>;
}

function u64(buf: Buffer, off: number): number {
  const hi = buf.readUInt32BE(off);
  const lo = buf.readUInt32BE(off + 4);
  return hi * 0x1_0000_0000 + lo;
}

/**
 * Parse and validate cluster 0 (`buf` holds at least the first min(cluster, file) bytes). `fileSize` bounds every
 * table. Throws ImageError (InvalidFormat / UnsupportedFeature / CorruptImage).
 */
export function parseHeader(buf: Buffer, fileSize: number, path: string): Qcow2Header {
  const bad = (m: string): never => {
    throw new ImageError('InvalidFormat', m, { path, op: 'open' });
  };
  const corrupt = (m: string): never => {
    throw new ImageError('CorruptImage', m, { path, op: 'open' });
  };
  const unsupported = (feature: string, m?: string): never => {
    throw new ImageError('UnsupportedFeature', m ?? `unsupported qcow2 feature: ${feature}`, { path, op: 'open', feature });
  };
  if (buf.length < 72) bad('file too small for a qcow2 header');
  if (buf.readUInt32BE(0) !== QCOW2_MAGIC) bad('not a qcow2 image (bad magic)');
  const version = buf.readUInt32BE(4);
  if (version !== 2 && version !== 3) unsupported(`version ${version}`, `unsupported qcow2 version ${version}`);
  const clusterBits = buf.readUInt32BE(20);
  if (clusterBits < 9 || clusterBits > 21) bad(`cluster_bits ${clusterBits} outside 9..21`);
  const cs = 2 ** clusterBits;
  const h: Qcow2Header = {
    version: version as 2 | 3,
    backingFileOffset: u64(buf, 8),
    backingFileSize: buf.readUInt32BE(16),
    clusterBits,
    size: u64(buf, 24),
    cryptMethod: buf.readUInt32BE(32),
    l1Size: buf.readUInt32BE(36),
    l1TableOffset: u64(buf, 40),
    refcountTableOffset: u64(buf, 48),
    refcountTableClusters: buf.readUInt32BE(56),
    nbSnapshots: buf.readUInt32BE(60),
    snapshotsOffset: u64(buf, 64),
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: 72,
    compressionType: 0,
    extensions: [],
    backingFile: null,
    backingFormat: null,
    featureNames: new Map(),
  };
  if (version === 3) {
    if (buf.length < 104) bad('file too small for a qcow2 v3 header');
    h.incompatibleFeatures = buf.readBigUInt64BE(72);
    h.compatibleFeatures = buf.readBigUInt64BE(80);
    h.autoclearFeatures = buf.readBigUInt64BE(88);
    h.refcountOrder = buf.readUInt32BE(96);
    h.headerLength = buf.readUInt32BE(100);
    if (h.headerLength < 104 || h.headerLength % 8 !== 0) bad(`header_length ${h.headerLength} invalid (v3 needs >= 104, multiple of 8)`);
    if (h.headerLength > Math.min(cs, buf.length)) bad(`header_length ${h.headerLength} exceeds the header cluster`);
    if (h.headerLength > 104) h.compressionType = buf[104]!;
  }
  if (h.refcountOrder > 6) bad(`refcount_order ${h.refcountOrder} > 6`);

  // Header extensions (parsed before feature checks so that unknown bits can be named from the feature table).
  const extEnd = h.backingFileOffset !== 0 && h.backingFileOffset < Math.min(cs, buf.length) ? h.backingFileOffset : Math.min(cs, buf.length);
  let off = h.headerLength;
  const seen = new Set<number>();
  while (off + 8 <= extEnd) {
    const type = buf.readUInt32BE(off);
    const len = buf.readUInt32BE(off + 4);
    if (type === EXT_END) break;
    if (off + 8 + len > extEnd) bad(`header extension 0x${type.toString(16)} runs past the header area`);
    if (seen.has(type)) bad(`header extension 0x${type.toString(16)} appears twice`);
    seen.add(type);
    const data = Buffer.from(buf.subarray(off + 8, off + 8 + len));
    h.extensions.push({ type, data });
    if (type === EXT_BACKING_FORMAT) h.backingFormat = data.toString('latin1');
    if (type === EXT_FEATURE_TABLE) {
      for (let i = 0; i + 48 <= data.length; i += 48) {
        const kind = ['incompat', 'compat', 'autoclear'][data[i]!] ?? `type${data[i]}`;
        const name = data.subarray(i + 2, i + 48).toString('latin1').replace(/\0.*$/s, '');
        h.featureNames.set(`${kind}:${data[i + 1]}`, name);
      }
    }
    off += 8 + Math.ceil(len / 8) * 8;
  }

  // Features named by the issue: refused with an error that names them.
  if (h.cryptMethod !== 0 || seen.has(EXT_FDE)) unsupported('encryption', `encrypted qcow2 images are not supported (encryption, crypt_method ${h.cryptMethod})`);
  if (h.incompatibleFeatures & INCOMPAT_DATA_FILE || seen.has(EXT_DATA_FILE)) unsupported('external data file');
  if (h.incompatibleFeatures & INCOMPAT_EXTL2) unsupported('extended L2 entries');
  if (h.incompatibleFeatures & INCOMPAT_COMPRESSION) {
    if (h.compressionType !== 0) unsupported('zstd compression', `unsupported qcow2 feature: compression type ${h.compressionType === 1 ? 'zstd' : h.compressionType}`);
  } else if (h.compressionType !== 0) bad(`compression_type ${h.compressionType} without the compression type feature bit`);
  const known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION;
  const unknown = h.incompatibleFeatures & ~known;
  if (unknown !== 0n) {
    const names: string[] = [];
    for (let b = 0; b < 64; b++) if (unknown & (1n << BigInt(b))) names.push(h.featureNames.get(`incompat:${b}`) ?? `incompatible bit ${b}`);
    unsupported(names.join(', '), `unsupported qcow2 feature: ${names.join(', ')}`);
  }

  // Sizes and tables.
  if (h.size > MAX_VIRTUAL_SIZE) bad(`virtual size ${h.size} too large`);
  const l2Entries = cs / 8;
  const needL1 = Math.ceil(h.size / (cs * l2Entries));
  if (h.l1Size * 8 > MAX_L1_BYTES) corrupt(`L1 table too large (${h.l1Size} entries)`);
  if (h.l1Size < needL1) corrupt(`L1 table too small for the virtual size (${h.l1Size} < ${needL1} entries)`);
  const tables: Array<[string, number, number]> = [['header', 0, cs]];
  const checkTable = (name: string, offset: number, bytes: number): void => {
    if (bytes === 0) return;
    if (offset % cs !== 0) corrupt(`${name} offset 0x${offset.toString(16)} is not cluster-aligned`);
    if (offset + bytes > fileSize) corrupt(`${name} (0x${offset.toString(16)}+${bytes}) lies past the end of the file (${fileSize})`);
    const end = offset + Math.ceil(bytes / cs) * cs;
    for (const [other, o, len] of tables) {
      const oend = o + Math.ceil(len / cs) * cs;
      if (offset < oend && o < end) corrupt(`${name} overlaps the ${other}`);
    }
    tables.push([name, offset, bytes]);
  };
  checkTable('L1 table', h.l1TableOffset, h.l1Size * 8);
  if (h.refcountTableClusters === 0) corrupt('refcount table is empty');
  if (h.refcountTableClusters * cs > MAX_REFTABLE_BYTES) corrupt(`refcount table too large (${h.refcountTableClusters} clusters)`);
  checkTable('refcount table', h.refcountTableOffset, h.refcountTableClusters * cs);
  if (h.nbSnapshots > MAX_SNAPSHOTS) corrupt(`too many snapshots (${h.nbSnapshots})`);
  if (h.nbSnapshots > 0) {
    if (h.snapshotsOffset % cs !== 0 || h.snapshotsOffset === 0 || h.snapshotsOffset >= fileSize) corrupt(`snapshot table offset 0x${h.snapshotsOffset.toString(16)} invalid`);
  }

  // Backing file name: inside cluster 0, after the extensions.
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize === 0 || h.backingFileSize > 1023) bad(`backing_file_size ${h.backingFileSize} invalid`);
    if (h.backingFileOffset < h.headerLength || h.backingFileOffset + h.backingFileSize > Math.min(cs, buf.length)) bad('backing file name lies outside the header cluster');
    h.backingFile = buf.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize).toString('utf8');
    if (h.backingFile.includes('\0')) bad('backing file name contains NUL');
  }
  return h;
}

/** Encode a v3 header with extensions and backing file name into a cluster-sized buffer (used by create). */
export function encodeHeaderV3(opts: {
  clusterBits: number;
  size: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  refcountOrder: number;
  backingFile?: string;
  backingFormat?: string;
}): Buffer {
  const cs = 2 ** opts.clusterBits;
  const buf = Buffer.alloc(cs);
  const w64 = (off: number, v: number): void => {
    buf.writeBigUInt64BE(BigInt(v), off);
  };
  buf.writeUInt32BE(QCOW2_MAGIC, 0);
  buf.writeUInt32BE(3, 4);
  buf.writeUInt32BE(opts.clusterBits, 20);
  w64(24, opts.size);
  buf.writeUInt32BE(0, 32);
  buf.writeUInt32BE(opts.l1Size, 36);
  w64(40, opts.l1TableOffset);
  w64(48, opts.refcountTableOffset);
  buf.writeUInt32BE(opts.refcountTableClusters, 56);
  buf.writeUInt32BE(opts.refcountOrder, 96);
  const headerLength = 112; // 104 + compression_type (0 = zlib) + padding, as QEMU writes it
  buf.writeUInt32BE(headerLength, 100);
  let off = headerLength;
  if (opts.backingFormat) {
    const d = Buffer.from(opts.backingFormat, 'latin1');
    buf.writeUInt32BE(EXT_BACKING_FORMAT, off);
    buf.writeUInt32BE(d.length, off + 4);
    d.copy(buf, off + 8);
    off += 8 + Math.ceil(d.length / 8) * 8;
  }
  off += 8; // end-of-extensions marker (type 0, length 0)
  if (opts.backingFile) {
    const name = Buffer.from(opts.backingFile, 'utf8');
    if (name.length > 1023 || off + name.length > cs) throw new ImageError('InvalidFormat', 'backing file name too long');
    w64(8, off);
    buf.writeUInt32BE(name.length, 16);
    name.copy(buf, off);
  }
  return buf;
}
