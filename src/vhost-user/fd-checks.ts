/**
 * Checks on the fds a front-end sends, made before the fd is used (docs/security.md, "Front-end: fds, messages and
 * memory regions"). The front-end is hostile: an fd may be of any type, smaller than what it claims to back, opened
 * read-only, or blocking. Each check returns the reason for a refusal (null = fine); the handler decides the
 * failure scope, as for any other bad payload.
 *
 * - Memory (SET_MEM_TABLE, ADD_MEM_REG, SET_LOG_BASE, SET_INFLIGHT_FD): a regular file (memfd, tmpfs, hugetlbfs)
 *   opened read-write, at least mmap_offset + size bytes long. A mapping past the end of the file raises SIGBUS
 *   at the first access, which kills the process.
 * - Vring fds (SET_VRING_KICK/CALL/ERR): eventfds, non-blocking, kick readable, call and err writable. A pipe or
 *   FIFO read returns fewer than 8 bytes; a read-only fd fails every write; a blocking one can stop the event loop.
 */
import type { FdStat, NativeBinding } from '../native/types.js';
import { VhostError } from '../util/errors.js';
import { requestName, type Message, type RegionDescriptor } from './message.js';


/** Limits a session applies to what its front-end asks for; read at each request, so a reload takes effect. */
export interface FrontendLimits {
  readonly maxGuestMemory: number;
}

/** For sessions made without a configuration (tests): the `max guest memory` default, 1 TiB. */
export const DEFAULT_LIMITS: FrontendLimits = { maxGuestMemory: 2 ** 40 };

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const O_ACCMODE = 3;
const O_RDONLY = 0;
const O_WRONLY = 1;
const O_NONBLOCK = 0o4000;
const EVENTFD_LINK = 'anon_inode:[eventfd]';

const TYPE_NAMES: Record<number, string> = {
  0o010000: 'a FIFO or pipe',
  0o020000: 'a character device',
  0o040000: 'a directory',
  0o060000: 'a block device',
  0o100000: 'a regular file',
  0o120000: 'a symlink',
  0o140000: 'a socket',
};

/** "a FIFO or pipe", "an eventfd", ... for log lines. */
export function describeFd(st: FdStat): string {
  const t = TYPE_NAMES[st.mode & S_IFMT];
  if (t) return t;
  const m = /^anon_inode:\[?([^\]]*)\]?$/.exec(st.link);
  return m ? `an ${m[1]}` : 'an unknown kind of fd';
}

function stat(native: NativeBinding, fd: number): FdStat | string {
  try {
    return native.fdStat(fd);
  } catch (err) {
    return `fstat failed: ${(err as Error).message}`;
  }
}

/** Why fd cannot back a shared read-write mapping of bytes [offset, offset+size), or null. */
export function mappableProblem(native: NativeBinding, fd: number, offset: number, size: number): string | null {
  const st = stat(native, fd);
  if (typeof st === 'string') return st;
  if ((st.mode & S_IFMT) !== S_IFREG) return `the fd is ${describeFd(st)}, not a memfd or regular file`;
  if ((st.flags & O_ACCMODE) === O_RDONLY || (st.flags & O_ACCMODE) === O_WRONLY) return 'the fd is not open for reading and writing';
  if (st.size < offset + size) {
    return `mapping needs fd bytes [0x${offset.toString(16)}-0x${(offset + size).toString(16)}) but the fd has 0x${st.size.toString(16)} bytes`;
  }
  return null;
}

/** Why fd cannot be the kick (read), call or err (write) fd of a vring, or null. */
export function vringFdProblem(native: NativeBinding, fd: number, which: 'kick' | 'call' | 'err'): string | null {
  const st = stat(native, fd);
  if (typeof st === 'string') return st;
  if (st.link !== EVENTFD_LINK) return `the ${which} fd is ${describeFd(st)}, not an eventfd`;
  const acc = st.flags & O_ACCMODE;
  if (which === 'kick' ? acc === O_WRONLY : acc === O_RDONLY) return `the ${which} fd is not open for ${which === 'kick' ? 'reading' : 'writing'}`;
  if ((st.flags & O_NONBLOCK) === 0) return `the ${which} fd is blocking (no O_NONBLOCK)`;
  return null;
}

/** The request carries exactly `n` fds; checked before any state changes (DPDK validate_msg_fds). */
export function expectFds(msg: Message, n: number): void {
  if (msg.fds.length !== n) {
    throw new VhostError('ERR_VU_BAD_FDS', `${requestName(msg.request)}: ${msg.fds.length} fds attached, expected ${n}`);
  }
}

/**
 * SET_MEM_TABLE / ADD_MEM_REG: every region's fd can back it and the table stays within `budget` bytes (the
 * configured maximum minus the regions that stay). Throws ERR_VU_BAD_FDS (the connection is dropped).
 */
export function checkRegionFds(native: NativeBinding, request: number, descs: readonly RegionDescriptor[], fds: readonly number[], budget: number): void {
  let total = 0;
  for (const d of descs) total += d.size;
  if (total > budget) {
    throw new VhostError('ERR_VU_BAD_FDS', `${requestName(request)}: ${gib(total)} of guest memory exceeds the limit (${gib(budget)} left of max guest memory)`);
  }
  descs.forEach((d, i) => {
    const problem = mappableProblem(native, fds[i], d.mmapOffset, d.size);
    if (problem) throw new VhostError('ERR_VU_BAD_FDS', `${requestName(request)}: region ${i} (GPA 0x${d.gpa.toString(16)} size 0x${d.size.toString(16)}) refused: ${problem}`);
  });
}

/** SET_LOG_BASE / SET_INFLIGHT_FD: the fd can back [offset, offset+size); throws `code` with the reason. */
export function checkAreaFd(native: NativeBinding, request: number, fd: number, offset: number, size: number, code: 'ERR_VU_BAD_FDS' | 'ERR_VU_PROTOCOL'): void {
  const problem = mappableProblem(native, fd, offset, size);
  if (problem) throw new VhostError(code, `${requestName(request)}: area of 0x${size.toString(16)} bytes at offset 0x${offset.toString(16)} refused: ${problem}`);
}

/** SET_VRING_KICK/CALL/ERR: throws ERR_VU_BAD_FDS (the connection is dropped) unless fd is a fitting eventfd. */
export function checkVringFd(native: NativeBinding, request: number, index: number, fd: number | undefined, which: 'kick' | 'call' | 'err'): void {
  if (fd === undefined) return; // NOFD, or a count the caller has refused already
  const problem = vringFdProblem(native, fd, which);
  if (problem) throw new VhostError('ERR_VU_BAD_FDS', `${requestName(request)}: vring ${index} refused: ${problem}`);
}

function gib(n: number): string {
  return `${(n / 2 ** 30).toFixed(n % 2 ** 30 === 0 ? 0 : 3)} GiB`;
}
