/**
 * Shared input layout of the descriptor-chain and virtio-blk fuzz targets: what a hostile driver controls.
 *   byte 0: log2 of the queue size (& 7: 1..128); byte 1: head (mod size); byte 2 bit 0: INDIRECT_DESC negotiated
 *   then 16 * size bytes of descriptor table, then the bytes of guest memory (zero-padded).
 * Guest memory is three small regions: two adjacent ones (buffers and indirect tables may straddle them,
 * VIRTIO 1.2 §2.7.5 allows it) and one apart, so GPAs 0x1000-0x2fff and 0x8000-0x8fff are mapped.
 */
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { DescriptorChain } from '../../src/virtqueue/descriptor-chain.js';

export const REGIONS = [
  { gpa: 0x1000, size: 0x1000 },
  { gpa: 0x2000, size: 0x1000 },
  { gpa: 0x8000, size: 0x1000 },
] as const;
export const MAX_QUEUE_LOG2 = 7;
export const CHAIN_MAX_LEN = 3 + 16 * (1 << MAX_QUEUE_LOG2) + 0x3000;

const le32 = (v: number): Uint8Array => new Uint8Array(new Uint32Array([v]).buffer);
/** Region edges as little-endian addresses, and the descriptor flag combinations. */
export const CHAIN_DICTIONARY: readonly Uint8Array[] = [
  ...[0x1000, 0x1ff0, 0x1ffc, 0x2000, 0x2ff0, 0x3000, 0x8000, 0x8ff0, 0x8fff, 0x9000].map(le32),
  ...[1, 2, 3, 4, 5, 6].map((f) => new Uint8Array([f, 0])),
];

export interface ChainInput {
  mem: GuestMemory;
  table: Uint32Array;
  size: number;
  head: number;
  indirectOk: boolean;
}

export function decodeChainInput(data: Uint8Array): ChainInput | null {
  if (data.length < 3) return null;
  const size = 1 << (data[0] & MAX_QUEUE_LOG2);
  const head = data[1] % size;
  const indirectOk = (data[2] & 1) !== 0;
  const tableBytes = new Uint8Array(16 * size);
  tableBytes.set(data.subarray(3, 3 + tableBytes.length));
  let pos = 3 + tableBytes.length;
  const buffers = REGIONS.map((r) => {
    const b = new ArrayBuffer(r.size);
    const chunk = data.subarray(Math.min(pos, data.length), Math.min(pos + r.size, data.length));
    new Uint8Array(b).set(chunk);
    pos += r.size;
    return { gpa: r.gpa, buffer: b };
  });
  return { mem: GuestMemory.fromArrayBuffers(buffers), table: new Uint32Array(tableBytes.buffer), size, head, indirectOk };
}

/** Invariants of a walked chain: what the devices rely on before touching any buffer. */
export function checkChain(c: DescriptorChain): void {
  for (const [sg, bytes] of [[c.readable, c.readableBytes], [c.writable, c.writableBytes]] as const) {
    let sum = 0;
    for (let i = 0; i < sg.count; i++) {
      if (!(sg.lens[i] > 0) || sg.offs[i] < 0 || sg.offs[i] + sg.lens[i] > sg.bufs[i].length) {
        throw new Error(`sg entry ${i} [${sg.offs[i]}+${sg.lens[i]}) outside its ${sg.bufs[i].length}-byte buffer`);
      }
      sum += sg.lens[i];
    }
    if (c.error === null && sum !== bytes) throw new Error(`sg lists hold ${sum} bytes, chain says ${bytes}`);
    if (sg.count > sg.capacity) throw new Error(`sg list of ${sg.count} entries over capacity ${sg.capacity}`);
  }
  if (c.readableBytes + c.writableBytes >= 2 ** 32) throw new Error('chain of 2^32 bytes or more accepted');
}
