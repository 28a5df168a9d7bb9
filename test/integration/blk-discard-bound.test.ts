/**
 * The work of one DISCARD / WRITE_ZEROES is bounded per event-loop turn (docs/security.md, "Memory changes while
 * I/O is in flight" and the discard bound below it): the advertised maximum, 16 segments of 2 GiB, is cut into
 * BLK_BULK_CHUNK pieces with a turn of the event loop before each, so a guest cannot stall every other device for
 * the whole request; requests beyond the advertised limits get IOERR / UNSUPP and never reach the disk.
 * Turns are counted with a setImmediate ticker (deterministic), not timed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, test } from 'vitest';
import { loadNative } from '../../src/native/binding.js';
import {
  BLK_BULK_CHUNK,
  BLK_MAX_DISCARD_SECTORS,
  BLK_MAX_DISCARD_SEG,
  BLK_MAX_WRITE_ZEROES_SECTORS,
  BLK_MAX_WRITE_ZEROES_SEG,
  BlkDevice,
} from '../../src/blk/blk-device.js';
import { RawDisk } from '../../src/blk/raw-disk.js';
import { Qcow2Image } from '../../src/blk/qcow2/image.js';
import { createQcow2 } from '../../src/blk/qcow2/create.js';
import type { Disk } from '../../src/blk/disk.js';
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { createLogger } from '../../src/util/log.js';
import {
  BlkConfig,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from '../../src/blk/virtio-blk-defs.js';
import { FakeBlkDriver } from '../helpers/fake-blk-driver.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const DISK = 32 * GiB;

/** Event-loop turns: one setImmediate callback per loop iteration while running. */
class TurnCounter {
  turn = 0;
  private on = true;
  constructor() {
    const tick = (): void => {
      this.turn++;
      if (this.on) setImmediate(tick);
    };
    setImmediate(tick);
  }
  stop(): void {
    this.on = false;
  }
}

interface BulkCall {
  op: 'discard' | 'write-zeroes';
  offset: number;
  len: number;
  turn: number;
}

/** Records every discard / write-zeroes call the device makes, with the turn it was made in. */
class RecordingDisk implements Disk {
  readonly calls: BulkCall[] = [];
  turns: TurnCounter | null = null;
  constructor(private readonly inner: Disk) {}
  get size(): number { return this.inner.size; }
  get readOnly(): boolean { return this.inner.readOnly; }
  get path(): string { return this.inner.path; }
  get format(): string { return this.inner.format; }
  read(offset: number, bufs: readonly Uint8Array[]): Promise<void> { return this.inner.read(offset, bufs); }
  write(offset: number, bufs: readonly Uint8Array[]): Promise<void> { return this.inner.write(offset, bufs); }
  flush(): Promise<void> { return this.inner.flush(); }
  discard(offset: number, len: number): Promise<void> {
    this.calls.push({ op: 'discard', offset, len, turn: this.turns?.turn ?? -1 });
    return this.inner.discard(offset, len);
  }
  writeZeroes(offset: number, len: number, unmap: boolean): Promise<void> {
    this.calls.push({ op: 'write-zeroes', offset, len, turn: this.turns?.turn ?? -1 });
    return this.inner.writeZeroes(offset, len, unmap);
  }
  close(): Promise<void> { return this.inner.close(); }
}

class Fixture {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-blkbulk-'));
  disk!: RecordingDisk;
  device!: BlkDevice;
  server!: VhostUserServer;
  driver!: FakeBlkDriver;

