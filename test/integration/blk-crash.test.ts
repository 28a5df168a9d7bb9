/**
 * Crash test with the real daemon: the driver-side FakeBlkDriver runs a seeded write-and-flush workload
 * on a qcow2 image served by a vhostd child process, which is SIGKILLed at a random moment. Then:
 *  - `qemu-img check` finds no corruption (exit 0, or 3 = leaked clusters only);
 *  - every write covered by a completed FLUSH is in the image (qemu-img convert -O raw);
 *  - vhostd restarted on the same socket: the driver reconnects as QEMU does (SET_INFLIGHT_FD of the same memfd,
 *    SET_VRING_BASE = used.idx), the write that was in flight is resubmitted and completes exactly once, and after a
 *    flush and a clean stop the image is clean and holds every write.
 * Runs the built daemon (build/src/bin/vhostd.js): rebuild after changes.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, test } from 'vitest';
import { VIRTIO_BLK_S_OK } from '../../src/blk/virtio-blk-defs.js';
import { FakeBlkDriver, type BlkCompletion } from '../helpers/fake-blk-driver.js';
import { hasQemuImg, prng, qemuCheck, qemuImg } from '../helpers/qcow2-tools.js';
import { VHOSTD_BIN, VhostdProcess } from '../e2e/support/vhostd-process.js';

const SIZE = 16 * 1024 * 1024;
const root = path.resolve(import.meta.dirname, '../..');

interface PlannedWrite {
  sector: number;
  data: Buffer;
}

/** Write i of run `seed`: 1..128 sectors somewhere in the disk, filled with a byte that names it. */
function plannedWrite(seed: number, i: number): PlannedWrite {
  const r = prng(seed * 7919 + i);
  const sectors = 1 + Math.floor(r() * 128);
  const sector = Math.floor(r() * (SIZE / 512 - sectors));
  const data = Buffer.alloc(sectors * 512, 1 + (i % 251));
  data.writeUInt32LE(i, 0); // distinct per write even when the fill byte repeats
  return { sector, data };
}

const conf = (image: string): string => `vm "vm1" {\n    disk "${image}" format qcow2\n}\n`;

let cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

