/**
 * Annotated qcow2 header fixtures: one field per line, `name type value # comment`, so a hostile
 * variant is the valid header with one named line changed. buildImage() lays a header out like qemu-img does
 * (cluster 0 header, 1 refcount table, 2 refcount block, 3 L1 table, 4 one L2 table) at 64 KiB clusters.
 */
import { writeFileSync } from 'node:fs';

export const CS = 65536;

export const VALID_V3 = `
magic                    u32 0x514649fb   # "QFI\\xfb"
version                  u32 3            # qcow2 v3
backing_file_offset      u64 0            # no backing file
backing_file_size        u32 0
cluster_bits             u32 16           # 64 KiB clusters
size                     u64 16777216     # 16 MiB virtual disk
crypt_method             u32 0            # not encrypted
l1_size                  u32 1            # one L1 entry covers 512 MiB
l1_table_offset          u64 0x30000      # cluster 3
refcount_table_offset    u64 0x10000      # cluster 1
refcount_table_clusters  u32 1
nb_snapshots             u32 0
snapshots_offset         u64 0
incompatible_features    u64 0
compatible_features      u64 0
autoclear_features       u64 0
refcount_order           u32 4            # 16-bit refcounts
header_length            u32 112          # 104 + compression_type + padding
compression_type         u8  0            # zlib
padding                  u8  0
padding                  u8  0
padding                  u8  0
padding                  u32 0
end_of_extensions        u64 0            # header extension type 0, length 0
`;

/** Replace the value of the first line whose field name is `field`. */
export function withField(text: string, field: string, value: string | number | bigint): string {
  const re = new RegExp(`^(${field}\\s+u\\d+\\s+)(\\S+)`, 'm');
  if (!re.test(text)) throw new Error(`fixture has no field ${field}`);
  return text.replace(re, `$1${typeof value === 'string' ? value : '0x' + value.toString(16)}`);
}

/** Encode an annotated header into bytes. */
export function encodeFixture(text: string): Buffer {
  const parts: Buffer[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) continue;
    const [, type, value] = line.split(/\s+/);
    const v = BigInt(value!);
    const bytes = Number(type!.slice(1)) / 8;
    const b = Buffer.alloc(bytes);
    if (bytes === 8) b.writeBigUInt64BE(BigInt.asUintN(64, v));
    else if (bytes === 4) b.writeUInt32BE(Number(BigInt.asUintN(32, v)));
    else b[0] = Number(v & 0xffn);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

export interface BuildOptions {
  /** L1 entries (index → raw 64-bit value). Default: none. */
  l1?: Record<number, bigint>;
  /** Entries of the L2 table at cluster 4 (index → raw value). Adds cluster 4 to the file. */
  l2?: Record<number, bigint>;
  /** Raw refcount table entries (index → value). Default: entry 0 → refblock at cluster 2. */
  reftable?: Record<number, bigint>;
  /** Extra bytes written into cluster 0 at an offset (e.g. a backing file name). */
  extra?: Array<[number, Buffer]>;
  /** Total file clusters (default 4, or 5 with l2). */
  clusters?: number;
}

export function buildImage(file: string, headerText: string, opts: BuildOptions = {}): void {
  const clusters = opts.clusters ?? (opts.l2 ? 5 : 4);
  const img = Buffer.alloc(clusters * CS);
  encodeFixture(headerText).copy(img, 0);
  for (const [off, b] of opts.extra ?? []) b.copy(img, off);
  for (const [i, v] of Object.entries(opts.reftable ?? { 0: 2n * BigInt(CS) })) img.writeBigUInt64BE(v, CS + Number(i) * 8);
  for (let c = 0; c < clusters; c++) img.writeUInt16BE(1, 2 * CS + c * 2); // every cluster of the file in use
  for (const [i, v] of Object.entries(opts.l1 ?? {})) img.writeBigUInt64BE(v, 3 * CS + Number(i) * 8);
  for (const [i, v] of Object.entries(opts.l2 ?? {})) img.writeBigUInt64BE(v, 4 * CS + Number(i) * 8);
  writeFileSync(file, img);
}

export const COPIED = 1n << 63n;
