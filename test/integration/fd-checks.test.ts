/**
 * fdStat (native/mem.c) and the fd policy on top of it (src/vhost-user/fd-checks.ts) on real fds: memfds of every
 * size, eventfds, FIFOs, read-only and blocking fds, sockets.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import { describeFd, mappableProblem, vringFdProblem } from '../../src/vhost-user/fd-checks.js';
import { HostileFds } from '../helpers/hostile-fds.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);

describe.skipIf(!native.ok)('fd checks on real fds', () => {
  let dir: string;
  let fds: HostileFds;
  const own: number[] = [];

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-fdcheck-'));
    fds = new HostileFds(dir);
  });
  afterAll(() => {
    for (const fd of own) loadNative().close(fd);
    fds.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const mk = (fd: number): number => {
    own.push(fd);
    return fd;
  };

  test('fdStat reports type, size, access mode, O_NONBLOCK and the /proc link', () => {
    const n = loadNative();
    const m = n.fdStat(mk(n.memfdCreate('x', 8192)));
    expect(m.mode & 0o170000).toBe(0o100000);
    expect(m.size).toBe(8192);
    expect(m.flags & 3).toBe(2); // O_RDWR
    expect(m.link).toMatch(/^\/memfd:x/);
    const e = n.fdStat(mk(n.eventfd(0)));
    expect(e.link).toBe('anon_inode:[eventfd]');
    expect(e.flags & 0o4000).not.toBe(0); // O_NONBLOCK
    const f = n.fdStat(fds.make('full blocking fifo'));
    expect(f.mode & 0o170000).toBe(0o010000);
    expect(f.flags & 0o4000).toBe(0);
    expect(describeFd(f)).toBe('a FIFO or pipe');
    expect(describeFd(e)).toBe('an eventfd');
    expect(() => n.fdStat(1 << 20)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'fstat' }));
  });

  test('memory fds: a read-write memfd of at least offset + size bytes, nothing else', () => {
    const n = loadNative();
    const m = mk(n.memfdCreate('mem', 2 * 4096));
    expect(mappableProblem(n, m, 0, 8192)).toBeNull();
    expect(mappableProblem(n, m, 4096, 4096)).toBeNull();
    expect(mappableProblem(n, m, 4096, 4097)).toBe('mapping needs fd bytes [0x1000-0x2001) but the fd has 0x2000 bytes');
    expect(mappableProblem(n, fds.make('empty memfd'), 0, 1)).toContain('but the fd has 0x0 bytes');
    expect(mappableProblem(n, fds.readOnlyMemfd(8192), 0, 4096)).toBe('the fd is not open for reading and writing');
    expect(mappableProblem(n, fds.make('fifo with a byte'), 0, 1)).toBe('the fd is a FIFO or pipe, not a memfd or regular file');
    expect(mappableProblem(n, fds.make('socket'), 0, 1)).toBe('the fd is a socket, not a memfd or regular file');
    expect(mappableProblem(n, mk(n.eventfd(0)), 0, 1)).toBe('the fd is an eventfd, not a memfd or regular file');
  });

  test('vring fds: non-blocking eventfds, kick readable, call and err writable', () => {
    const n = loadNative();
    const e = mk(n.eventfd(0));
    for (const which of ['kick', 'call', 'err'] as const) expect(vringFdProblem(n, e, which)).toBeNull();
    expect(vringFdProblem(n, fds.make('fifo with a byte'), 'kick')).toBe('the kick fd is a FIFO or pipe, not an eventfd');
    expect(vringFdProblem(n, fds.make('read-only fd'), 'err')).toBe('the err fd is a FIFO or pipe, not an eventfd');
    expect(vringFdProblem(n, fds.make('short memfd'), 'call')).toBe('the call fd is a regular file, not an eventfd');
    expect(vringFdProblem(n, fds.make('socket'), 'kick')).toBe('the kick fd is a socket, not an eventfd');
  });
});
