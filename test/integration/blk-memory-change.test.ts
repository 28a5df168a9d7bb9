/**
 * Memory changes while virtio-blk requests are in flight (docs/security.md, "Memory changes while I/O is in
 * flight"): SET_MEM_TABLE, REM_MEM_REG and SET_LOG_BASE arrive while 64 reads and writes hold views of guest
 * memory. The disk is gated: every request waits inside the disk until the test opens the gate, which makes the
 * thread-pool window (preadv/pwritev still running when the front-end remaps) as wide and as deterministic as
 * wanted. The back-end must answer the memory change only once those requests completed against the old mapping:
 * every status and every byte right, none lost, none completed after the reply.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, test } from 'vitest';
import { loadNative } from '../../src/native/binding.js';
import { BlkDevice } from '../../src/blk/blk-device.js';
import { RawDisk } from '../../src/blk/raw-disk.js';
import type { Disk } from '../../src/blk/disk.js';
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { createLogger } from '../../src/util/log.js';
import { FrontendRequest as R } from '../../src/vhost-user/message.js';
import { VIRTIO_BLK_S_OK } from '../../src/blk/virtio-blk-defs.js';
import { VHOST_LOG_PAGE } from '../../src/memory/dirty-log.js';
import { FakeBlkDriver, type BlkCompletion } from '../helpers/fake-blk-driver.js';
import type { PlacedBuf } from '../helpers/driver-queue.js';
import { u64 } from '../helpers/fake-frontend.js';
import { settle, waitFor, type LogLine } from '../helpers/backend-fixture.js';
import { pattern } from '../helpers/rng.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const IMAGE = 4 * MiB;
const REQ = 24 * KiB;
const IN_FLIGHT = 64;

/**
 * A Disk whose reads and writes wait for their gate to open before they touch the image (and the guest's buffers).
 * Requests wait on the gate current when they arrive; newGate() starts another one for later requests.
 */
class GatedDisk implements Disk {
  waiting = 0;
  private readonly gates: { p: Promise<void>; open: () => void }[] = [];
  constructor(private readonly inner: Disk) {
    this.newGate();
  }
  get size(): number { return this.inner.size; }
  get readOnly(): boolean { return this.inner.readOnly; }
  get path(): string { return this.inner.path; }
  get format(): string { return this.inner.format; }
  newGate(): void {
    let open!: () => void;
    const p = new Promise<void>((r) => (open = r));
    this.gates.push({ p, open });
  }
  /** Open gate i (default: all). */
  open(i?: number): void {
    for (const [k, g] of this.gates.entries()) if (i === undefined || k === i) g.open();
  }
  private async held(): Promise<void> {
    this.waiting++;
    await this.gates[this.gates.length - 1].p;
    this.waiting--;
  }
  async read(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    await this.held();
    return this.inner.read(offset, bufs);
  }
  async write(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    await this.held();
    return this.inner.write(offset, bufs);
  }
  flush(): Promise<void> { return this.inner.flush(); }
  discard(offset: number, len: number): Promise<void> { return this.inner.discard(offset, len); }
  writeZeroes(offset: number, len: number, unmap: boolean): Promise<void> { return this.inner.writeZeroes(offset, len, unmap); }
  close(): Promise<void> { return this.inner.close(); }
}

class Fixture {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-blkmem-'));
  readonly image = path.join(this.dir, 'disk.img');
  readonly logs: LogLine[] = [];
  readonly contents = pattern(IMAGE, 3);
  readonly native = loadNative();
  device!: BlkDevice;
  server!: VhostUserServer;
  disk!: GatedDisk;
  driver!: FakeBlkDriver;

  async open(): Promise<void> {
    fs.writeFileSync(this.image, this.contents);
    const sink = new Writable({
      write: (chunk: Buffer, _e, cb) => {
        for (const l of chunk.toString().split('\n')) if (l) this.logs.push(JSON.parse(l) as LogLine);
        cb();
      },
    });
    const log = createLogger({ level: 'debug', destination: sink });
    this.disk = new GatedDisk(await RawDisk.open(this.image, { readOnly: false }));
    this.device = new BlkDevice({ name: 'vm1.disk0', disk: this.disk, log });
    this.server = new VhostUserServer(this.native, path.join(this.dir, 'vm1.disk0.sock'), this.device, log);
    this.server.listen();
    // Two 1 MiB regions: the rings sit at the start of the first, the request buffers run into the second.
    this.driver = new FakeBlkDriver({ socket: this.server.socketPath, regionSize: MiB, queueSize: 512, inflight: false, poisonStatus: true });
    await this.driver.realize();
    await this.driver.start();
  }

