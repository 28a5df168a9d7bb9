/**
 * Real guest on a vhostd disk: a QEMU 7.2 TCG guest (Linux virtio_blk) with vhost-user-blk-pci served by the real
 * daemon from a raw image the test makes, and from a qcow2 image made by `vhostctl create` (checked by qemu-img). The guest checks the capacity and the write cache mode, writes a pattern
 * with dd, drops its page cache and reads it back; after it powers off, the host checks the image file holds the
 * pattern where the guest wrote it and the original bytes everywhere else.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { requirePeer } from './support/peers.js';
import { buildInitramfs, startGuest, type Guest } from './support/guest.js';
import { VHOSTD_BIN, VhostdProcess } from './support/vhostd-process.js';

const VHOSTCTL_BIN = VHOSTD_BIN.replace(/vhostd\.js$/, 'vhostctl.js');

const skip = requirePeer('qemu', 'kernel', 'busybox');

const MiB = 1024 * 1024;
const IMAGE_SIZE = 16 * MiB;
const PATTERN_AT = 3 * MiB + 4096; // not MiB-aligned on purpose
const PATTERN_LEN = 1 * MiB;

const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

function bytes(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  let x = seed >>> 0;
  for (let i = 0; i < len; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

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
});
