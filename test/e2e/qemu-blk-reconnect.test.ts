/**
 * Real guest across a vhostd crash (vhost-user spec, "Inflight I/O tracking"): a QEMU 7.2 TCG guest with
 * `reconnect=1` on a vhostd disk runs a write loop (dd of a known pattern at a new offset, sync, drop caches, md5
 * of what it wrote). The test SIGKILLs vhostd mid-run and starts it again on the same socket; QEMU reconnects and
 * re-sends SET_INFLIGHT_FD with the same memfd, requests in flight are resubmitted, and the guest finishes without
 * an I/O error; afterwards the image holds every pattern the guest wrote.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { requirePeer } from './support/peers.js';
import { buildInitramfs, startGuest, type Guest } from './support/guest.js';
import { bytes, md5 } from './support/data.js';
import { VhostdProcess } from './support/vhostd-process.js';

const skip = requirePeer('qemu', 'kernel', 'busybox');

const MiB = 1024 * 1024;
const IMAGE_SIZE = 32 * MiB;
const CHUNK = 256 * 1024;
const ITERATIONS = 40;



function guestBody(): string {
  const blocks = CHUNK / 4096;
  return `n=0; while [ ! -e /sys/block/vda ] && [ $n -lt 200 ]; do usleep 100000; n=$((n+1)); done
[ -e /sys/block/vda ] || { result disk=missing; exit 1; }
i=0
while [ $i -lt ${ITERATIONS} ]; do
  dd if=/pattern of=/dev/vda bs=4096 seek=$((i*${blocks})) count=${blocks} conv=fsync 2>/dev/null || echo "VHOSTD-DDFAIL $i"
  sync
  echo 3 > /proc/sys/vm/drop_caches
  sum=$(dd if=/dev/vda bs=4096 skip=$((i*${blocks})) count=${blocks} 2>/dev/null | md5sum | cut -d' ' -f1)
  echo "VHOSTD-ITER $i $sum"
  i=$((i+1))
  usleep 150000
done
result loop=done`;
}

describe.skipIf(skip !== null)('QEMU guest on a vhostd disk across a vhostd crash', () => {
  let guest: Guest | null = null;
  let vhostd: VhostdProcess | null = null;
  afterEach(async () => {
    await guest?.kill();
    guest = null;
    await vhostd?.stop();
    vhostd?.cleanup();
    vhostd = null;
  });

  test('SIGKILL vhostd mid write loop, restart on the same socket: the guest finishes without I/O errors and its data is on the image', async () => {
    const pattern = bytes(CHUNK, 1234);
    const probe = new VhostdProcess('');
    const dir = probe.dir;
    const image = path.join(dir, 'g1.img');
    fs.writeFileSync(image, Buffer.alloc(IMAGE_SIZE));
    const conf = `vm "g1" {\n    disk "${image}"\n}\n`;
    vhostd = new VhostdProcess(conf, { dir });
    await vhostd.start();
    const initrd = await buildInitramfs(guestBody(), { files: { '/pattern': { data: pattern } } });
    guest = startGuest({ name: 'g1', initrd, reconnect: true, disks: [{ socket: path.join(dir, 'g1.disk0.sock') }] });
    await guest.waitFor(/VHOSTD-ITER 4 /, 180_000);
    await vhostd.kill(); // mid-run: the guest keeps issuing I/O into a dead back-end
    await new Promise((r) => setTimeout(r, 1500));
    vhostd = new VhostdProcess(conf, { dir });
    await vhostd.start();
    await guest.waitFor(/VHOSTD-DONE rc=\d+/, 240_000);
    await guest.exited;
    const out = guest.output();
    expect(out, out.slice(-3000)).toMatch(/VHOSTD-RESULT: loop=done/);
    for (const bad of ['I/O error', 'Buffer I/O error', 'blk_update_request', 'VHOSTD-DDFAIL']) expect(out.includes(bad), `${bad} in:\n${out.slice(-3000)}`).toBe(false);
    const iters = [...out.matchAll(/VHOSTD-ITER (\d+) ([0-9a-f]{32})/g)];
    expect(iters.length).toBe(ITERATIONS);
    for (const m of iters) expect(m[2], `iteration ${m[1]}`).toBe(md5(pattern));
    // The restarted daemon served the guest (QEMU reconnected), and it logged no errors.
    expect(vhostd.logs.some((l) => l.msg === 'front-end connected')).toBe(true);
    expect(vhostd.logs.filter((l) => l.level >= 50)).toEqual([]);
    expect(await vhostd.stop()).toBe(0);
    const after = fs.readFileSync(image);
    for (let i = 0; i < ITERATIONS; i++) expect(md5(after.subarray(i * CHUNK, (i + 1) * CHUNK)), `chunk ${i} on the image`).toBe(md5(pattern));
    expect(md5(after.subarray(ITERATIONS * CHUNK))).toBe(md5(Buffer.alloc(IMAGE_SIZE - ITERATIONS * CHUNK)));
  }, 420_000);
});
