/**
 * Real guest on a vhostd disk: a QEMU 7.2 TCG guest (Linux virtio_blk) with vhost-user-blk-pci served by the real
 * daemon from a raw image the test makes, and from a qcow2 image made by `vhostctl create` (checked by qemu-img). The guest checks the capacity and the write cache mode, writes a pattern
 * with dd, drops its page cache and reads it back; after it powers off, the host checks the image file holds the
 * pattern where the guest wrote it and the original bytes everywhere else. Then: the guest
 * reads the whole disk and its sha256 matches the host's sha256 of the image contents; it writes aligned and
 * unaligned data with dd (512-byte O_DIRECT writes at odd sectors, an 11.5 KiB O_DIRECT write across a 64 KiB
 * cluster end, a buffered write of 3 x 1000 bytes) and powers off; the host finds exactly those writes in the image
 * (raw: the file; qcow2: `qemu-img convert -O raw`), and `qemu-img check` clean, on a raw image and on a qcow2
 * overlay (vhostctl create -b) over a compressed base (qemu-img convert -c).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { requirePeer } from './support/peers.js';
import { buildInitramfs, startGuest, type Guest } from './support/guest.js';
import { bytes, md5 } from './support/data.js';
import { VHOSTD_BIN, VhostdProcess } from './support/vhostd-process.js';

const VHOSTCTL_BIN = VHOSTD_BIN.replace(/vhostd\.js$/, 'vhostctl.js');

const skip = requirePeer('qemu', 'kernel', 'busybox');

const MiB = 1024 * 1024;
const IMAGE_SIZE = 16 * MiB;
const PATTERN_AT = 3 * MiB + 4096; // not MiB-aligned on purpose
const PATTERN_LEN = 1 * MiB;

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');


function guestBody(): string {
  return `n=0; while [ ! -e /sys/block/vda ] && [ $n -lt 200 ]; do usleep 100000; n=$((n+1)); done
[ -e /sys/block/vda ] || { result disk=missing; exit 1; }
size=$(cat /sys/block/vda/size)
ro=$(cat /sys/block/vda/ro)
wc=$(cat /sys/block/vda/queue/write_cache 2>/dev/null | tr ' ' _)
dd if=/pattern of=/dev/vda bs=4096 seek=${PATTERN_AT / 4096} conv=fsync 2>/dev/null
sync
echo 3 > /proc/sys/vm/drop_caches
back=$(dd if=/dev/vda bs=4096 skip=${PATTERN_AT / 4096} count=${PATTERN_LEN / 4096} 2>/dev/null | md5sum | cut -d' ' -f1)
head=$(dd if=/dev/vda bs=4096 count=${PATTERN_AT / 4096} 2>/dev/null | md5sum | cut -d' ' -f1)
result disk=ok size=$size ro=$ro wc=$wc back=$back head=$head`;
}

describe.skipIf(skip !== null)('QEMU guest on a vhostd disk', () => {
  let guest: Guest | null = null;
  let vhostd: VhostdProcess | null = null;
  afterEach(async () => {
    await guest?.kill();
    guest = null;
    await vhostd?.stop();
    vhostd?.cleanup();
    vhostd = null;
  });

  test('capacity, write cache, dd write and read back; the host image matches after power-off', async () => {
    const initial = bytes(IMAGE_SIZE, 11);
    const pattern = bytes(PATTERN_LEN, 77);
    const probe = new VhostdProcess('');
    const image = path.join(probe.dir, 'g1.img');
    fs.writeFileSync(image, initial);
    vhostd = new VhostdProcess(`vm "g1" {\n    disk "${image}"\n}\n`, { dir: probe.dir });
    await vhostd.start();
    const body = guestBody();
    const initrd = await buildInitramfs(body, { files: { '/pattern': { data: pattern } } });
    guest = startGuest({ name: 'g1', initrd, disks: [{ socket: path.join(vhostd.dir, 'g1.disk0.sock') }] });
    await guest.waitFor(/VHOSTD-DONE rc=\d+/, 180_000);
    await guest.exited;
    const r = guest.results().find((x) => 'disk' in x);
    expect(r, guest.output().slice(-3000)).toBeDefined();
    expect(r!.disk).toBe('ok');
    expect(Number(r!.size)).toBe(IMAGE_SIZE / 512);
    expect(r!.ro).toBe('0');
    expect(r!.wc).toBe('write_back');
    expect(r!.back).toBe(md5(pattern));
    expect(r!.head).toBe(md5(initial.subarray(0, PATTERN_AT)));
    // The guest flushed (dd conv=fsync: a FLUSH request) before powering off: the image holds exactly the pattern where it was written.
    const after = fs.readFileSync(image);
    expect(md5(after.subarray(PATTERN_AT, PATTERN_AT + PATTERN_LEN))).toBe(md5(pattern));
    expect(md5(after.subarray(0, PATTERN_AT))).toBe(md5(initial.subarray(0, PATTERN_AT)));
    expect(md5(after.subarray(PATTERN_AT + PATTERN_LEN))).toBe(md5(initial.subarray(PATTERN_AT + PATTERN_LEN)));
    const stats = await vhostd.stats();
    const dev = stats['g1.disk0'].device;
    expect(dev.writes).toBeGreaterThan(0);
    expect(dev.flushes).toBeGreaterThan(0);
    expect(dev.badRequest + dev.badChain + dev.ioErrors + dev.unsupported).toBe(0);
  });

  test('qcow2 image made by vhostctl create: the guest writes and reads back; qemu-img check is clean and the data is there', async () => {
    const pattern = bytes(PATTERN_LEN, 99);
    const probe = new VhostdProcess('');
    const image = path.join(probe.dir, 'g1.qcow2');
    execFileSync(process.execPath, [VHOSTCTL_BIN, 'create', '-s', '16M', image]);
    vhostd = new VhostdProcess(`vm "g1" {\n    disk "${image}"\n}\n`, { dir: probe.dir });
    await vhostd.start();
    const initrd = await buildInitramfs(guestBody(), { files: { '/pattern': { data: pattern } } });
    guest = startGuest({ name: 'g1', initrd, disks: [{ socket: path.join(vhostd.dir, 'g1.disk0.sock') }] });
    await guest.waitFor(/VHOSTD-DONE rc=\d+/, 180_000);
    await guest.exited;
    const r = guest.results().find((x) => 'disk' in x);
    expect(r, guest.output().slice(-3000)).toBeDefined();
    expect(Number(r!.size)).toBe(IMAGE_SIZE / 512);
    expect(r!.back).toBe(md5(pattern));
    expect(r!.head).toBe(md5(Buffer.alloc(PATTERN_AT)));
    expect(await vhostd.stop()).toBe(0); // flushes and closes the image
    // qemu-img is the oracle: a clean image that holds exactly what the guest wrote.
    execFileSync('qemu-img', ['check', image]);
    const raw = path.join(probe.dir, 'g1.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', image, raw]);
    const after = fs.readFileSync(raw);
    expect(after.length).toBe(IMAGE_SIZE);
    expect(md5(after.subarray(PATTERN_AT, PATTERN_AT + PATTERN_LEN))).toBe(md5(pattern));
    expect(md5(after.subarray(0, PATTERN_AT))).toBe(md5(Buffer.alloc(PATTERN_AT)));
  });

  test('raw image: the guest\'s sha256 of the whole disk matches the host\'s; aligned and unaligned dd writes land exactly', async () => {
    const probe = new VhostdProcess('');
    const image = path.join(probe.dir, 'g1.img');
    const initial = bytes(SHA_DISK_SIZE, 5);
    fs.writeFileSync(image, initial);
    vhostd = new VhostdProcess(`vm "g1" {\n    disk "${image}" format raw\n}\n`, { dir: probe.dir });
    await vhostd.start();
    guest = await runShaGuest(vhostd);
    const r = shaResult(guest);
    expect(r.before).toBe(sha256(initial));
    const expected = applyWrites(initial);
    expect(r.after).toBe(sha256(expected));
    expect(await vhostd.stop()).toBe(0);
    const after = fs.readFileSync(image);
    expect(after.length).toBe(SHA_DISK_SIZE);
    expect(firstDifference(after, expected)).toBe(-1);
  });

  test('fully allocated qcow2 (qemu-img convert of random data): sha256 matches; dd writes land; qemu-img check clean', async () => {
    const probe = new VhostdProcess('');
    const src = path.join(probe.dir, 'src.raw');
    const image = path.join(probe.dir, 'g1.qcow2');
    const initial = bytes(SHA_DISK_SIZE, 6);
    fs.writeFileSync(src, initial);
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', src, image]);
    fs.rmSync(src);
    const hostBefore = sha256(toRaw(image, path.join(probe.dir, 'before.raw')));
    expect(hostBefore).toBe(sha256(initial));
    vhostd = new VhostdProcess(`vm "g1" {\n    disk "${image}" format qcow2\n}\n`, { dir: probe.dir });
    await vhostd.start();
    guest = await runShaGuest(vhostd);
    const r = shaResult(guest);
    expect(r.before).toBe(hostBefore);
    const expected = applyWrites(initial);
    expect(r.after).toBe(sha256(expected));
    expect(await vhostd.stop()).toBe(0);
    execFileSync('qemu-img', ['check', image], { stdio: 'pipe' });
    expect(firstDifference(toRaw(image, path.join(probe.dir, 'after.raw')), expected)).toBe(-1);
  });

  test('qcow2 overlay (vhostctl create -b) over a compressed base: sha256 matches; dd writes land; qemu-img check clean', async () => {
    const probe = new VhostdProcess('');
    const d = probe.dir;
    const plain = path.join(d, 'base0.qcow2');
    const base = path.join(d, 'base.qcow2');
    const overlay = path.join(d, 'overlay.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', plain, String(SHA_DISK_SIZE)]);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 4M', plain], { stdio: 'pipe' });
    execFileSync('qemu-img', ['convert', '-c', '-O', 'qcow2', plain, base]);
    // The base really holds compressed clusters.
    const chk = JSON.parse(execFileSync('qemu-img', ['check', '--output=json', base]).toString()) as { 'compressed-clusters'?: number };
    expect(chk['compressed-clusters']).toBeGreaterThan(0);
    execFileSync(process.execPath, [VHOSTCTL_BIN, 'create', '-b', base, '-s', `${SHA_DISK_SIZE / MiB}M`, overlay]);
    const initial = toRaw(overlay, path.join(d, 'initial.raw'));
    expect(initial.length).toBe(SHA_DISK_SIZE);
    expect(initial.subarray(0, 4 * MiB).every((b) => b === 0x5a)).toBe(true);
    const baseBefore = sha256(toRaw(base, path.join(d, 'base-before.raw')));
    vhostd = new VhostdProcess(`vm "g1" {\n    disk "${overlay}"\n}\n`, { dir: d });
    await vhostd.start();
    guest = await runShaGuest(vhostd);
    const r = shaResult(guest);
    expect(r.before).toBe(sha256(initial));
    const expected = applyWrites(initial);
    expect(r.after).toBe(sha256(expected));
    expect(await vhostd.stop()).toBe(0);
    execFileSync('qemu-img', ['check', overlay], { stdio: 'pipe' }); // exit status 0: no errors, no leaks
    const after = toRaw(overlay, path.join(d, 'after.raw'));
    expect(firstDifference(after, expected)).toBe(-1);
    // The base was opened read-only: untouched.
    execFileSync('qemu-img', ['check', base], { stdio: 'pipe' });
    expect(sha256(toRaw(base, path.join(d, 'base-after.raw')))).toBe(baseBefore);
  });
});

// ------------------------------------------------------------------------------------------------
// Whole-disk sha256 and dd writes (aligned and unaligned)

const SHA_DISK_SIZE = 8 * MiB;

interface DdWrite {
  file: string;
  /** Byte offset on the disk. */
  at: number;
  data: Buffer;
  /** The dd command (if=/file of=/dev/vda ...). */
  dd: string;
}

