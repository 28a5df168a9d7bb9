/**
 * Descriptor chain walk (VIRTIO 1.2 §2.7.5, §2.7.5.3): valid direct/indirect chains, buffers and indirect tables
 * crossing region ends, and the adversarial table: each bad chain fails its request
 * (chain.error set, head returned) and never the queue.
 */
import { describe, test, expect } from 'vitest';
import { sgCopyOut } from '../../../src/memory/sg-list.js';
import { ChainError, DescriptorChain } from '../../../src/virtqueue/descriptor-chain.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../../src/virtqueue/defs.js';
import { SplitQueue } from '../../../src/virtqueue/split-queue.js';
import { standardMemory } from '../../helpers/driver-memory.js';
import { DriverSplitQueue } from '../../helpers/driver-queue.js';

const { NEXT, WRITE, INDIRECT } = { NEXT: VIRTQ_DESC_F_NEXT, WRITE: VIRTQ_DESC_F_WRITE, INDIRECT: VIRTQ_DESC_F_INDIRECT };

function setup(size = 8, indirect = true) {
  const mem = standardMemory();
  const drv = new DriverSplitQueue({ mem, size, seed: 7 });
  const q = new SplitQueue(mem, drv.queueOptions(indirect));
  const chain = new DescriptorChain(size);
  const buf = drv.alloc.alloc(4096, 16);
  /** Write an indirect table (entries: [addr, len, flags, next]) and return its GPA. */
  const table = (entries: [number, number, number, number][]): number => {
    const t = drv.alloc.alloc(16 * entries.length, 16);
    entries.forEach(([a, l, f, n], k) => {
      drv.dm.setU64(t + 16 * k, a);
      drv.dm.setU32(t + 16 * k + 8, l);
      drv.dm.setU16(t + 16 * k + 12, f);
      drv.dm.setU16(t + 16 * k + 14, n);
    });
    return t;
  };
  /** Publish head 0 and pop it; the pop must succeed (request-level errors do not fail pop). */
  const popHead0 = (): DescriptorChain => {
    drv.publish([0]);
    expect(q.pop(chain)).toBe(true);
    expect(chain.head).toBe(0);
    expect(q.broken).toBe(false);
    return chain;
  };
  return { mem, drv, q, chain, buf, table, popHead0 };
}

function bytesOf(sg: DescriptorChain['readable'], len: number): Uint8Array {
  const out = new Uint8Array(len);
  sgCopyOut(sg, 0, out, 0, len);
  return out;
}

