/**
 * The real race behind docs/security.md "Memory changes while I/O is in flight", without a gate: the vhostd binary
 * in a child process with UV_THREADPOOL_SIZE=1 (one thread runs every preadv/pwritev in turn, so most of 64 large
 * requests are still queued for it when the memory change arrives). SET_MEM_TABLE is sent as soon as the device has
 * taken all 64 chains (its avail_event says so); the disk is write-through, so the writes also wait for fdatasync. Every request must complete with status OK and the right bytes,
 * and the daemon must log no I/O error (EFAULT).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { packageRootFrom } from '../../src/util/package-root.js';
import { VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_S_OK } from '../../src/blk/virtio-blk-defs.js';
import { bit } from '../../src/virtio/features.js';
import { FakeBlkDriver, type BlkCompletion } from '../helpers/fake-blk-driver.js';
import { waitFor } from '../helpers/backend-fixture.js';
import { pattern } from '../helpers/rng.js';

const BIN = path.join(packageRootFrom(import.meta.url), 'build/src/bin/vhostd.js');
const MiB = 1024 * 1024;
const REQ = MiB;
const N = 64;

let proc: ChildProcess | null = null;
let driver: FakeBlkDriver | null = null;
let dir: string | null = null;
afterEach(async () => {
  driver?.close();
  driver = null;
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise((r) => proc!.on('close', r));
    proc.kill('SIGTERM');
    await exited;
  }
  proc = null;
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = null;
});

test('vhostd with UV_THREADPOOL_SIZE=1: SET_MEM_TABLE right after 64 x 1 MiB reads and writes were taken; all complete right, no EFAULT', async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-blkrace-'));
  const contents = pattern(N * REQ, 11);
  fs.writeFileSync(path.join(dir, 'disk.img'), contents);
  fs.writeFileSync(path.join(dir, 'vhostd.conf'), 'socket dir "sockets"\n\nvm "vm1" {\n    disk "disk.img" format raw\n}\n');
  const logs: Record<string, unknown>[] = [];
  let partial = '';
  proc = spawn(process.execPath, [BIN, '-f', path.join(dir, 'vhostd.conf')], {
    cwd: dir,
    env: { ...process.env, UV_THREADPOOL_SIZE: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n');
    partial = parts.pop()!;
    for (const l of parts) logs.push(JSON.parse(l) as Record<string, unknown>);
  });
  await waitFor(() => logs.some((l) => l.msg === 'vhostd started'), 'vhostd started', 20_000);

  // Without FLUSH and CONFIG_WCE the disk is write-through: every write adds an fdatasync on the one pool thread.
  const accept = (o: bigint): bigint => o & ~bit(VIRTIO_BLK_F_FLUSH) & ~bit(VIRTIO_BLK_F_CONFIG_WCE);
  const d = new FakeBlkDriver({ socket: path.join(dir, 'sockets', 'vm1.disk0.sock'), regionSize: 48 * MiB, queueSize: 512, inflight: false, poisonStatus: true, accept });
  driver = d;
  await d.realize();
  await d.start();
  const completions: (BlkCompletion | null)[] = new Array(N).fill(null);
  const writes = new Map<number, Uint8Array>();
  const all: Promise<void>[] = [];
  for (let i = 0; i < N; i++) {
    let p: Promise<BlkCompletion>;
    if (i % 2 === 0) p = d.read((i * REQ) / 512, REQ, 0, { kick: false, split: 256 * 1024 });
    else {
      const data = pattern(REQ, 200 + i);
      writes.set(i * REQ, data);
      p = d.write((i * REQ) / 512, data, 0, { kick: false, split: 256 * 1024 });
    }
    all.push(p.then((c) => void (completions[i] = c)));
  }
  const q = d.queues[0];
  d.kick(0);
  // EVENT_IDX: the device writes avail_event = its next avail index once it has taken what was there. Spin (this
  // process's event loop is not needed: the back-end is another process) so the change follows without delay.
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + 10_000;
  while (q.availEvent() !== q.availIdx) {
    if (Date.now() > deadline) throw new Error('the device did not take the 64 chains');
    Atomics.wait(nap, 0, 0, 0.05);
  }
  expect(await d.fe.setMemTable(d.ram.regions, d.ram.fds())).toBe(0n);
  await Promise.all(all);

  const onDisk = fs.readFileSync(path.join(dir, 'disk.img'));
  for (let i = 0; i < N; i++) {
    const c = completions[i]!;
    expect(c.status, `request ${i} status`).toBe(VIRTIO_BLK_S_OK);
    const off = i * REQ;
    if (i % 2 === 0) expect(Buffer.from(c.data).equals(Buffer.from(contents.subarray(off, off + REQ))), `read ${i}`).toBe(true);
    else expect(onDisk.subarray(off, off + REQ).equals(Buffer.from(writes.get(off)!)), `write ${i}`).toBe(true);
  }
  expect(d.strayCompletions).toBe(0);
  expect(logs.filter((l) => l.msg === 'virtio-blk I/O failed (IOERR to the guest)')).toEqual([]);
  // The queue goes on over the new table.
  expect((await d.read(0, 4096)).status).toBe(VIRTIO_BLK_S_OK);
});