/** Offsets chosen so that, on the overlay, writes hit compressed base clusters (below 4 MiB) and unallocated ones above. */
const WRITES: DdWrite[] = [
  // Aligned: 16 x 4 KiB at 12 KiB, through the page cache.
  { file: '/w1', at: 3 * 4096, data: bytes(16 * 4096, 201), dd: 'bs=4096 seek=3 count=16 conv=notrunc,fsync' },
  // Three 512-byte O_DIRECT requests at odd sectors (2 MiB + 512).
  { file: '/w2', at: 4097 * 512, data: bytes(3 * 512, 202), dd: 'bs=512 seek=4097 count=3 oflag=direct conv=notrunc' },
  // One 11.5 KiB O_DIRECT request (not a multiple of 4 KiB) at an odd sector, across the 64 KiB cluster end at 128 KiB.
  { file: '/w3', at: 255 * 512, data: bytes(23 * 512, 203), dd: `bs=${23 * 512} count=1 seek=${255 * 512} oflag=seek_bytes,direct conv=notrunc` },
  // Buffered 3 x 1000 bytes at byte 5,000,000 (above the base's data), read-modify-write in the guest's page cache.
  { file: '/w4', at: 5_000_000, data: bytes(3000, 204), dd: 'bs=1000 seek=5000 count=3 conv=notrunc,fsync' },
];