  async open(format: 'raw' | 'qcow2'): Promise<void> {
    const image = path.join(this.dir, `disk.${format}`);
    const log = createLogger({ level: 'warn', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
    let inner: Disk;
    if (format === 'raw') {
      fs.writeFileSync(image, '');
      fs.truncateSync(image, DISK); // sparse
      inner = await RawDisk.open(image, { readOnly: false });
    } else {
      await createQcow2(image, { size: DISK });
      inner = await Qcow2Image.open(image, { readOnly: false });
    }
    this.disk = new RecordingDisk(inner);
    this.device = new BlkDevice({ name: 'vm1.disk0', disk: this.disk, log });
    this.server = new VhostUserServer(loadNative(), path.join(this.dir, 'vm1.disk0.sock'), this.device, log);
    this.server.listen();
    this.driver = new FakeBlkDriver({ socket: this.server.socketPath, inflight: false, poisonStatus: true });
    await this.driver.realize();
    await this.driver.start();
  }

  async close(): Promise<void> {
    this.driver?.close();
    this.server?.close();
    await this.device?.drainAll();
    await this.disk?.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** 16 segments of 2 GiB covering the whole 32 GiB disk: the largest request the device advertises. */
const widest = (count = BLK_MAX_DISCARD_SECTORS, n = BLK_MAX_DISCARD_SEG, flags = 0): { sector: number; count: number; flags: number }[] =>
  Array.from({ length: n }, (_, i) => ({ sector: i * count, count, flags }));

/** Every call at most one chunk, inside one chunk-aligned window, each in a later turn than the one before. */
function expectBounded(calls: BulkCall[], total: number): void {
  expect(calls.reduce((s, c) => s + c.len, 0)).toBe(total);
  for (const c of calls) {
    expect(c.len).toBeLessThanOrEqual(BLK_BULK_CHUNK);
    expect(Math.floor(c.offset / BLK_BULK_CHUNK)).toBe(Math.floor((c.offset + c.len - 1) / BLK_BULK_CHUNK));
  }
  for (let i = 1; i < calls.length; i++) expect(calls[i].turn, `call ${i}`).toBeGreaterThan(calls[i - 1].turn);
}

let fx: Fixture | null = null;
afterEach(async () => {
  await fx?.close();
  fx = null;
});

describe('virtio-blk: discard and write-zeroes work is bounded per event-loop turn', () => {
  test('config space advertises the limits the device enforces', async () => {
    fx = new Fixture();
    await fx.open('raw');
    const cfg = new DataView(fx.driver.config.buffer, fx.driver.config.byteOffset);
    expect(cfg.getUint32(BlkConfig.MAX_DISCARD_SECTORS, true)).toBe(BLK_MAX_DISCARD_SECTORS);
    expect(cfg.getUint32(BlkConfig.MAX_DISCARD_SEG, true)).toBe(BLK_MAX_DISCARD_SEG);
    expect(cfg.getUint32(BlkConfig.MAX_WRITE_ZEROES_SECTORS, true)).toBe(BLK_MAX_WRITE_ZEROES_SECTORS);
    expect(cfg.getUint32(BlkConfig.MAX_WRITE_ZEROES_SEG, true)).toBe(BLK_MAX_WRITE_ZEROES_SEG);
  });

  test('raw: a 16 x 2 GiB DISCARD runs as 8 MiB chunks, one per turn', async () => {
    fx = new Fixture();
    await fx.open('raw');
    const turns = new TurnCounter();
    fx.disk.turns = turns;
    const c = await fx.driver.discard(widest());
    turns.stop();
    expect(c.status).toBe(VIRTIO_BLK_S_OK);
    expect(fx.disk.calls.length).toBe(DISK / BLK_BULK_CHUNK);
    expectBounded(fx.disk.calls, DISK);
  });

  test('qcow2: a 16 x 2 GiB DISCARD yields between chunks and still deallocates every cluster, across chunk edges', async () => {
    fx = new Fixture();
    await fx.open('qcow2');
    const d = fx.driver;
    const data = new Uint8Array(128 * 1024).fill(0x5a);
    // Clusters on both sides of chunk and segment boundaries, and at the end of the disk.
    const at = [0, BLK_BULK_CHUNK - 64 * 1024, 2 * GiB - 64 * 1024, 2 * GiB + BLK_BULK_CHUNK, DISK - data.length];
    for (const off of at) expect((await d.write(off / 512, data)).status).toBe(VIRTIO_BLK_S_OK);
    const turns = new TurnCounter();
    fx.disk.turns = turns;
    const c = await d.discard(widest());
    turns.stop();
    expect(c.status).toBe(VIRTIO_BLK_S_OK);
    expectBounded(fx.disk.calls, DISK);
    for (const off of at) {
      const r = await d.read(off / 512, data.length);
      expect(r.status).toBe(VIRTIO_BLK_S_OK);
      expect(r.data.every((x) => x === 0), `data at ${off} discarded`).toBe(true);
    }
  });

  test('qcow2: a 16 x 32 MiB WRITE_ZEROES (unmap) is chunked the same way and reads back zeroes', async () => {
    fx = new Fixture();
    await fx.open('qcow2');
    const d = fx.driver;
    const data = new Uint8Array(64 * 1024).fill(0xa5);
    const segs = widest(BLK_MAX_WRITE_ZEROES_SECTORS, BLK_MAX_WRITE_ZEROES_SEG, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
    const last = (BLK_MAX_WRITE_ZEROES_SEG * BLK_MAX_WRITE_ZEROES_SECTORS * 512) - data.length;
    for (const off of [0, BLK_BULK_CHUNK, last]) expect((await d.write(off / 512, data)).status).toBe(VIRTIO_BLK_S_OK);
    const turns = new TurnCounter();
    fx.disk.turns = turns;
    expect((await d.writeZeroes(segs)).status).toBe(VIRTIO_BLK_S_OK);
    turns.stop();
    expectBounded(fx.disk.calls, BLK_MAX_WRITE_ZEROES_SEG * BLK_MAX_WRITE_ZEROES_SECTORS * 512);
    for (const off of [0, BLK_BULK_CHUNK, last]) expect((await d.read(off / 512, data.length)).data.every((x) => x === 0)).toBe(true);
  });

  test('requests beyond the advertised limits: IOERR (too many segments, segment too long), UNSUPP (flags); no disk work', async () => {
    fx = new Fixture();
    await fx.open('raw');
    const d = fx.driver;
    expect((await d.discard(widest(BLK_MAX_DISCARD_SECTORS / 2, BLK_MAX_DISCARD_SEG + 1))).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await d.discard([{ sector: 0, count: BLK_MAX_DISCARD_SECTORS + 1 }])).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await d.writeZeroes(widest(1, BLK_MAX_WRITE_ZEROES_SEG + 1))).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await d.writeZeroes([{ sector: 0, count: BLK_MAX_WRITE_ZEROES_SECTORS + 1 }])).status).toBe(VIRTIO_BLK_S_IOERR);
    expect((await d.discard([{ sector: 0, count: 8, flags: VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP }])).status).toBe(VIRTIO_BLK_S_UNSUPP);
    expect((await d.writeZeroes([{ sector: 0, count: 8, flags: 2 }])).status).toBe(VIRTIO_BLK_S_UNSUPP);
    // Past the end of the disk.
    expect((await d.discard([{ sector: DISK / 512 - 4, count: 8 }])).status).toBe(VIRTIO_BLK_S_IOERR);
    expect(fx.disk.calls).toEqual([]);
    expect(fx.device.counters.badRequest).toBe(5);
    expect(fx.device.counters.unsupported).toBe(2);
  });
});
