/**
 * Guest-level disk rates: a QEMU TCG guest (1 vCPU, Linux virtio_blk) with a vhost-user-blk disk
 * served by vhostd, then the same guest with the same image file served by qemu-storage-daemon (never both at
 * once), on a raw image and on a qcow2 (converted from the same raw image).
 *
 * The image holds MIB MiB of seeded bytes followed by MIB MiB of zeros. The guest reads the first half with
 * `dd iflag=direct bs=1M` into a RAM file (timed), then writes that file to the second half with
 * `dd oflag=direct conv=fsync` (timed: the fsync is a virtio-blk FLUSH, so the write is durable when the clock
 * stops); PASSES times, then it drops its caches and reads the second half back. Before anything is reported: the guest's md5 of the data
 * it read and of the data it read back both match the host's md5 of the seeded bytes, the image file holds them in
 * its second half afterwards (qcow2: via `qemu-img convert`, and `qemu-img check` is clean), and vhostd counted no
 * errors. Clock: the guest's CLOCK_MONOTONIC from /proc/timer_list (ns).
 *
 * Under TCG the guest's emulated CPU (dd's copies, virtio_blk, the page allocator) is the limit, not the backend:
 * the rows give both rates and their ratio, and only the ratio means anything. Rates are the median of the passes
 * (on qcow2 the first write pass allocates clusters, the later ones overwrite them).
 * Quick: 32 MiB, 3 passes; --full: 128 MiB, 5 passes (BENCH_DD_MIB overrides the size).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bytes, md5 } from '../../test/e2e/support/data.js';
import { buildInitramfs, startGuest, type Guest } from '../../test/e2e/support/guest.js';
import { VhostdProcess } from '../../test/e2e/support/vhostd-process.js';
import { table } from '../support/harness.js';
import { FULL, pin } from '../support/proc.js';
import { report, type BenchRow } from '../support/report.js';
import { startQsd } from './qsd.js';

const MIB = Number(process.env.BENCH_DD_MIB ?? (FULL ? 128 : 32));
const PASSES = FULL ? 5 : 3;
const MiB = 1024 * 1024;
const SEED = 4242;

const BODY = `n=0; while [ ! -e /sys/block/vda ] && [ $n -lt 200 ]; do usleep 100000; n=$((n+1)); done
[ -e /sys/block/vda ] || { result dd=missing; exit 1; }
now() { sed -n 's/^now at \\([0-9]*\\) nsecs.*/\\1/p' /proc/timer_list | head -n 1; }
[ -n "$(now)" ] || { result dd=noclock; exit 1; }
M=${MIB}
for p in $(seq ${PASSES}); do
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now); dd if=/dev/vda of=/tmp/r bs=1M count=$M iflag=direct 2>/tmp/e; re=$?; t1=$(now); [ $re = 0 ] || cat /tmp/e
  rsum=$(md5sum /tmp/r | cut -d' ' -f1)
  t2=$(now); dd if=/tmp/r of=/dev/vda bs=1M seek=$M count=$M oflag=direct conv=notrunc,fsync 2>/tmp/e; we=$?; t3=$(now); [ $we = 0 ] || cat /tmp/e
  rm -f /tmp/r
  result pass=$p re=$re we=$we t0=$t0 t1=$t1 t2=$t2 t3=$t3 rsum=$rsum
