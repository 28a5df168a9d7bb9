/**
 * Fds a hostile front-end sends instead of memfds and eventfds (docs/security.md, "Front-end: fds, messages and
 * memory regions"): short and empty memfds, FIFOs with one byte in them, read-only fds, full blocking FIFOs,
 * sockets. Each is made in the test process; the receiver gets its own copy (SCM_RIGHTS), the maker closes its own.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadNative } from '../../src/native/binding.js';

export type HostileFdKind = 'short memfd' | 'empty memfd' | 'fifo with a byte' | 'read-only fd' | 'full blocking fifo' | 'socket';

export const HOSTILE_FD_KINDS: readonly HostileFdKind[] = ['short memfd', 'empty memfd', 'fifo with a byte', 'read-only fd', 'full blocking fifo', 'socket'];

/** Pipe capacity on Linux by default (16 pages). */
const PIPE_CAPACITY = 65536;

export class HostileFds {
  private readonly fds: number[] = [];
  private readonly fsFds: number[] = [];
  private n = 0;

  constructor(private readonly dir: string) {}

  make(kind: HostileFdKind): number {
    const native = loadNative();
    switch (kind) {
      case 'short memfd':
        return this.own(native.memfdCreate('hostile-short', 4096));
      case 'empty memfd':
        return this.own(native.memfdCreate('hostile-empty', 0));
      case 'fifo with a byte': {
        const fd = this.fs(fs.openSync(this.fifo(), fs.constants.O_RDWR | fs.constants.O_NONBLOCK));
        fs.writeSync(fd, Buffer.from([1]));
        return fd;
      }
      case 'read-only fd': {
        // A FIFO's read end: a write fails with EBADF; mmap of it fails too.
        return this.fs(fs.openSync(this.fifo(), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK));
      }
      case 'full blocking fifo': {
        const fd = this.fs(fs.openSync(this.fifo(), fs.constants.O_RDWR)); // O_RDWR: open does not wait for a peer
        fs.writeSync(fd, Buffer.alloc(PIPE_CAPACITY)); // exactly fills an empty pipe
        return fd;
      }
      case 'socket': {
        const p = path.join(this.dir, `hostile-${this.n++}.sock`);
        return this.own(native.listenUnix(p, 1));
      }
    }
  }

  /** A memfd of `size` bytes opened read-only (through /proc, as a second open file description). */
  readOnlyMemfd(size: number): number {
    const mfd = this.own(loadNative().memfdCreate('hostile-ro', size));
    return this.fs(fs.openSync(`/proc/self/fd/${mfd}`, 'r'));
  }

  close(): void {
    const native = loadNative();
    for (const fd of this.fds.splice(0)) native.close(fd);
    for (const fd of this.fsFds.splice(0)) fs.closeSync(fd);
  }

  private fifo(): string {
    const p = path.join(this.dir, `hostile-${this.n++}.fifo`);
    execFileSync('mkfifo', [p]);
    return p;
  }

  private own(fd: number): number {
    this.fds.push(fd);
    return fd;
  }

  private fs(fd: number): number {
    this.fsFds.push(fd);
    return fd;
  }
}