  /** 32 reads and 32 writes (of distinct 24 KiB ranges), all held in the disk. */
  async submitHeld(): Promise<{ done: Promise<void>; completions: (BlkCompletion | null)[]; writes: Map<number, Uint8Array>; placed: PlacedBuf[] }> {
    const completions: (BlkCompletion | null)[] = new Array(IN_FLIGHT).fill(null);
    const writes = new Map<number, Uint8Array>();
    const all: Promise<void>[] = [];
    for (let i = 0; i < IN_FLIGHT; i++) {
      const sector = (i * REQ) / 512;
      let p: Promise<BlkCompletion>;
      if (i % 2 === 0) p = this.driver.read(sector, REQ, 0, { kick: false, split: 8 * KiB });
      else {
        const data = pattern(REQ, 100 + i);
        writes.set(i * REQ, data);
        p = this.driver.write(sector, data, 0, { kick: false, split: 8 * KiB });
      }
      all.push(p.then((c) => void (completions[i] = c)));
    }
    this.driver.kick(0);
    await waitFor(() => this.disk.waiting === IN_FLIGHT, '64 requests held in the disk');
    expect(this.device.counters.inflight).toBe(IN_FLIGHT);
    const placed = [...this.driver.queues[0].chains.values()].flatMap((c) => c.bufs);
    return { done: Promise.all(all).then(() => undefined), completions, writes, placed };
  }

  /**
   * Send a memory change, give the back-end the chance to act on it, then let the held I/O run. `meanwhile` runs
   * while the change is pending (requests submitted then must wait for the new memory).
   */
  async changeWhileHeld<T>(send: () => Promise<T>, completions: (BlkCompletion | null)[], meanwhile?: () => Promise<void>): Promise<{ reply: T; completedAtReply: number }> {
    let completedAtReply = -1;
    const reply = send().then((r) => {
      completedAtReply = completions.filter((c) => c !== null).length;
      return r;
    });
    // Either the back-end says it waits (fixed), or it answers at once (it applied the change under the I/O).
    await Promise.race([reply, waitFor(() => this.logs.some((l) => l.msg === 'memory change waits for in-flight requests'), 'the memory change to arrive')]);
    await meanwhile?.();
    this.disk.open();
    return { reply: await reply, completedAtReply };
  }

  /**
   * Two batches of 8 reads of 4 KiB on queue 0, each held in the disk at its own gate (0, then 1), with the ring
   * disabled and enabled again between them: the first batch drains on its own. Returns the first batch's heads.
   */
  async holdTwoBatches(): Promise<number[]> {
    const d = this.driver;
    const q = d.queues[0];
    const first: number[] = [];
    for (let i = 0; i < 8; i++) {
      void d.read(i * 8, 4096, 0, { kick: false });
      first.push([...q.chains.keys()].at(-1)!);
    }
    d.kick(0);
    await waitFor(() => this.disk.waiting === 8, 'the first batch held');
    d.fe.setVringEnable(0, false);
    this.disk.newGate();
    d.fe.setVringEnable(0, true);
    for (let i = 8; i < 16; i++) void d.read(i * 8, 4096, 0, { kick: false });
    d.kick(0);
    await waitFor(() => this.disk.waiting === 16, 'the second batch held');
    return first;
  }

  /** Every request OK; reads got the image bytes; writes reached the image. */
  check(completions: (BlkCompletion | null)[], writes: Map<number, Uint8Array>): void {
    const onDisk = fs.readFileSync(this.image);
    for (let i = 0; i < IN_FLIGHT; i++) {
      const c = completions[i]!;
      expect(c, `request ${i}`).not.toBeNull();
      expect(c.status, `request ${i} status`).toBe(VIRTIO_BLK_S_OK);
      const off = i * REQ;
      if (i % 2 === 0) {
        expect(c.usedLen).toBe(REQ + 1);
        expect(Buffer.from(c.data).equals(Buffer.from(this.contents.subarray(off, off + REQ))), `read ${i} data`).toBe(true);
      } else {
        expect(Buffer.from(onDisk.subarray(off, off + REQ)).equals(Buffer.from(writes.get(off)!)), `write ${i} on disk`).toBe(true);
      }
    }
    expect(this.device.counters.ioErrors).toBe(0);
    expect(this.driver.strayCompletions).toBe(0);
  }

