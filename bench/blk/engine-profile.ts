/**
 * Per-request cost of the two disk I/O engines, in process, without a vhost-user peer: 4 KiB random preadv of a
 * 64 MiB file in the page cache through the io_uring engine (src/blk/uring-engine.ts) and through node:fs
 * FileHandle.readv (the thread-pool fallback), at QD1 (one request at a time, awaited) and QD32 (32 kept in
 * flight). Prints wall time, CPU time and context switches (all threads, /proc/self/task/N/status) per request.
 * For system calls per request run it under `strace -f -c -e trace=!futex` (or with futex) and divide by the count.
 *
 *   node build/bench/blk/engine-profile.js [requests per case, default 50000] [io_uring|threads|both]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UringEngine } from '../../src/blk/uring-engine.js';

const N = Number(process.argv[2] ?? 50_000);
const which = process.argv[3] ?? 'both';
const FILE_SIZE = 64 << 20;
const BS = 4096;

function ctxSwitches(): number {
  let n = 0;
  for (const t of fs.readdirSync('/proc/self/task')) {
    const s = fs.readFileSync(`/proc/self/task/${t}/status`, 'utf8');
    for (const m of s.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)/gm)) n += Number(m[1]);
  }
  return n;
}

let seed = 12345;
function nextOffset(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return (seed % (FILE_SIZE / BS)) * BS;
}

async function measure(name: string, depth: number, read: (buf: Uint8Array, off: number) => Promise<number>): Promise<void> {
  const bufs = Array.from({ length: depth }, () => new Uint8Array(BS));
  const run = async (count: number) => {
    let issued = 0;
    const worker = async (b: Uint8Array) => {
      while (issued < count) {
        issued++;
        if ((await read(b, nextOffset())) !== BS) throw new Error('short read');
      }
    };
    await Promise.all(bufs.map(worker));
  };
  await run(Math.min(N, 5000)); // warm-up
  const cs0 = ctxSwitches();
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await run(N);
  const wall = Number(process.hrtime.bigint() - t0) / 1e3 / N;
  const c = process.cpuUsage(c0);
  const cs = (ctxSwitches() - cs0) / N;
  process.stdout.write(`${name.padEnd(9)} QD${String(depth).padEnd(3)} wall ${wall.toFixed(2)} µs/req  CPU ${((c.user + c.system) / N).toFixed(2)} µs/req (user ${(c.user / N).toFixed(2)}, system ${(c.system / N).toFixed(2)})  ctx switches ${cs.toFixed(3)}/req\n`);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-engine-profile-'));
const file = path.join(dir, 'img');
fs.writeFileSync(file, Buffer.alloc(FILE_SIZE, 0xa5));
try {
  if (which !== 'threads') {
    const fd = fs.openSync(file, 'r');
    const eng = UringEngine.create().acquire();
    const views: Uint8Array[][] = [];
    const one = (b: Uint8Array): Uint8Array[] => {
      // One reusable one-view list per buffer: the list is what the engine holds until completion.
      let v = views.find((l) => l[0] === b);
      if (!v) views.push((v = [b]));
      return v;
    };
    for (const d of [1, 32]) await measure('io_uring', d, (b, off) => eng.readv(fd, one(b), off));
    eng.release();
    fs.closeSync(fd);
  }
  if (which !== 'io_uring') {
    const fh = await fs.promises.open(file, 'r');
    for (const d of [1, 32]) await measure('threads', d, async (b, off) => (await fh.readv([b], off)).bytesRead);
    await fh.close();
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
