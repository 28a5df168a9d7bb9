/**
 * The C addon against its contract (src/native/types.ts): real syscalls on unix sockets, memfds and eventfds.
 * Skipped only when the addon cannot load and CI !== 'true'; in CI a missing addon fails.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import { closeAll } from '../../src/native/fd.js';
import { MAX_FDS_PER_MSG, POLL_READABLE, type NativeBinding } from '../../src/native/types.js';

const available = nativeAvailable();
const skip = !available.ok && process.env.CI !== 'true';
if (skip) console.warn(`skipping native addon tests: ${available.reason}`);

const GiB4 = 4 * 1024 * 1024 * 1024;
const addonPath = join(process.cwd(), 'native', 'build', 'Release', 'vhost_native.node');

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function expectSysError(fn: () => unknown, code: string, syscall: string, errno?: number): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(Error);
  const e = caught as NodeJS.ErrnoException;
  expect(e.code).toBe(code);
  expect(e.syscall).toBe(syscall);
  if (errno !== undefined) expect(e.errno).toBe(errno);
  expect(e.message).toContain(`${syscall} failed: ${code}`);
}

describe.skipIf(skip)('native addon', () => {
  let n: NativeBinding;
  let dir: string;
  let seq = 0;

  beforeAll(() => {
    n = loadNative();
    dir = mkdtempSync(join(os.tmpdir(), 'vhostd-native-'));
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A connected pair [client, server] through listenUnix/connectUnix/acceptUnix. */
  function pair(): [number, number] {
    const path = join(dir, `s${seq++}.sock`);
    const lfd = n.listenUnix(path, 4);
    try {
      expect(n.acceptUnix(lfd)).toBe(-1); // nothing pending: EAGAIN
      const client = n.connectUnix(path);
      const server = n.acceptUnix(lfd);
      expect(server).toBeGreaterThanOrEqual(0);
      return [client, server];
    } finally {
      n.close(lfd);
    }
  }

  test('loadNative is cached and exports the whole contract', () => {
    expect(loadNative()).toBe(n);
    expect(available.ok).toBe(true);
    expect(MAX_FDS_PER_MSG).toBe(8);
  });

  test('socket round trip, EAGAIN and EOF', () => {
    const [a, b] = pair();
    const buf = new Uint8Array(64);
    const fdsOut = new Int32Array(1 + MAX_FDS_PER_MSG);
    expect(n.recvMsg(b, buf, 0, buf.length, fdsOut)).toBe(-1);
    const msg = new TextEncoder().encode('xxhello');
    expect(n.sendMsg(a, msg, 2, 5, [])).toBe(5);
    fdsOut[0] = 99;
    expect(n.recvMsg(b, buf, 10, 20, fdsOut)).toBe(5);
    expect(fdsOut[0]).toBe(0);
    expect(new TextDecoder().decode(buf.subarray(10, 15))).toBe('hello');
    // and the other way, with an Int32Array as fds
    expect(n.sendMsg(b, msg, 0, 7, new Int32Array(0))).toBe(7);
    expect(n.recvMsg(a, buf, 0, 64, fdsOut)).toBe(7);
    n.close(a);
    expect(n.recvMsg(b, buf, 0, 64, fdsOut)).toBe(0);
    n.close(b);
  });

  test('range and type checks', () => {
    const [a, b] = pair();
    const buf = new Uint8Array(8);
    expect(() => n.sendMsg(a, buf, 4, 5, [])).toThrow(RangeError);
    expect(() => n.recvMsg(b, buf, 0, 8, new Int32Array(8))).toThrow(RangeError);
    expect(() => n.recvMsg(b, buf, 0, 8, new Uint32Array(9) as unknown as Int32Array)).toThrow(TypeError);
    expect(() => n.sendMsg(a, new Uint16Array(4) as unknown as Uint8Array, 0, 1, [])).toThrow(TypeError);
    expect(() => n.close('3' as unknown as number)).toThrow(TypeError);
    expect(() => (n.eventfd as unknown as () => number)()).toThrow(TypeError);
    expect(() => n.sendMsg(a, buf, 0, 1, new Array<number>(17).fill(a))).toThrow(RangeError);
    closeAll(n, [a, b]);
  });

  test('one fd: the received fd is the same eventfd', () => {
    const [a, b] = pair();
    const efd = n.eventfd(0);
    const fdsOut = new Int32Array(1 + MAX_FDS_PER_MSG);
    expect(n.sendMsg(a, new Uint8Array([1]), 0, 1, [efd])).toBe(1);
    expect(n.recvMsg(b, new Uint8Array(4), 0, 4, fdsOut)).toBe(1);
    expect(fdsOut[0]).toBe(1);
    const got = fdsOut[1];
    expect(got).not.toBe(efd);
    n.eventfdWrite(efd, 5);
    expect(n.eventfdRead(got)).toBe(5);
    closeAll(n, [a, b, efd, got]);
  });

  test('eight fds: each received memfd shows the sender content', () => {
    const [a, b] = pair();
    const sent: number[] = [];
    for (let i = 0; i < 8; i++) {
      const fd = n.memfdCreate(`t${i}`, 4096 * (i + 1));
      const ab = n.mmapShared(fd, 16, 0, true);
      new Uint8Array(ab)[0] = 0xa0 + i;
      n.munmap(ab);
      sent.push(fd);
    }
    const fdsOut = new Int32Array(1 + MAX_FDS_PER_MSG);
    expect(n.sendMsg(a, new Uint8Array([7, 7]), 0, 2, sent)).toBe(2);
    expect(n.recvMsg(b, new Uint8Array(2), 0, 2, fdsOut)).toBe(2);
    expect(fdsOut[0]).toBe(8);
    for (let i = 0; i < 8; i++) {
      const fd = fdsOut[1 + i];
      expect(n.fdSize(fd)).toBe(4096 * (i + 1));
      const ab = n.mmapShared(fd, 16, 0, false);
      expect(new Uint8Array(ab)[0]).toBe(0xa0 + i);
      n.munmap(ab);
    }
    closeAll(n, fdsOut, 1, 1 + fdsOut[0]);
    closeAll(n, [...sent, a, b]);
  });

  test('nine fds: ECTRUNC on receive, arrived fds closed, no leak', () => {
    const [a, b] = pair();
    const sent = Array.from({ length: 9 }, () => n.eventfd(0));
    const before = openFds();
    const fdsOut = new Int32Array(1 + MAX_FDS_PER_MSG);
    expect(n.sendMsg(a, new Uint8Array([1]), 0, 1, sent)).toBe(1);
    let caught: unknown;
    try {
      n.recvMsg(b, new Uint8Array(1), 0, 1, fdsOut);
    } catch (err) {
      caught = err;
    }
    expect((caught as NodeJS.ErrnoException).code).toBe('ECTRUNC');
    expect((caught as NodeJS.ErrnoException).syscall).toBe('recvmsg');
    expect(fdsOut[0]).toBe(0);
    expect(openFds()).toBe(before);
    closeAll(n, [...sent, a, b]);
  });

  test('mmapShared: a second mapping at a non-page-aligned offset sees the first one', () => {
    const fd = n.memfdCreate('map', 3 * 4096);
    expect(n.fdSize(fd)).toBe(3 * 4096);
    const whole = n.mmapShared(fd, 3 * 4096, 0, true);
    expect(whole.byteLength).toBe(3 * 4096);
    const w = new Uint8Array(whole);
    for (let i = 0; i < w.length; i++) w[i] = i % 251;
    const part = n.mmapShared(fd, 300, 4096 + 100, false);
    expect(part.byteLength).toBe(300);
    const p = new Uint8Array(part);
    for (let i = 0; i < 300; i++) expect(p[i]).toBe((4096 + 100 + i) % 251);
    w[4096 + 100] = 77; // shared, not a copy
    expect(p[0]).toBe(77);
    n.munmap(part);
    n.munmap(whole);
    n.close(fd);
  });

  test('munmap detaches every view, is idempotent and rejects foreign buffers', () => {
    const fd = n.memfdCreate('unmap', 4096);
    const ab = n.mmapShared(fd, 4096, 0, true);
    const view = new Uint8Array(ab);
    const u32 = new Uint32Array(ab, 8, 4);
    view[0] = 1;
    n.munmap(ab);
    expect(ab.byteLength).toBe(0);
    expect(view.length).toBe(0);
    expect(u32.length).toBe(0);
    expect(view[0]).toBeUndefined();
    n.munmap(ab);
    expect(() => n.munmap(new ArrayBuffer(8))).toThrow(TypeError);
    n.close(fd);
  });

  test('mmapShared size limits: 0 and > 4 GiB are RangeErrors, exactly 4 GiB maps', () => {
    const fd = n.memfdCreate('big', GiB4);
    expect(() => n.mmapShared(fd, 0, 0, true)).toThrow(RangeError);
    expect(() => n.mmapShared(fd, GiB4 + 1, 0, true)).toThrow(RangeError);
    expect(() => n.mmapShared(fd, 4096, -4096, true)).toThrow(RangeError);
    const ab = n.mmapShared(fd, GiB4, 0, true);
    expect(ab.byteLength).toBe(GiB4);
    const v = new Uint8Array(ab, GiB4 - 4096);
    v[4095] = 9;
    expect(v[4095]).toBe(9);
    n.munmap(ab);
    n.close(fd);
    expectSysError(() => n.mmapShared(fd, 4096, 0, true), 'EBADF', 'mmap', 9);
  });

  test('eventfd counter: EAGAIN at zero, writes add up', () => {
    const efd = n.eventfd(2);
    expect(n.eventfdRead(efd)).toBe(2);
    expect(n.eventfdRead(efd)).toBe(-1);
    n.eventfdWrite(efd, 3);
    n.eventfdWrite(efd, 4);
    expect(n.eventfdRead(efd)).toBe(7);
    expect(n.eventfdRead(efd)).toBe(-1);
    n.close(efd);
  });

  test('watch fires on an eventfd write; stop, start and close work', async () => {
    const efd = n.eventfd(0);
    const seen: Array<[number, number]> = [];
    const w = n.watch(efd, POLL_READABLE, (status, events) => {
      seen.push([status, events]);
      n.eventfdRead(efd);
    });
    await sleep(20);
    expect(seen).toEqual([]);
    n.eventfdWrite(efd, 1);
    await sleep(50);
    expect(seen).toEqual([[0, POLL_READABLE]]);
    w.stop();
    n.eventfdWrite(efd, 1);
    await sleep(50);
    expect(seen.length).toBe(1);
    w.start(POLL_READABLE); // counter still set: fires at once
    await sleep(50);
    expect(seen.length).toBe(2);
    w.close();
    w.close();
    n.eventfdWrite(efd, 1);
    await sleep(50);
    expect(seen.length).toBe(2);
    expect(() => w.start(POLL_READABLE)).toThrow(/closed/);
    w.stop(); // harmless after close
    n.close(efd);
  });

  test('watch: close() from inside the callback', async () => {
    const efd = n.eventfd(1); // readable at once, never drained
    let calls = 0;
    const w = n.watch(efd, POLL_READABLE, () => {
      calls++;
      w.close();
    });
    await sleep(50);
    expect(calls).toBe(1);
    n.close(efd);
  });

  test('watch: errors from the callback reach uncaughtException', async () => {
    const efd = n.eventfd(1);
    const errors: unknown[] = [];
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', (err) => errors.push(err));
    try {
      const w = n.watch(efd, POLL_READABLE, () => {
        w.close();
        throw new Error('boom');
      });
      await sleep(50);
    } finally {
      process.removeAllListeners('uncaughtException');
      for (const l of listeners) process.on('uncaughtException', l);
    }
    expect(errors.map((e) => (e as Error).message)).toEqual(['boom']);
    n.close(efd);
  });

  test('watch: bad fd, bad events and bad callback', () => {
    expectSysError(() => n.watch(-1, POLL_READABLE, () => {}), 'EBADF', 'uv_poll_init');
    const efd = n.eventfd(0);
    expect(() => n.watch(efd, 64, () => {})).toThrow(RangeError);
    expect(() => n.watch(efd, POLL_READABLE, 1 as unknown as () => void)).toThrow(TypeError);
    const w = n.watch(efd, 0, () => {});
    const { close } = w;
    expect(() => close()).toThrow(TypeError); // method needs its receiver
    w.close();
    n.close(efd);
  });

  test('a closed or stopped watcher does not keep the process alive', () => {
    const script = `
      const n = require(${JSON.stringify(addonPath)});
      const a = n.eventfd(0), b = n.eventfd(0);
      const w1 = n.watch(a, 1, () => {});
      w1.close();
      const w2 = n.watch(b, 1, () => {});
      w2.stop();
      setTimeout(() => console.log('done'), 10);
    `;
    const r = spawnSync(process.execPath, ['-e', script], { timeout: 60_000, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('done');
    expect(r.status).toBe(0);
  });

  test('loads in a worker thread; an open watcher is cleaned up when the worker ends', async () => {
    const code = `
      const { parentPort } = require('node:worker_threads');
      const n = require(${JSON.stringify(addonPath)});
      const efd = n.eventfd(0);
      n.watch(efd, 1, () => {});
      parentPort.postMessage(efd);
    `;
    const worker = new Worker(code, { eval: true });
    const efd = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    expect(efd).toBeGreaterThan(2);
    expect(await worker.terminate()).toBe(1);
    n.close(efd);
  });

  test('errors carry code, errno and syscall', () => {
    expectSysError(() => n.close(-1), 'EBADF', 'close', 9);
    const efd = n.eventfd(0);
    n.close(efd);
    expectSysError(() => n.close(efd), 'EBADF', 'close', 9);
    expectSysError(() => n.eventfdRead(efd), 'EBADF', 'read', 9);
    expectSysError(() => n.recvMsg(efd, new Uint8Array(1), 0, 1, new Int32Array(9)), 'EBADF', 'recvmsg', 9);
    expectSysError(() => n.connectUnix(join(dir, 'missing.sock')), 'ENOENT', 'connect', 2);
    const path = join(dir, `dup${seq++}.sock`);
    const lfd = n.listenUnix(path, 1);
    expectSysError(() => n.listenUnix(path, 1), 'EADDRINUSE', 'bind');
    n.close(lfd);
    expectSysError(() => n.fdSize(efd), 'EBADF', 'fstat', 9);
    expect(() => n.connectUnix('x'.repeat(200))).toThrow(RangeError);
  });

  test('fence() is callable', () => {
    expect(n.fence()).toBeUndefined();
  });

  test('no fd leaks across a full cycle', () => {
    const before = openFds();
    const [a, b] = pair();
    const m = n.memfdCreate('leak', 4096);
    const e = n.eventfd(0);
    n.sendMsg(a, new Uint8Array([0]), 0, 1, [m, e]);
    const fdsOut = new Int32Array(9);
    n.recvMsg(b, new Uint8Array(1), 0, 1, fdsOut);
    closeAll(n, fdsOut, 1, 1 + fdsOut[0]);
    closeAll(n, [a, b, m, e]);
    expect(openFds()).toBe(before);
  });
});