  /** Some request buffers lie in the second region (REM_MEM_REG takes their memory away). */
  buffersInRegion(placed: PlacedBuf[], r: number): number {
    const reg = this.driver.ram.regions[r];
    return placed.filter((b) => b.gpa >= reg.gpa && b.gpa < reg.gpa + reg.size).length;
  }

  async close(): Promise<void> {
    this.disk?.open();
    this.driver?.close();
    this.server?.close();
    await this.device?.drainAll();
    await this.disk?.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

let fx: Fixture | null = null;
afterEach(async () => {
  await fx?.close();
  fx = null;
});

describe('virtio-blk: memory changes wait for in-flight I/O', () => {
  test('SET_MEM_TABLE with 64 reads and writes in flight: replied after they completed, every status and byte right', async () => {
    fx = new Fixture();
    await fx.open();
    const { done, completions, writes } = await fx.submitHeld();
    const d = fx.driver;
    let late: Promise<BlkCompletion> | null = null;
    const f = fx;
    const { reply, completedAtReply } = await fx.changeWhileHeld(() => d.fe.setMemTable(d.ram.regions, d.ram.fds()), completions, async () => {
      // Kicked while the change waits: not taken until the new table is in place.
      late = d.read(0, 4096);
      await settle();
      expect(f.disk.waiting).toBe(IN_FLIGHT);
    });
    expect(reply).toBe(0n);
    await done;
    fx.check(completions, writes);
    expect(completedAtReply).toBe(IN_FLIGHT);
    // The late request runs over the new table, and so does the queue after it.
    for (const p of [late!, d.read(8, 4096)]) {
      const c = await p;
      expect(c.status).toBe(VIRTIO_BLK_S_OK);
    }
    expect(Buffer.from((await late!).data).equals(Buffer.from(fx.contents.subarray(0, 4096)))).toBe(true);
  });

  test('REM_MEM_REG of the region holding request buffers, 64 in flight: the removal waits; ADD_MEM_REG brings it back', async () => {
    fx = new Fixture();
    await fx.open();
    const { done, completions, writes, placed } = await fx.submitHeld();
    expect(fx.buffersInRegion(placed, 1)).toBeGreaterThan(0);
    const d = fx.driver;
    const second = d.ram.regions[1];
    const { reply, completedAtReply } = await fx.changeWhileHeld(() => d.fe.remMemReg(second), completions);
    expect(reply).toBe(0n);
    await done;
    fx.check(completions, writes);
    expect(completedAtReply).toBe(IN_FLIGHT);
    expect(await d.fe.addMemReg(second, d.ram.fd)).toBe(0n);
    const after = await d.read(8, 4096);
    expect(after.status).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.from(after.data).equals(Buffer.from(fx.contents.subarray(4096, 8192)))).toBe(true);
  });

  test('connection dropped with 64 in flight: the I/O finishes into memory still mapped, unmapped only after', async () => {
    fx = new Fixture();
    await fx.open();
    const f = fx;
    const mappings = (): number => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('memfd:guest-ram')).length;
    const withBackend = mappings();
    const { placed, writes } = await f.submitHeld();
    f.driver.disconnect();
    await waitFor(() => !f.server.connected, 'the back-end to see the disconnect');
    expect(mappings()).toBe(withBackend); // held requests still use the back-end's mapping
    f.disk.open();
    await f.device.drainAll();
    await waitFor(() => mappings() < withBackend, 'the back-end to unmap guest memory');
    // Reads landed in guest memory (the driver maps the same memfd), writes reached the image; no status was written
    // for a front-end that is gone.
    const onDisk = fs.readFileSync(f.image);
    const dm = f.driver.queues[0].dm;
    for (let i = 0; i < IN_FLIGHT; i++) {
      const off = i * REQ;
      if (i % 2 === 1) expect(Buffer.from(onDisk.subarray(off, off + REQ)).equals(Buffer.from(writes.get(off)!)), `write ${i}`).toBe(true);
    }
    const readBufs = placed.filter((b) => b.write && b.len === 8 * KiB);
    expect(readBufs.length).toBe((IN_FLIGHT / 2) * 3);
    readBufs.forEach((b, k) => {
      const off = Math.floor(k / 3) * 2 * REQ + (k % 3) * 8 * KiB; // reads are requests 0, 2, 4, ... in 3 pieces
      expect(Buffer.from(dm.read(b.gpa, b.len)).equals(Buffer.from(f.contents.subarray(off, off + b.len))), `read piece ${k}`).toBe(true);
    });
    expect(f.device.counters.ioErrors).toBe(0);
  });

  test('connection dropped after a ring was stopped twice with requests in flight each time: memory stays until all completed', async () => {
    fx = new Fixture();
    await fx.open();
    const f = fx;
    const d = f.driver;
    const mappings = (): number => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('memfd:guest-ram')).length;
    const withBackend = mappings();
    const q = d.queues[0];
    const bufsOf = (heads: number[]): PlacedBuf[] => heads.flatMap((h) => q.chains.get(h)!.bufs.filter((b) => b.write && b.len > 1));
    const first = await f.holdTwoBatches();
    d.fe.setVringEnable(0, false); // the ring's drain is now the second batch's only
    await d.fe.getQueueNum();
    const firstBufs = bufsOf(first);
    d.disconnect();
    await waitFor(() => !f.server.connected, 'the back-end to see the disconnect');
    f.disk.open(1); // the second batch completes; the first is still using guest memory
    await waitFor(() => f.disk.waiting === 8 && f.device.counters.inflight === 8, 'the second batch done');
    await settle();
    expect(mappings()).toBe(withBackend);
    f.disk.open(0);
    await f.device.drainAll();
    await waitFor(() => mappings() < withBackend, 'the back-end to unmap guest memory');
    firstBufs.forEach((b, i) => {
      expect(Buffer.from(q.dm.read(b.gpa, b.len)).equals(Buffer.from(f.contents.subarray(i * 4096, i * 4096 + b.len))), `first batch read ${i}`).toBe(true);
    });
  });