describe.skipIf(!hasQemuImg)('blk crash safety: kill -9 vhostd under a write-and-flush workload', () => {
  beforeAll(() => {
    if (!fs.existsSync(VHOSTD_BIN)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  }, 300_000);

  const r = prng(4242);
  for (let run = 0; run < 5; run++) {
    const killAfter = 20 + Math.floor(r() * 400);
    const seed = 900 + run;
    test(`run ${run}: kill -9 ${killAfter} ms after the first flush; check clean, flushed data present, in-flight write resubmitted after restart`, async () => {
      let vhostd = new VhostdProcess('');
      const dir = vhostd.dir;
      const image = path.join(dir, 'vm1.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', ...(run % 2 ? ['-o', 'cluster_size=4096'] : []), image, String(SIZE));
      vhostd = new VhostdProcess(conf(image), { dir });
      cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
      await vhostd.start();
      cleanups.push(async () => void (await vhostd.stop()));
      const socket = path.join(dir, 'vm1.disk0.sock');
      const d = new FakeBlkDriver({ socket, seed, regionSize: 128 * 1024 * 1024 }); // bump-allocated buffers
      cleanups.push(() => d.close());
      await d.realize();
      await d.start();

      // Sequential writes, a flush after every 4th; `flushedThrough` = last write index a completed flush covers.
      let flushedThrough = -1;
      let completed = -1;
      let stop = false;
      let pending: { i: number; p: Promise<BlkCompletion> } | null = null;
      const workload = (async () => {
        for (let i = 0; !stop; i++) {
          const w = plannedWrite(seed, i);
          const p = d.write(w.sector, w.data);
          pending = { i, p };
          const c = await p;
          if (c.status !== VIRTIO_BLK_S_OK) throw new Error(`write ${i} status ${c.status}`);
          completed = i;
          pending = null;
          if (i % 4 === 3 && !stop) {
            const f = d.flush();
            if ((await f).status !== VIRTIO_BLK_S_OK) throw new Error('flush failed');
            flushedThrough = i;
          }
        }
      })();
      workload.catch(() => {});
      const t0 = Date.now();
      while (flushedThrough < 0 && Date.now() - t0 < 20_000) await new Promise((res) => setTimeout(res, 2));
      await new Promise((res) => setTimeout(res, killAfter));
      await vhostd.kill();
      stop = true;
      const covered = flushedThrough;
      const done = completed;
      expect(covered).toBeGreaterThanOrEqual(0);

      // 1. No corruption: qemu-img check exit 0 or 3 (leaks only).
      const chk = qemuCheck(image);
      expect([0, 3], chk.text).toContain(chk.status);
      // 2. Everything a completed flush covered is there; bytes of later writes may or may not be.
      const mirror = Buffer.alloc(SIZE);
      const known = Buffer.alloc(SIZE, 1);
      for (let i = 0; i <= covered; i++) {
        const w = plannedWrite(seed, i);
        w.data.copy(mirror, w.sector * 512);
      }
      for (let i = covered + 1; i <= done + 2; i++) {
        const w = plannedWrite(seed, i);
        known.fill(0, w.sector * 512, w.sector * 512 + w.data.length);
      }
      const raw = path.join(dir, 'after-crash.raw');
      qemuImg('convert', '-O', 'raw', image, raw);
      const got = fs.readFileSync(raw);
      let bad = -1;
      for (let i = 0; i < SIZE; i++) if (known[i] && got[i] !== mirror[i]) { bad = i; break; }
      expect(bad, `first mismatch at byte ${bad} (flushed through write ${covered}, completed ${done})`).toBe(-1);

      // 3. Restart on the same socket; QEMU-style reconnect; the pending write (if any) is resubmitted.
      const inFlight = pending as { i: number; p: Promise<BlkCompletion> } | null;
      vhostd = new VhostdProcess(conf(image), { dir });
      await vhostd.start();
      await d.reconnect(socket);
      if (inFlight) expect((await inFlight.p).status).toBe(VIRTIO_BLK_S_OK);
      await workload;
      expect((await d.flush()).status).toBe(VIRTIO_BLK_S_OK);
      expect(d.strayCompletions).toBe(0);
      for (const [, n] of d.completionsByHead) expect(n).toBeGreaterThanOrEqual(1);
      // Expected now: flushed writes; completed-but-unflushed ones may have died with the process (unknown bytes);
      // the resubmitted in-flight write is there.
      const full = Buffer.from(mirror);
      const sure = Buffer.alloc(SIZE, 1);
      for (let i = covered + 1; i <= done; i++) {
        const w = plannedWrite(seed, i);
        sure.fill(0, w.sector * 512, w.sector * 512 + w.data.length);
      }
      if (inFlight) {
        const w = plannedWrite(seed, inFlight.i);
        w.data.copy(full, w.sector * 512);
        sure.fill(1, w.sector * 512, w.sector * 512 + w.data.length);
      }
      const firstBad = (b: Uint8Array, base: number): number => {
        for (let i = 0; i < b.length; i++) if (sure[base + i] && b[i] !== full[base + i]) return base + i;
        return -1;
      };
      // Read back through the daemon, then from the file after a clean stop.
      for (let off = 0; off < SIZE; off += 1024 * 1024) {
        const c = await d.read(off / 512, 1024 * 1024, 0, { split: 64 * 1024 });
        expect(firstBad(c.data, off), `read through vhostd (flushed through ${covered}, completed ${done}, in flight ${inFlight?.i})`).toBe(-1);
      }
      d.close();
      expect(await vhostd.stop()).toBe(0);
      const chk2 = qemuCheck(image);
      expect([0, 3], chk2.text).toContain(chk2.status);
      qemuImg('convert', '-O', 'raw', image, raw);
      expect(firstBad(fs.readFileSync(raw), 0)).toBe(-1);
    }, 120_000);
  }
});
