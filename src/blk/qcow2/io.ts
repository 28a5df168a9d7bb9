/**
 * Positional vectored I/O helpers that go straight between a file and the caller's buffers (views of guest memory),
 * plus a cursor that cuts a scatter-gather list into per-extent views without copying.
 */
import type { FileHandle } from 'node:fs/promises';
import type { FileIo } from '../file-io.js';
import { ImageError } from './errors.js';

/** Linux IOV_MAX. */
const IOV_MAX = 1024;

/** Hands out consecutive byte ranges of a buffer list as subarray views. */
export class IovCursor {
  private i = 0;
  private off = 0;
  constructor(private readonly bufs: readonly Uint8Array[]) {}
  take(n: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    while (n > 0) {
      const b = this.bufs[this.i];
      if (b === undefined) throw new RangeError('IovCursor: buffers exhausted');
      const avail = b.length - this.off;
      if (avail === 0) {
        this.i++;
        this.off = 0;
        continue;
      }
      const k = Math.min(avail, n);
      out.push(b.subarray(this.off, this.off + k));
      this.off += k;
      n -= k;
    }
    return out;
  }
}

export function totalLength(bufs: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}

export function fillZero(views: readonly Uint8Array[]): void {
  for (const v of views) v.fill(0);
}

/** Copy `src` into consecutive views. */
export function copyInto(src: Uint8Array, views: readonly Uint8Array[]): void {
  let o = 0;
  for (const v of views) {
    v.set(src.subarray(o, o + v.length));
    o += v.length;
  }
}

/** Drop the first `n` bytes of a view list (after a short transfer). */
function advance(views: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const v of views) {
    if (n >= v.length) {
      n -= v.length;
      continue;
    }
    out.push(n > 0 ? v.subarray(n) : v);
    n = 0;
  }
  return out;
}

/** Where preadvFull/pwritevFull go: an engine's FileIo (the image's data path) or a plain FileHandle (open time). */
export type PositionalFile = FileHandle | FileIo;

function isFileIo(f: PositionalFile): f is FileIo {
  return 'engine' in f;
}

/** preadv until every view is full; bytes past the end of the file read as zeros. */
export async function preadvFull(fh: PositionalFile, views: Uint8Array[], pos: number, path: string): Promise<void> {
  let rest = views.filter((v) => v.length > 0);
  while (rest.length > 0) {
    const batch = rest.length > IOV_MAX ? rest.slice(0, IOV_MAX) : rest;
    let n: number;
    try {
      n = isFileIo(fh) ? await fh.readv(batch, pos) : (await fh.readv(batch, pos)).bytesRead;
    } catch (err) {
      throw new ImageError('Io', `read at ${pos} failed: ${(err as Error).message}`, { path, offset: pos, op: 'read' }, { cause: err });
    }
    if (n === 0) {
      fillZero(rest);
      return;
    }
    pos += n;
    rest = advance(rest, n);
  }
}

/** pwritev until every byte of every view is written. */
export async function pwritevFull(fh: PositionalFile, views: Uint8Array[], pos: number, path: string): Promise<void> {
  let rest = views.filter((v) => v.length > 0);
  while (rest.length > 0) {
    const batch = rest.length > IOV_MAX ? rest.slice(0, IOV_MAX) : rest;
    let n: number;
    try {
      n = isFileIo(fh) ? await fh.writev(batch, pos) : (await fh.writev(batch, pos)).bytesWritten;
    } catch (err) {
      throw new ImageError('Io', `write at ${pos} failed: ${(err as Error).message}`, { path, offset: pos, op: 'write' }, { cause: err });
    }
    if (n === 0) throw new ImageError('Io', `write at ${pos} made no progress`, { path, offset: pos, op: 'write' });
    pos += n;
    rest = advance(rest, n);
  }
}

/** A read-only source that a qcow2 image falls through to for unallocated clusters. */
export interface BackingImage {
  readonly size: number;
  readonly path: string;
  readonly format: string;
  read(offset: number, bufs: readonly Uint8Array[]): Promise<void>;
  close(): Promise<void>;
}

/** Read [offset, offset+len) of a backing image into views; the part past its end reads as zeros. */
export async function readBacking(backing: BackingImage | null, offset: number, views: Uint8Array[]): Promise<void> {
  const len = totalLength(views);
  const avail = backing === null ? 0 : Math.max(0, Math.min(len, backing.size - offset));
  if (avail === len) return backing!.read(offset, views);
  const cur = new IovCursor(views);
  const head = cur.take(avail);
  const tail = cur.take(len - avail);
  fillZero(tail);
  if (avail > 0) await backing!.read(offset, head);
}

/** A raw file used as a backing image (opened read-only; format stated by the overlay). */
export class RawBacking implements BackingImage {
  readonly format = 'raw';
  constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly size: number,
  ) {}
  async read(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    await preadvFull(this.fh, [...bufs], offset, this.path);
  }
  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** A small readers–writer lock: shared holders run together, an exclusive holder runs alone (FIFO fairness). */
export class RwLock {
  private readers = 0;
  private writer = false;
  private queue: Array<{ exclusive: boolean; wake: () => void }> = [];

  async shared(): Promise<void> {
    if (!this.writer && this.queue.length === 0) {
      this.readers++;
      return;
    }
    await new Promise<void>((wake) => this.queue.push({ exclusive: false, wake }));
  }
  async exclusive(): Promise<void> {
    if (!this.writer && this.readers === 0 && this.queue.length === 0) {
      this.writer = true;
      return;
    }
    await new Promise<void>((wake) => this.queue.push({ exclusive: true, wake }));
  }
  releaseShared(): void {
    this.readers--;
    this.pump();
  }
  releaseExclusive(): void {
    this.writer = false;
    this.pump();
  }
  private pump(): void {
    while (this.queue.length > 0 && !this.writer) {
      const next = this.queue[0]!;
      if (next.exclusive) {
        if (this.readers > 0) return;
        this.queue.shift();
        this.writer = true;
        next.wake();
        return;
      }
      this.queue.shift();
      this.readers++;
      next.wake();
    }
  }
}
