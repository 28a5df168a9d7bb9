/**
 * INFLIGHT_SHMFD through real sockets: the FakeBlkDriver plays QEMU 7.2's blk
 * reconnect. Requests are held in flight by a gated disk when the connection drops; their completions are dropped
 * with the session; the driver reconnects with SET_INFLIGHT_FD of the same memfd and SET_VRING_BASE = used.idx, and
 * the back-end resubmits exactly those requests: each completes once, with the right data.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { loadNative } from '../../src/native/binding.js';
import { BlkDevice } from '../../src/blk/blk-device.js';
import { RawDisk } from '../../src/blk/raw-disk.js';
import type { Disk } from '../../src/blk/disk.js';
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { createLogger } from '../../src/util/log.js';
import { hasBit } from '../../src/virtio/features.js';
import { VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD } from '../../src/vhost-user/features.js';
import { inflightQueueBytes } from '../../src/virtqueue/inflight.js';
import { VIRTIO_BLK_S_OK } from '../../src/blk/virtio-blk-defs.js';
import { FakeBlkDriver, type BlkCompletion } from '../helpers/fake-blk-driver.js';
import { waitFor } from '../helpers/backend-fixture.js';
import { pattern } from '../helpers/rng.js';

const MiB = 1024 * 1024;
const native = loadNative();

class Fixture {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-inflight-'));
  readonly image = path.join(this.dir, 'disk.img');
  device!: BlkDevice;
  server!: VhostUserServer;
  raw!: RawDisk;
  drivers: FakeBlkDriver[] = [];
  /** While true, reads and writes wait for release(). */
  hold = false;
  private gate: Promise<void> = Promise.resolve();
  private open_: () => void = () => {};

  async open(): Promise<void> {
    fs.writeFileSync(this.image, pattern(4 * MiB, 7));
    const log = createLogger({ level: 'silent' });
    this.raw = await RawDisk.open(this.image, { readOnly: false });
    const raw = this.raw;
    const wait = async (): Promise<void> => {
      if (this.hold) await this.gate;
    };
    const disk = Object.assign(Object.create(raw) as Disk, {
      write: async (o: number, b: readonly Uint8Array[]) => { await wait(); await raw.write(o, b); },
      read: async (o: number, b: readonly Uint8Array[]) => { await wait(); await raw.read(o, b); },
    });
    this.device = new BlkDevice({ name: 'vm1.disk0', disk, log });
    this.server = new VhostUserServer(native, path.join(this.dir, 'vm1.disk0.sock'), this.device, log);
    this.server.listen();
  }

  holdIo(): void {
    this.hold = true;
    this.gate = new Promise((r) => (this.open_ = r));
  }

  release(): void {
    this.hold = false;
    this.open_();
  }

  async driver(o: Partial<ConstructorParameters<typeof FakeBlkDriver>[0]> = {}): Promise<FakeBlkDriver> {
    const d = new FakeBlkDriver({ socket: this.server.socketPath, ...o });
    this.drivers.push(d);
    await d.realize();
    await d.start();
    return d;
  }

  async close(): Promise<void> {
    this.release();
    for (const d of this.drivers) d.close();
    this.server?.close();
    await this.device?.drainAll();
    await this.raw?.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

let fx: Fixture | null = null;
afterEach(async () => {
  await fx?.close();
  fx = null;
});

async function setup(): Promise<Fixture> {
  fx = new Fixture();
  await fx.open();
  return fx;
}

/** The driver's view of the inflight region: map its memfd. */
function mapRegion(d: FakeBlkDriver): DataView {
  return new DataView(native.mmapShared(d.inflightFd, d.inflightSize, 0, true));
}

describe('INFLIGHT_SHMFD (blk)', () => {
  test('offered to blk; GET_INFLIGHT_FD returns a new zeroed memfd of the right size each call', async () => {
    const f = await setup();
    const d = await f.driver({ numQueues: 2 });
    expect(hasBit(d.protocol, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)).toBe(true);
    expect(d.inflightSize).toBe(2 * inflightQueueBytes(128));
    const a = await d.getInflightFd(4, 256);
    const b = await d.getInflightFd(4, 256);
    expect(a.mmapSize).toBe(4 * inflightQueueBytes(256));
    expect([a.numQueues, a.queueSize]).toEqual([4, 256]);
    expect(a.fd).toBeGreaterThanOrEqual(0);
    expect(b.fd).toBeGreaterThanOrEqual(0);
    const va = new Uint8Array(native.mmapShared(a.fd, a.mmapSize, 0, true));
    va[100] = 1;
    const vb = new Uint8Array(native.mmapShared(b.fd, b.mmapSize, 0, true));
    expect(vb.every((x) => x === 0)).toBe(true); // a different region, zeroed
    native.munmap(va.buffer as ArrayBuffer);
    native.munmap(vb.buffer as ArrayBuffer);
    native.close(a.fd);
    native.close(b.fd);
    // The region in use was stamped at ring start (version 1, desc_num = queue size).
    const r = mapRegion(d);
    expect(r.getUint16(8, true)).toBe(1);
    expect(r.getUint16(10, true)).toBe(128);
    native.munmap(r.buffer as ArrayBuffer);
  });

  test('requests in flight when the connection drops are resubmitted after SET_INFLIGHT_FD (same memfd): each completes exactly once, data right', async () => {
    const f = await setup();
    const d = await f.driver();
    // Some history first, so used.idx and the region's used_idx are not 0.
    for (let i = 0; i < 5; i++) expect((await d.write(1000 + i * 8, pattern(4096, 500 + i))).status).toBe(VIRTIO_BLK_S_OK);
    f.holdIo();
    const writes = [0, 1, 2].map((i) => ({ sector: 16 * i, data: pattern(8192, 10 + i) }));
    const pending: Promise<BlkCompletion>[] = writes.map((w) => d.write(w.sector, w.data, 0, { kick: false }));
    const readP = d.read(1000, 4096, 0, { kick: false });
    d.kick(0);
    await waitFor(() => f.device.counters.inflight === 4, 'four requests in flight');
    const region = mapRegion(d);
    const inflightHeads = Array.from({ length: 128 }, (_, h) => h).filter((h) => region.getUint8(16 + 16 * h) === 1);
    expect(inflightHeads.length).toBe(4);
    expect(region.getUint16(14, true)).toBe(5); // used_idx follows used.idx
    // QEMU's side: the back-end is gone.
    d.disconnect();
    await waitFor(() => !f.server.connected, 'the disconnect');
    f.release();
    await f.device.drainAll(); // the old session's completions are dropped (detached)
    expect(d.queues[0].usedIdx()).toBe(5);
    expect(d.outstanding()).toBe(4);
    const writesBefore = f.device.counters.writes;
    await d.reconnect();
    const done = await Promise.all(pending);
    expect(done.every((c) => c.status === VIRTIO_BLK_S_OK)).toBe(true);
    const r = await readP;
    expect(r.status).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.compare(Buffer.from(r.data), Buffer.from(pattern(4096, 500)))).toBe(0);
    expect(f.device.counters.writes - writesBefore).toBe(3);
    expect(f.server.currentSession!.vrings[0].resubmitted).toBe(4);
    // Exactly once: no used entry without a pending request, 9 completions in all on the ring.
    expect(d.strayCompletions).toBe(0);
    expect(d.queues[0].usedIdx()).toBe(9);
    // The ring goes on from used.idx + resubmitted: new requests work and the data is right.
    for (const w of writes) {
      const back = await d.read(w.sector, w.data.length);
      expect(Buffer.compare(Buffer.from(back.data), Buffer.from(w.data))).toBe(0);
    }
    expect((await d.flush()).status).toBe(VIRTIO_BLK_S_OK);
    const file = fs.readFileSync(f.image);
    for (const w of writes) expect(Buffer.compare(file.subarray(w.sector * 512, w.sector * 512 + w.data.length), Buffer.from(w.data))).toBe(0);
    expect(d.strayCompletions).toBe(0);
    // Nothing left in flight in the region.
    expect(Array.from({ length: 128 }, (_, h) => region.getUint8(16 + 16 * h)).every((x) => x === 0)).toBe(true);
    native.munmap(region.buffer as ArrayBuffer);
  });

  test('a clean stop/start on the same connection resubmits nothing', async () => {
    const f = await setup();
    const d = await f.driver();
    for (let i = 0; i < 3; i++) await d.write(i * 8, pattern(512, i));
    const base = await d.stopQueue(0);
    expect(base).toBe(3);
    d.fe.setVringCall(0, d.callFds[0]);
    d.startVring(0, base);
    d.fe.setVringEnable(0, true);
    await d.fe.getQueueNum();
    expect((await d.read(0, 512)).status).toBe(VIRTIO_BLK_S_OK);
    expect(f.server.currentSession!.vrings[0].resubmitted).toBe(0);
    expect(d.strayCompletions).toBe(0);
  });

  test('version-0 region: nothing is resubmitted even with in-flight flags set, and it is stamped', async () => {
    const f = await setup();
    const d = await f.driver({
      onInflightFd: (fd, size) => {
        const v = new DataView(native.mmapShared(fd, size, 0, true));
        v.setUint8(16 + 16 * 3, 1); // head 3 "in flight", but version stays 0
        v.setBigUint64(16 + 16 * 3 + 8, 7n, true);
        native.munmap(v.buffer as ArrayBuffer);
      },
    });
    expect((await d.write(0, pattern(512, 1))).status).toBe(VIRTIO_BLK_S_OK);
    expect(f.server.currentSession!.vrings[0].resubmitted).toBe(0);
    expect(d.strayCompletions).toBe(0);
    const r = mapRegion(d);
    expect(r.getUint16(8, true)).toBe(1);
    expect(r.getUint8(16 + 16 * 3)).toBe(0);
    native.munmap(r.buffer as ArrayBuffer);
  });

  test('end to end: a region that never completed anything keeps its in-flight head 0 across a reconnect', async () => {
    const f = await setup();
    const d = await f.driver({ inflight: false });
    // History without inflight tracking: used.idx is 4.
    for (let i = 0; i < 4; i++) await d.write(i * 8, pattern(512, i));
    f.holdIo();
    const p = d.write(64, pattern(4096, 42));
    await waitFor(() => f.device.counters.inflight === 1, 'the write in flight');
    d.disconnect();
    await waitFor(() => !f.server.connected, 'the disconnect');
    f.release();
    await f.device.drainAll();
    // QEMU then hands the back-end a region in which the pending head is in flight but nothing was ever
    // completed: used_idx 0 and last_batch_head 0 (defaults) while used.idx is 4.
    const head = [...d.queues[0].chains.keys()][0];
    const fd = native.memfdCreate('inflight', inflightQueueBytes(128));
    const v = new DataView(native.mmapShared(fd, inflightQueueBytes(128), 0, true));
    v.setUint16(8, 1, true);
    v.setUint16(10, 128, true);
    v.setUint8(16 + 16 * head, 1);
    v.setBigUint64(16 + 16 * head + 8, 1n, true);
    native.munmap(v.buffer as ArrayBuffer);
    (d as unknown as { useInflight: boolean }).useInflight = true;
    d.inflightFd = fd;
    d.inflightSize = inflightQueueBytes(128);
    await d.reconnect();
    expect((await p).status).toBe(VIRTIO_BLK_S_OK);
    expect(f.server.currentSession!.vrings[0].resubmitted).toBe(1);
    expect(d.strayCompletions).toBe(0);
  });
});