describe('descriptor chain walk: valid chains', () => {
  test('a direct chain yields readable then writable segments with byte counts', () => {
    const { drv, q, chain } = setup();
    const data = new Uint8Array([1, 2, 3, 4, 5]);
    const head = drv.addChain([{ len: 5, write: false, data }, { len: 7, write: false }, { len: 64, write: true }]);
    expect(q.pop(chain)).toBe(true);
    expect(chain.error).toBeNull();
    expect(chain.head).toBe(head);
    expect([chain.readableBytes, chain.writableBytes, chain.descCount]).toEqual([12, 64, 3]);
    expect([chain.readable.count, chain.writable.count]).toEqual([2, 1]);
    expect(bytesOf(chain.readable, 5)).toEqual(data);
  });

  test('a chain buffer crossing two regions becomes two sg entries with the right bytes', () => {
    const { drv, q, chain } = setup();
    const data = drv.rng.bytes(300);
    drv.addChain([{ len: 300, write: false, data, across: true }]);
    expect(q.pop(chain)).toBe(true);
    expect(chain.error).toBeNull();
    expect(chain.readable.count).toBe(2);
    expect(chain.readable.lens[0] + chain.readable.lens[1]).toBe(300);
    expect(bytesOf(chain.readable, 300)).toEqual(data);
  });

  test('an indirect chain is walked from its table', () => {
    const { drv, q, chain } = setup();
    const data = drv.rng.bytes(40);
    const head = drv.addChain([{ len: 40, write: false, data }, { len: 10, write: true }, { len: 20, write: true }], { indirect: true });
    expect(q.pop(chain)).toBe(true);
    expect(chain.error).toBeNull();
    expect(chain.head).toBe(head);
    expect(chain.indirect).toBe(true);
    expect([chain.readableBytes, chain.writableBytes, chain.descCount]).toEqual([40, 30, 4]);
    expect(bytesOf(chain.readable, 40)).toEqual(data);
  });

  test('an indirect table straddling two regions is read correctly', () => {
    const { drv, q, chain } = setup();
    const data = drv.rng.bytes(33);
    drv.addChain([{ len: 33, write: false, data }, { len: 5, write: false }, { len: 8, write: true }], { indirect: true, tableAcross: true });
    expect(q.pop(chain)).toBe(true);
    expect(chain.error).toBeNull();
    expect([chain.readableBytes, chain.writableBytes]).toEqual([38, 8]);
    expect(bytesOf(chain.readable, 33)).toEqual(data);
  });

  test('a misaligned indirect table is read correctly through the copy path', () => {
    const { drv, q, chain } = setup();
    drv.addChain([{ len: 3, write: false }, { len: 9, write: true }], { indirect: true, tableMisalign: 2 });
    expect(q.pop(chain)).toBe(true);
    expect(chain.error).toBeNull();
    expect([chain.readableBytes, chain.writableBytes]).toEqual([3, 9]);
  });

  test('the WRITE flag on the indirect descriptor itself is ignored', () => {
    const { drv, q, chain, buf, table } = setup();
    drv.writeDesc(0, table([[buf, 8, 0, 0]]), 16, INDIRECT | WRITE, 0);
    drv.publish([0]);
    expect(q.pop(chain)).toBe(true);
    expect(chain.error).toBeNull();
    expect(chain.readableBytes).toBe(8);
  });
});

