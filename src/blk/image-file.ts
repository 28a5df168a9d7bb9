/**
 * openImageFile: open an image file so that nothing is read, and no device or FIFO is opened, before its type and
 * location are checked, with no window between the check and the open:
 *   1. open(O_PATH | O_NOFOLLOW): a handle on the inode that reads nothing and opens no device driver or FIFO;
 *      a symlink as the last component yields a handle on the link itself, which then fails the type check;
 *   2. fstat that handle: a regular file (or, where allowed, a block device), never a FIFO, socket or char device;
 *   3. readlink /proc/self/fd/N: where the handle really points (every symlink and `..` resolved by the kernel),
 *      checked against the allowed directories;
 *   4. reopen /proc/self/fd/N for reading (and writing): the same inode that was checked, compared by dev/ino.
 */
import { constants as fsc, type Stats } from 'node:fs';
import { open, readlink, realpath, type FileHandle } from 'node:fs/promises';
import { sep } from 'node:path';

/** O_PATH on Linux (x86_64 and arm64); node's fs.constants does not export it. */
const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;

export type ImageFileRefusal = 'not-found' | 'symlink' | 'not-regular' | 'outside' | 'io';

/** Why an image file was refused; `resolved` is where the path really points, when known. */
export class ImageFileError extends Error {
  constructor(
    readonly reason: ImageFileRefusal,
    message: string,
    readonly resolved?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ImageFileError';
  }
}

export interface OpenImageFileOptions {
  readOnly: boolean;
  /** Accept a block device as well as a regular file (raw disks). */
  allowBlockDevice?: boolean;
  /** When set, the resolved path must lie inside one of these directories (absolute, symlinks resolved). */
  within?: readonly string[];
}

export interface OpenedImageFile {
  fh: FileHandle;
  stat: Stats;
  /** The path the kernel resolved (no symlinks, no `..`). */
  resolved: string;
}

/** True when `p` is `dir` or lies below it (both absolute, normalised). */
export function isInside(p: string, dir: string): boolean {
  if (dir === sep) return p.startsWith(sep);
  return p === dir || p.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

/** Resolve directories the way the kernel will see them (symlinks followed); a missing one is kept as written. */
export async function resolveDirs(dirs: readonly string[]): Promise<string[]> {
  return Promise.all(dirs.map((d) => realpath(d).catch(() => d)));
}

/** Open `path` as described above. Throws ImageFileError. */
export async function openImageFile(path: string, opts: OpenImageFileOptions): Promise<OpenedImageFile> {
  // Resolve first for a precise message naming where a symlink points; the kernel's answer (step 3) decides.
  let target = path;
  try {
    target = await realpath(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ImageFileError('not-found', 'no such file', undefined, { cause: err });
    throw new ImageFileError('io', (err as Error).message, undefined, { cause: err });
  }
  if (opts.within && !opts.within.some((d) => isInside(target, d))) throw new ImageFileError('outside', `resolves to ${target}, outside the allowed directories`, target);
  let pathFh: FileHandle;
  try {
    pathFh = await open(target, O_PATH | fsc.O_NOFOLLOW | O_CLOEXEC);
  } catch (err) {
    throw new ImageFileError('io', `cannot open: ${(err as Error).message}`, target, { cause: err });
  }
  try {
    const st = await pathFh.stat();
    if (st.isSymbolicLink()) throw new ImageFileError('symlink', `${target} was replaced by a symlink`, target);
    if (!st.isFile() && !(opts.allowBlockDevice && st.isBlockDevice()))
      throw new ImageFileError('not-regular', `${target} is ${describeType(st)}, not a regular file${opts.allowBlockDevice ? ' or block device' : ''}`, target);
    const proc = `/proc/self/fd/${pathFh.fd}`;
    const resolved = await readlink(proc);
    if (opts.within && !opts.within.some((d) => isInside(resolved, d))) throw new ImageFileError('outside', `resolves to ${resolved}, outside the allowed directories`, resolved);
    let fh: FileHandle;
    try {
      fh = await open(proc, (opts.readOnly ? fsc.O_RDONLY : fsc.O_RDWR) | fsc.O_NONBLOCK | O_CLOEXEC);
    } catch (err) {
      throw new ImageFileError('io', `cannot open: ${(err as Error).message}`, resolved, { cause: err });
    }
    const st2 = await fh.stat().catch(async (err: unknown) => {
      await fh.close();
      throw new ImageFileError('io', (err as Error).message, resolved, { cause: err });
    });
    if (st2.dev !== st.dev || st2.ino !== st.ino) {
      await fh.close();
      throw new ImageFileError('io', `${resolved} changed while it was opened`, resolved);
    }
    return { fh, stat: st2, resolved };
  } finally {
    await pathFh.close();
  }
}

function describeType(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSymbolicLink()) return 'a symlink';
  return 'not a regular file';
}
