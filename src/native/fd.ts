/** Fd helpers for failure and teardown paths, where a close error must not hide the original one. */
import type { NativeBinding } from './types.js';

/** close(fd), ignoring errors (EBADF included) and negative fds. */
export function closeQuietly(native: NativeBinding, fd: number): void {
  if (fd < 0) return;
  try {
    native.close(fd);
  } catch {
    /* already closed, or the kernel released it anyway */
  }
}

/** closeQuietly() on fds[from..to) (default: all of them). */
export function closeAll(native: NativeBinding, fds: ArrayLike<number>, from = 0, to = fds.length): void {
  for (let i = from; i < to; i++) closeQuietly(native, fds[i]);
}
