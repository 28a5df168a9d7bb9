/**
 * ProbedRawGuard decides on a private copy of the bytes that reach the probed area: a buffer (guest memory)
 * rewritten after the check cannot put the qcow2 magic on the disk.
 */
import { describe, expect, test } from 'vitest';
import { Writable } from 'node:stream';
import type { Disk } from '../../../src/blk/disk.js';
import { ProbedRawGuard } from '../../../src/blk/probed-raw-guard.js';
import { ImageError } from '../../../src/blk/qcow2/errors.js';
import { createLogger } from '../../../src/util/log.js';

const MAGIC = [0x51, 0x46, 0x49, 0xfb];

/** A memory disk whose write takes what the buffers hold only after a tick (as pwritev on the thread pool does). */
class MemDisk implements Disk {
  readonly format = 'raw';
  readonly readOnly = false;
  readonly path = '/mem';
  readonly bytes = new Uint8Array(4096);
  get size(): number {
    return this.bytes.length;
  }
  async read(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    for (const b of bufs) {
      b.set(this.bytes.subarray(offset, offset + b.length));
      offset += b.length;
    }
  }
  async write(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    await new Promise((r) => setImmediate(r));
    for (const b of bufs) {
      this.bytes.set(b, offset);
      offset += b.length;
    }
  }
  async flush(): Promise<void> {}
  async discard(): Promise<void> {}
  async writeZeroes(): Promise<void> {}
  async close(): Promise<void> {}
}

function guard(): { g: ProbedRawGuard; mem: MemDisk; warnings: string[] } {
  const warnings: string[] = [];
  const sink = new Writable({
    write: (c: Buffer, _e, cb) => {
      for (const l of c.toString().split('\n')) if (l) warnings.push((JSON.parse(l) as { msg: string }).msg);
      cb();
    },
  });
  const mem = new MemDisk();
  return { g: new ProbedRawGuard(mem, createLogger({ level: 'warn', destination: sink })), mem, warnings };
}

describe('ProbedRawGuard', () => {
  test('a write of the qcow2 magic at offset 0 is refused, counted and logged; nothing is written', async () => {
    const { g, mem, warnings } = guard();
    const buf = new Uint8Array(512);
    buf.set(MAGIC);
    const err = await g.write(0, [buf]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageError);
    expect((err as ImageError).kind).toBe('Refused');
    expect(g.refusedFormatChanges).toBe(1);
    expect(warnings).toHaveLength(1);
    expect(mem.bytes.subarray(0, 4)).toEqual(new Uint8Array(4));
  });

  test('the magic split over buffers, or completing old bytes from an offset below 4, is refused too', async () => {
    const { g, mem } = guard();
    await expect(g.write(0, [new Uint8Array(MAGIC.slice(0, 1)), new Uint8Array([...MAGIC.slice(1), 0, 0])])).rejects.toThrow(/probed format/);
    mem.bytes.set(MAGIC.slice(0, 2));
    await expect(g.write(2, [new Uint8Array(MAGIC.slice(2))])).rejects.toThrow(/probed format/);
    await g.write(2, [new Uint8Array([1, 2])]);
    expect(mem.bytes.subarray(0, 4)).toEqual(new Uint8Array([0x51, 0x46, 1, 2]));
  });

  test('a buffer rewritten after the check does not reach the disk: the checked copy is written', async () => {
    const { g, mem } = guard();
    const buf = new Uint8Array(1024).fill(7);
    const p = g.write(0, [buf]);
    buf.set(MAGIC); // a second vCPU, after the check and before the write
    await p;
    expect([...mem.bytes.subarray(0, 4)]).toEqual([7, 7, 7, 7]);
    expect(mem.bytes.subarray(512, 1024).every((b) => b === 7)).toBe(true);
  });

  test('writes past the probed bytes pass through untouched', async () => {
    const { g, mem } = guard();
    await g.write(512, [new Uint8Array(MAGIC)]);
    expect([...mem.bytes.subarray(512, 516)]).toEqual(MAGIC);
    expect(g.refusedFormatChanges).toBe(0);
  });
});