  test('GET_VRING_BASE after a ring was stopped twice with requests in flight each time: replied after both batches', async () => {
    fx = new Fixture();
    await fx.open();
    const f = fx;
    const d = f.driver;
    await f.holdTwoBatches();
    let replied = false;
    const base = d.fe.getVringBase(0).then((b) => {
      replied = true;
      return b;
    });
    f.disk.open(1); // the second batch completes; the first still holds guest memory
    await waitFor(() => f.disk.waiting === 8 && f.device.counters.inflight === 8, 'the second batch done');
    await settle();
    expect(replied, 'GET_VRING_BASE answered while the first batch was in flight').toBe(false);
    f.disk.open(0);
    expect((await base).num).toBe(16);
    expect(f.device.counters.inflight).toBe(0);
  });

  test('SET_LOG_BASE with 64 requests in flight: replied after they completed, their pages marked in the log being replaced', async () => {
    fx = new Fixture();
    await fx.open();
    const d = fx.driver;
    const native = fx.native;
    const LOG = 4096; // 32768 pages of 4 KiB: more than the 2 MiB of guest memory
    const logBase = (fd: number): Promise<Uint8Array> => {
      const p = new Uint8Array(16);
      new DataView(p.buffer).setBigUint64(0, BigInt(LOG), true);
      return d.fe.call(R.SET_LOG_BASE, p, [fd]);
    };
    const fdA = native.memfdCreate('log-a', LOG);
    const fdB = native.memfdCreate('log-b', LOG);
    const bufA = native.mmapShared(fdA, LOG, 0, true);
    const bufB = native.mmapShared(fdB, LOG, 0, true);
    try {
      expect(u64(await logBase(fdA))).toBe(0n); // LOG_ALL was acked at start: logging is on from here
      const { done, completions, writes, placed } = await fx.submitHeld();
      const logA = new Uint8Array(bufA);
      logA.fill(0);
      const { reply, completedAtReply } = await fx.changeWhileHeld(() => logBase(fdB), completions);
      expect(u64(reply)).toBe(0n);
      await done;
      fx.check(completions, writes);
      expect(completedAtReply).toBe(IN_FLIGHT);
      // Every page a read wrote (data and status) is marked in log A, the one the front-end syncs after the switch.
      const isSet = (pg: number): boolean => (logA[pg >> 3] & (1 << (pg & 7))) !== 0;
      let checked = 0;
      for (const b of placed) {
        if (!b.write) continue;
        for (let pg = Math.floor(b.gpa / VHOST_LOG_PAGE); pg <= Math.floor((b.gpa + b.len - 1) / VHOST_LOG_PAGE); pg++) {
          expect(isSet(pg), `page ${pg}`).toBe(true);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(IN_FLIGHT);
    } finally {
      native.munmap(bufA);
      native.munmap(bufB);
      native.close(fdA);
      native.close(fdB);
    }
  });
});