function applyWrites(initial: Buffer): Buffer {
  const b = Buffer.from(initial);
  for (const w of WRITES) w.data.copy(b, w.at);
  return b;
}

function shaGuestBody(): string {
  return `n=0; while [ ! -e /sys/block/vda ] && [ $n -lt 200 ]; do usleep 100000; n=$((n+1)); done
[ -e /sys/block/vda ] || { result sha=missing; exit 1; }
before=$(sha256sum /dev/vda | cut -d' ' -f1)
errs=0
${WRITES.map((w) => `dd if=${w.file} of=/dev/vda ${w.dd} || errs=$((errs+1))`).join('\n')}
sync
echo 3 > /proc/sys/vm/drop_caches
after=$(sha256sum /dev/vda | cut -d' ' -f1)
result sha=ok size=$(cat /sys/block/vda/size) errs=$errs before=$before after=$after`;
}

async function runShaGuest(v: VhostdProcess): Promise<Guest> {
  const files: Record<string, { data: Buffer }> = {};
  for (const w of WRITES) files[w.file] = { data: w.data };
  const initrd = await buildInitramfs(shaGuestBody(), { files });
  const g = startGuest({ name: 'g1', initrd, disks: [{ socket: path.join(v.dir, 'g1.disk0.sock') }] });
  await g.waitFor(/VHOSTD-DONE rc=\d+/, 180_000);
  await g.exited;
  return g;
}

function shaResult(g: Guest): Record<string, string> {
  const r = g.results().find((x) => 'sha' in x);
  expect(r, g.output().slice(-3000)).toBeDefined();
  expect(r!.sha).toBe('ok');
  expect(r!.errs, g.output().slice(-3000)).toBe('0');
  expect(Number(r!.size)).toBe(SHA_DISK_SIZE / 512);
  return r!;
}

/** Contents of an image as raw bytes (qemu-img convert -O raw). */
function toRaw(image: string, out: string): Buffer {
  execFileSync('qemu-img', ['convert', '-O', 'raw', image, out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return Math.min(a.length, b.length);
}