done
echo 3 > /proc/sys/vm/drop_caches
wsum=$(dd if=/dev/vda bs=1M skip=$M count=$M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
result dd=ok wsum=$wsum`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

interface Rates {
  read: number;
  write: number;
}

/** Boots the guest on `socket`, waits for its verdict, checks it; MB/s (1e6 B/s). */
async function guestRun(socket: string, initrd: string, expect: string): Promise<Rates> {
  // /tmp/r lives in the rootfs, a tmpfs limited to half the guest RAM (a 128 MiB read into it failed with 320 MiB).
  const g: Guest = startGuest({ name: 'dd', initrd, disks: [{ socket }], memMiB: Math.max(256, 2 * MIB + 192), bios: 'qboot' });
  try {
    await g.waitFor(/VHOSTD-BOOTED/, 120_000);
    pin(g.proc.pid!, 0); // every QEMU thread exists by now: guest on core 0, backend on core 1
    await g.waitFor(/VHOSTD-DONE rc=\d+/, 600_000);
    const r = g.results().find((x) => 'dd' in x);
    const passes = g.results().filter((x) => 'pass' in x);
    if (!r || r.dd !== 'ok' || passes.length !== PASSES) throw new Error(`guest dd failed: ${JSON.stringify(r)}, ${passes.length} passes\n${g.output().slice(-2000)}`);
    const reads: number[] = [];
    const writes: number[] = [];
    const rate = (p: Record<string, string>, a: string, b: string) => (MIB * MiB) / (Number(BigInt(p[b]) - BigInt(p[a])) / 1e9) / 1e6;
    for (const p of passes) {
      if (p.re !== '0' || p.we !== '0') throw new Error(`guest dd pass ${p.pass} failed: ${JSON.stringify(p)}\n${g.output().slice(-2000)}`);
      if (p.rsum !== expect) throw new Error(`guest read md5 ${p.rsum} in pass ${p.pass}, expected ${expect}`);
      reads.push(rate(p, 't0', 't1'));
      writes.push(rate(p, 't2', 't3'));
    }
    if (r.wsum !== expect) throw new Error(`guest read back md5 ${r.wsum} after its writes, expected ${expect}`);
    return { read: median(reads), write: median(writes) };
  } finally {
    await g.kill();
  }
}

/** The image's contents as raw bytes (a qcow2 through qemu-img convert, after qemu-img check). */
function imageBytes(image: string, format: string, dir: string): Buffer {
  if (format === 'raw') return fs.readFileSync(image);
  execFileSync('qemu-img', ['check', image], { stdio: 'pipe' });
  const out = path.join(dir, 'check.raw');
  execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

async function onVhostd(image: string, format: string, dir: string, initrd: string, expect: string): Promise<Rates> {
  const v = new VhostdProcess(`vm "g" {\n    disk "${image}" format ${format}\n}\n`, { dir });
  await v.start();
  pin(v.proc!.pid!, 1);
  try {
    const rates = await guestRun(path.join(dir, 'g.disk0.sock'), initrd, expect);
    const dev = (await v.stats())['g.disk0'].device;
    if (dev.badChain + dev.badRequest + dev.unsupported + dev.ioErrors !== 0) throw new Error(`vhostd counted errors: ${JSON.stringify(dev)}`);
    // Every pass's read and write, and the read-back, went through vhostd (O_DIRECT: no page cache in between).
    if (!(dev.readBytes >= (PASSES + 1) * MIB * MiB && dev.writtenBytes >= PASSES * MIB * MiB && dev.flushes >= PASSES))
      throw new Error(`vhostd counted ${dev.readBytes} bytes read, ${dev.writtenBytes} written, ${dev.flushes} flushes`);
    return rates;
  } finally {
    const code = await v.stop();
    if (code !== 0) throw new Error(`vhostd exited with ${code}: ${v.stderr}`);
  }
}

async function onQsd(image: string, format: string, dir: string, initrd: string, expect: string): Promise<Rates> {
  const qsd = await startQsd([{ image, format, socket: path.join(dir, 'qsd.sock') }], { core: 1 });
  try {
    return await guestRun(path.join(dir, 'qsd.sock'), initrd, expect);
  } finally {
    await qsd.stop();
  }
}

interface Line {
  image: string;
  op: 'read' | 'write';
  vhostd: number;
  qsd: number;
}

async function main(): Promise<Line[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-bench-dd-'));
  try {
    const data = bytes(MIB * MiB, SEED);
    const expect = md5(data);
    const template = path.join(dir, 'template.raw');
    fs.writeFileSync(template, Buffer.concat([data, Buffer.alloc(MIB * MiB)]));
    const initrd = await buildInitramfs(BODY);
    const lines: Line[] = [];
    for (const format of ['raw', 'qcow2'] as const) {
      const rates: Partial<Record<'vhostd' | 'qsd', Rates>> = {};
      for (const which of ['vhostd', 'qsd'] as const) {
        // A fresh image per backend: each writes into zeros (on qcow2: unallocated clusters).
        const image = path.join(dir, `disk.${format}`);
        fs.rmSync(image, { force: true });
        if (format === 'raw') fs.copyFileSync(template, image);
        else execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', template, image]);
        process.stderr.write(`${format}: ${which}...\n`);
        rates[which] = which === 'vhostd' ? await onVhostd(image, format, dir, initrd, expect) : await onQsd(image, format, dir, initrd, expect);
        const after = imageBytes(image, format, dir);
        if (after.length !== 2 * MIB * MiB || !after.subarray(MIB * MiB).equals(data) || !after.subarray(0, MIB * MiB).equals(data))
          throw new Error(`${format} on ${which}: the image does not hold the guest's write`);
      }
      for (const op of ['read', 'write'] as const) lines.push({ image: format, op, vhostd: rates.vhostd![op], qsd: rates.qsd![op] });
    }
    return lines;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

pin(process.pid, 0);
const lines = await main();
const r1 = (x: number) => Number(x.toFixed(1));
const rows: BenchRow[] = lines.map((l) => ({
  bench: 'blk/guest-dd',
  case: `${l.image} dd ${l.op}`,
  unit: 'MB/s',
  value: r1(l.vhostd),
  reference: 'qemu-storage-daemon',
  referenceValue: r1(l.qsd),
  ratio: Number((l.vhostd / l.qsd).toFixed(3)),
  mib: MIB,
  note:
    `A QEMU TCG guest (1 vCPU) runs \`dd bs=1M\` over ${MIB} MiB with O_DIRECT on a vhost-user-blk disk (read into RAM; write + fsync), median of ${PASSES} passes, ` +
    'on vhostd and then on qemu-storage-daemon with the same image; data checked by md5 in the guest and on the host. ' +
    'The emulated CPU is the limit under TCG: read the ratio, not the absolute rates.',
}));
report(rows);
process.stderr.write(
  table(
    `blk/guest-dd: QEMU TCG guest dd, ${MIB} MiB, O_DIRECT, bs=1M, median of ${PASSES} passes; ratio = vhostd/qsd (TCG-bound)`,
    ['image', 'op', 'vhostd MB/s', 'qsd MB/s', 'vhostd/qsd'],
    lines.map((l) => [l.image, l.op, l.vhostd.toFixed(1), l.qsd.toFixed(1), (l.vhostd / l.qsd).toFixed(2)]),
  ),
);
process.exit(0);