describe('descriptor chain walk: adversarial chains fail the request, not the queue', () => {
  test('looped chain', () => {
    const { drv, buf, popHead0 } = setup();
    drv.writeDesc(0, buf, 16, NEXT, 1);
    drv.writeDesc(1, buf + 16, 16, NEXT, 0);
    expect(popHead0().error).toBe(ChainError.LOOP);
  });

  test('looped chain inside an indirect table', () => {
    const { drv, buf, table, popHead0 } = setup();
    drv.writeDesc(0, table([[buf, 8, NEXT, 1], [buf, 8, NEXT, 0]]), 32, INDIRECT, 0);
    expect(popHead0().error).toBe(ChainError.LOOP);
  });

  test('next >= size', () => {
    const { drv, q, buf, popHead0 } = setup();
    drv.writeDesc(0, buf, 16, NEXT, q.size);
    expect(popHead0().error).toBe(ChainError.NEXT_OUT_OF_RANGE);
  });

  test('next beyond the end of an indirect table', () => {
    const { drv, buf, table, popHead0 } = setup();
    drv.writeDesc(0, table([[buf, 8, NEXT, 2], [buf, 8, 0, 0]]), 32, INDIRECT, 0);
    expect(popHead0().error).toBe(ChainError.NEXT_OUT_OF_RANGE);
  });

  test('zero-length descriptor', () => {
    const { drv, buf, popHead0 } = setup();
    drv.writeDesc(0, buf, 0, 0, 0);
    expect(popHead0().error).toBe(ChainError.ZERO_LENGTH);
  });

  test('readable after writable', () => {
    const { drv, buf, popHead0 } = setup();
    drv.writeDesc(0, buf, 16, WRITE | NEXT, 1);
    drv.writeDesc(1, buf + 16, 16, 0, 0);
    expect(popHead0().error).toBe(ChainError.READABLE_AFTER_WRITABLE);
  });

  test('indirect inside indirect', () => {
    const { drv, buf, table, popHead0 } = setup();
    const inner = table([[buf, 8, 0, 0]]);
    drv.writeDesc(0, table([[inner, 16, INDIRECT, 0]]), 16, INDIRECT, 0);
    expect(popHead0().error).toBe(ChainError.NESTED_INDIRECT);
  });

  test('indirect len not a multiple of 16', () => {
    const { drv, buf, table, popHead0 } = setup();
    drv.writeDesc(0, table([[buf, 8, 0, 0], [buf, 8, 0, 0]]), 24, INDIRECT, 0);
    expect(popHead0().error).toBe(ChainError.INDIRECT_BAD_LEN);
  });

  test('indirect table larger than queue size', () => {
    const { drv, q, buf, table, popHead0 } = setup(4);
    const entries: [number, number, number, number][] = [];
    for (let k = 0; k <= q.size; k++) entries.push([buf, 8, k < q.size ? NEXT : 0, k + 1]);
    drv.writeDesc(0, table(entries), 16 * entries.length, INDIRECT, 0);
    expect(popHead0().error).toBe(ChainError.INDIRECT_TOO_LONG);
  });

  test('indirect together with next', () => {
    const { drv, buf, table, popHead0 } = setup();
    drv.writeDesc(0, table([[buf, 8, 0, 0]]), 16, INDIRECT | NEXT, 1);
    expect(popHead0().error).toBe(ChainError.INDIRECT_WITH_NEXT);
  });

  test('indirect descriptor when VIRTIO_F_INDIRECT_DESC was not negotiated', () => {
    const { drv, buf, table, popHead0 } = setup(8, false);
    drv.writeDesc(0, table([[buf, 8, 0, 0]]), 16, INDIRECT, 0);
    expect(popHead0().error).toBe(ChainError.INDIRECT_NOT_NEGOTIATED);
  });

  test('indirect table outside guest memory', () => {
    const { drv, popHead0 } = setup();
    drv.writeDesc(0, 0x10, 16, INDIRECT, 0);
    expect(popHead0().error).toBe(ChainError.INDIRECT_UNMAPPED);
  });

  test('total length >= 2^32', () => {
    const { drv, buf, popHead0 } = setup();
    drv.writeDesc(0, buf, 16, NEXT, 1);
    drv.writeDesc(1, buf, 0xffffffff, WRITE, 0);
    expect(popHead0().error).toBe(ChainError.TOO_LONG);
  });

  test('buffer outside guest memory, and an address at or above 2^53', () => {
    const { drv, q, chain, popHead0 } = setup();
    drv.writeDesc(0, 0x5000, 16, 0, 0);
    expect(popHead0().error).toBe(ChainError.UNMAPPED);
    drv.writeDesc(1, 2 ** 60, 16, 0, 0);
    drv.publish([1]);
    expect(q.pop(chain)).toBe(true);
    expect(chain.error).toBe(ChainError.UNMAPPED);
  });

  test('a chain needing more segments than the list holds fails with too many segments', () => {
    const { mem, drv, q, buf } = setup();
    const small = new DescriptorChain(q.size, 2);
    drv.writeDesc(0, buf, 8, NEXT, 1);
    drv.writeDesc(1, buf + 8, 8, NEXT, 2);
    drv.writeDesc(2, buf + 16, 8, 0, 0);
    drv.publish([0]);
    expect(q.pop(small)).toBe(true);
    expect(small.error).toBe(ChainError.TOO_MANY_SEGMENTS);
    expect(mem.regions.length).toBe(2);
  });

  test('a failed chain is completed with len 0 and the queue keeps working', () => {
    const { drv, q, chain, buf, popHead0 } = setup();
    drv.writeDesc(0, buf, 0, 0, 0);
    const c = popHead0();
    expect(c.error).not.toBeNull();
    q.addUsed(c.head, 0);
    q.publishUsed();
    expect(drv.collectUsed()).toEqual([{ id: 0, len: 0 }]);
    const head = drv.addChain([{ len: 4, write: true }]);
    expect(q.pop(chain)).toBe(true);
    expect(chain.error).toBeNull();
    expect(chain.head).toBe(head);
  });

  test('reusing one DescriptorChain resets the previous chain state', () => {
    const { drv, q, chain } = setup();
    drv.addChain([{ len: 4, write: false }, { len: 4, write: true }], { indirect: true });
    drv.addChain([{ len: 9, write: true }]);
    expect(q.pop(chain)).toBe(true);
    expect(q.pop(chain)).toBe(true);
    expect([chain.readableBytes, chain.writableBytes, chain.readable.count, chain.writable.count, chain.indirect]).toEqual([0, 9, 0, 1, false]);
  });
});
