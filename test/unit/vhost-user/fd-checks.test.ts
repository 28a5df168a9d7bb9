/**
 * The decisions of src/vhost-user/fd-checks.ts on fd metadata, without the addon: a stub fdStat returns exactly
 * the type, size, access mode and flags under test, so each rule (not only the "is it an eventfd" one) must hold.
 */
import { describe, expect, test } from 'vitest';
import type { FdStat, NativeBinding } from '../../../src/native/types.js';
import { mappableProblem, vringFdProblem } from '../../../src/vhost-user/fd-checks.js';

const O_RDONLY = 0;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_NONBLOCK = 0o4000;
const S_IFREG = 0o100000;
const S_IFIFO = 0o010000;
const EVENTFD = 'anon_inode:[eventfd]';

function stub(st: Partial<FdStat>): NativeBinding {
  const full: FdStat = { mode: 0, size: 0, flags: O_RDWR | O_NONBLOCK, link: EVENTFD, ...st };
  return { fdStat: () => full } as unknown as NativeBinding;
}

describe('vring fds', () => {
  test('a non-blocking read-write eventfd is fine for kick, call and err', () => {
    for (const which of ['kick', 'call', 'err'] as const) expect(vringFdProblem(stub({}), 3, which)).toBeNull();
  });
  test('a blocking eventfd is refused for every use', () => {
    for (const which of ['kick', 'call', 'err'] as const) expect(vringFdProblem(stub({ flags: O_RDWR }), 3, which)).toMatch(/blocking/);
  });
  test('a read-only eventfd cannot be a call or err fd; a write-only one cannot be a kick fd', () => {
    const ro = stub({ flags: O_RDONLY | O_NONBLOCK });
    const wo = stub({ flags: O_WRONLY | O_NONBLOCK });
    expect(vringFdProblem(ro, 3, 'kick')).toBeNull();
    expect(vringFdProblem(ro, 3, 'call')).toMatch(/not open for writing/);
    expect(vringFdProblem(ro, 3, 'err')).toMatch(/not open for writing/);
    expect(vringFdProblem(wo, 3, 'kick')).toMatch(/not open for reading/);
    expect(vringFdProblem(wo, 3, 'call')).toBeNull();
  });
  test('anything but an eventfd is refused by what it is', () => {
    expect(vringFdProblem(stub({ mode: S_IFIFO, link: 'pipe:[42]' }), 3, 'kick')).toMatch(/a FIFO or pipe, not an eventfd/);
    expect(vringFdProblem(stub({ link: 'anon_inode:[timerfd]' }), 3, 'call')).toMatch(/timerfd, not an eventfd/);
  });
});

describe('memory fds', () => {
  const reg = (over: Partial<FdStat>): NativeBinding => stub({ mode: S_IFREG | 0o600, size: 0x10000, flags: O_RDWR, link: '/memfd:guest (deleted)', ...over });
  test('a read-write regular file covering [offset, offset+size) is fine, one byte short is not', () => {
    expect(mappableProblem(reg({}), 3, 0x1000, 0xf000)).toBeNull();
    expect(mappableProblem(reg({}), 3, 0x1000, 0xf001)).toMatch(/fd has 0x10000 bytes/);
  });
  test('a read-only or write-only file is refused (the mapping is shared read-write)', () => {
    expect(mappableProblem(reg({ flags: O_RDONLY }), 3, 0, 0x1000)).toMatch(/not open for reading and writing/);
    expect(mappableProblem(reg({ flags: O_WRONLY }), 3, 0, 0x1000)).toMatch(/not open for reading and writing/);
  });
  test('a FIFO is refused whatever size it claims', () => {
    expect(mappableProblem(reg({ mode: S_IFIFO, size: 1 << 30 }), 3, 0, 0x1000)).toMatch(/a FIFO or pipe, not a memfd or regular file/);
  });
});
