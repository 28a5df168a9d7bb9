/**
 * Fuzz target: virtio-blk request parsing (src/blk/request.ts, VIRTIO 1.2 §5.2.6) of a walked chain built from a
 * fuzzed descriptor table and guest memory (layout in chain-input.ts; byte 2 bit 1: read-only disk). Contract:
 * parseBlkRequest never throws, and whatever it lets through to I/O stays inside the disk and the chain: read/write
 * data views add up to the length and end at or before the capacity, every discard/write-zeroes segment too,
 * GET_ID at most 20 bytes, and a request that can carry a status always leaves a status byte to write.
 */
import { DescriptorChain } from '../../src/virtqueue/descriptor-chain.js';
import { parseBlkRequest, writeStatus, type BlkLimits } from '../../src/blk/request.js';
import { SECTOR_SIZE, VIRTIO_BLK_ID_BYTES } from '../../src/blk/virtio-blk-defs.js';
import { checkChain, CHAIN_DICTIONARY, CHAIN_MAX_LEN, decodeChainInput } from './chain-input.js';
import type { FuzzTarget } from './engine.js';

const CAPACITY = 2048;
const limits = (readOnly: boolean): BlkLimits => ({
  capacitySectors: CAPACITY,
  readOnly,
  maxDiscardSectors: 1024,
  maxDiscardSeg: 4,
  maxWriteZeroesSectors: 1024,
  maxWriteZeroesSeg: 4,
});

function fail(m: string): never {
  throw new Error(`blk request contract: ${m}`);
}

export const target: FuzzTarget = {
  name: 'blk-request',
  maxLen: CHAIN_MAX_LEN,
  allowed: () => false,
  // Region edges, sectors around the capacity, request types (VIRTIO 1.2 §5.2.6).
  dictionary: [...CHAIN_DICTIONARY, ...[CAPACITY - 2, CAPACITY - 1, CAPACITY, 0, 1, 4, 8, 11, 13, 0x80000000].map((v) => new Uint8Array(new Uint32Array([v]).buffer))],
  run(data) {
    const input = decodeChainInput(data);
    if (input === null) return;
    const chain = new DescriptorChain(input.size);
    chain.walk(input.mem, input.table, input.size, input.head, input.indirectOk);
    checkChain(chain);
    const lim = limits((data[2] & 2) !== 0);
    const r = parseBlkRequest(chain, lim);
    const end = CAPACITY * SECTOR_SIZE;
    switch (r.kind) {
      case 'drop':
        if (chain.error === null && chain.writableBytes > 0) fail(`dropped a request that has a status byte (${r.error})`);
        return;
      case 'fail':
        if (chain.writableBytes === 0) fail('fail status with no writable byte');
        writeStatus(chain, r.status);
        return;
      case 'read':
      case 'write': {
        if (r.kind === 'write' && lim.readOnly) fail('write to a read-only disk');
        if (r.len % SECTOR_SIZE !== 0 || r.offset % SECTOR_SIZE !== 0 || r.offset + r.len > end) fail(`${r.kind} [${r.offset}+${r.len}) outside the disk`);
        const sum = r.bufs.reduce((s, b) => s + b.length, 0);
        if (sum !== r.len) fail(`${r.kind} views hold ${sum} bytes for len ${r.len}`);
        const room = r.kind === 'read' ? chain.writableBytes - 1 : chain.readableBytes - 16;
        if (r.len > room) fail(`${r.kind} of ${r.len} bytes in a chain with room for ${room}`);
        return;
      }
      case 'get-id': {
        const sum = r.bufs.reduce((s, b) => s + b.length, 0);
        if (r.len > VIRTIO_BLK_ID_BYTES || sum !== r.len || r.len > chain.writableBytes - 1) fail(`get-id of ${r.len} bytes`);
        return;
      }
      case 'discard':
      case 'write-zeroes':
        if (lim.readOnly) fail(`${r.kind} on a read-only disk`);
        if (r.segments.length === 0 || r.segments.length > 4) fail(`${r.segments.length} segments`);
        for (const s of r.segments) {
          if (s.offset < 0 || s.offset + s.len > end || s.len > 1024 * SECTOR_SIZE) fail(`segment [${s.offset}+${s.len}) outside the disk`);
          if (r.kind === 'discard' && s.unmap) fail('discard with unmap');
        }
        return;
      case 'flush':
        return;
    }
  },
};
