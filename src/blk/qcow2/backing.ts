/**
 * Backing files of qcow2 images, under the image policy (docs/security.md, "Images: backing files and format
 * probing"). The name in an image's header is hostile: it may point at a host file (/etc/shadow), another guest's
 * image, a device node or a FIFO. A backing file is used only when
 *   - it resolves (every symlink and `..` resolved by the kernel) inside an allowed directory: the top image's own
 *     directory tree, or a directory named by `backing dir` in the configuration;
 *   - it is a regular file, checked with fstat on an O_PATH handle before anything is opened or read
 *     (openImageFile), and is not an image the configuration serves to a disk;
 *   - its format is stated in the image (backing format extension, qcow2 or raw) or it is qcow2 by its magic: a
 *     file of unstated format is never taken as raw.
 * The same checks apply at every level of the chain (at most MAX_BACKING_DEPTH deep); a relative name is resolved
 * against the directory of the image that holds it, as QEMU does.
 */
import { stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ImageFileError, openImageFile, resolveDirs, type OpenedImageFile } from '../image-file.js';
import { ImageError } from './errors.js';
import { QCOW2_MAGIC, type Qcow2Header } from './header.js';
import { preadvFull, RawBacking, type BackingImage } from './io.js';

/** Longest backing chain accepted below an image. */
export const MAX_BACKING_DEPTH = 16;

/** What the configuration allows a backing chain to reach. */
export interface ImagePolicy {
  /** Directories a backing file may lie in, besides the top image's own directory tree (`backing dir`). */
  backingDirs?: readonly string[];
  /** Images served to other disks: never acceptable as a backing file (another guest's data). */
  denyImages?: readonly (string | DeniedImage)[];
}

/** An image served to another disk, with that disk's name for the refusal message. */
export interface DeniedImage {
  path: string;
  /** e.g. "vm2.disk0" */
  disk: string;
}

/** State carried down one backing chain. */
export interface ChainState {
  depth: number;
  /** dev:ino of every image opened so far in this chain (loops). */
  seen: Set<string>;
  /** Resolved allowed directories; null until the top image is open. */
  within: string[] | null;
  /** dev:ino of the images in ImagePolicy.denyImages → the disk serving it ('' when not named). */
  deny: Map<string, string>;
  policy: ImagePolicy;
}

export async function newChain(policy: ImagePolicy = {}): Promise<ChainState> {
  const deny = new Map<string, string>();
  for (const d of policy.denyImages ?? []) {
    const st = await stat(typeof d === 'string' ? d : d.path).catch(() => null);
    if (st) deny.set(`${st.dev}:${st.ino}`, typeof d === 'string' ? '' : d.disk);
  }
  return { depth: 0, seen: new Set(), within: null, deny, policy };
}

/** Called once the top image is open at `resolved`: its directory tree plus the configured ones. */
export async function setAllowedDirs(chain: ChainState, resolved: string): Promise<void> {
  if (chain.within !== null) return;
  chain.within = [dirname(resolved), ...(await resolveDirs(chain.policy.backingDirs ?? []))];
}

/** Opens a qcow2 backing image from a file already opened and checked (takes ownership of its handle). */
export type OpenQcow2Backing = (file: OpenedImageFile, chain: ChainState) => Promise<BackingImage>;

/**
 * Open the backing image named by `h`, the header of the image at `path` (really at `resolved`), read-only.
 * Refusals are ImageError 'Refused' naming the image, the backing file and the reason.
 */
export async function openBacking(path: string, resolved: string, h: Qcow2Header, chain: ChainState, openQcow2: OpenQcow2Backing): Promise<BackingImage> {
  const name = h.backingFile!;
  const ctx = { path, op: 'open backing', backing: name };
  const refuse = (why: string): never => {
    throw new ImageError('Refused', `backing file "${name}" refused: ${why}`, ctx);
  };
  if (name.length === 0) throw new ImageError('InvalidFormat', 'empty backing file name', ctx);
  if (/^[a-z][a-z0-9+.-]*:/i.test(name) && !isAbsolute(name))
    throw new ImageError('UnsupportedFeature', `backing file "${name}" uses a protocol prefix; only plain file names are allowed`, { ...ctx, feature: 'backing protocol' });
  if (chain.depth + 1 > MAX_BACKING_DEPTH) throw new ImageError('InvalidFormat', `backing chain deeper than ${MAX_BACKING_DEPTH}`, ctx);
  const fmt = h.backingFormat;
  if (fmt !== null && fmt !== 'qcow2' && fmt !== 'raw')
    throw new ImageError('UnsupportedFeature', `backing format "${fmt}" is not supported (qcow2 or raw)`, { ...ctx, feature: `backing format ${fmt}` });
  const target = isAbsolute(name) ? name : resolve(dirname(resolved), name);
  let opened;
  try {
    opened = await openImageFile(target, { readOnly: true, within: chain.within ?? [dirname(resolved)] });
  } catch (err) {
    if (!(err instanceof ImageFileError)) throw err;
    if (err.reason === 'not-found') throw new ImageError('Io', `backing file "${name}" (${target}): no such file`, ctx, { cause: err });
    if (err.reason === 'io') throw new ImageError('Io', `backing file "${name}" (${target}): ${err.message}`, ctx, { cause: err });
    if (err.reason === 'outside') refuse(`${err.message} (${chain.within!.join(', ')}; widen with backing dir in the configuration)`);
    refuse(err.message);
  }
  const { fh, stat: st, resolved: real } = opened!;
  let keep = false;
  try {
    const id = `${st.dev}:${st.ino}`;
    const denied = chain.deny.get(id);
    if (denied !== undefined) refuse(`${real} is the image of another configured disk${denied ? ` (${denied})` : ''}`);
    if (chain.seen.has(id)) throw new ImageError('InvalidFormat', `backing chain loops back to an image in the chain (${real})`, ctx);
    const magic = Buffer.alloc(4);
    await preadvFull(fh, [magic], 0, real);
    const isQcow2 = magic.readUInt32BE(0) === QCOW2_MAGIC;
    const format = fmt ?? (isQcow2 ? 'qcow2' : null);
    if (format === null) refuse(`${real} has no stated format and is not qcow2 (probing raw is refused: state the format, e.g. qemu-img rebase -u -F raw)`);
    keep = true;
    if (format === 'raw') {
      chain.seen.add(id);
      return new RawBacking(fh, real, st.size);
    }
  } finally {
    if (!keep) await fh.close();
  }
  return openQcow2(opened!, { ...chain, depth: chain.depth + 1 });
}
