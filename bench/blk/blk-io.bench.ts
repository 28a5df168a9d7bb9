/**
 * Block I/O: the driver-side client (bench/blk/slot-driver.ts over test/helpers/fake-blk-driver.ts, real vhost-user
 * sockets and memfd guest memory) against vhostd, then in the same run on the same image file against
 * qemu-storage-daemon's vhost-user-blk export; never both on one image at once.
 *
 * Rows, on raw and on a fully allocated qcow2 (same contents): 4 KiB random read and write at QD1 (latency
 * p50/p99/p99.9 µs from an HDR histogram, perf_hooks.createHistogram, closed loop: submit-to-completion) and at QD32
 * (IOPS); 64 KiB sequential read and write at QD8 (MB/s = 1e6 B/s). On an empty qcow2: 4 KiB random writes, each into
 * a cluster not yet allocated (QD1 latency and QD32 IOPS), and 64 KiB sequential writes (MB/s).
 *
 * Checks before anything is reported: every request completes with status OK; every sector read carries its own
 * sector number (the images are stamped: each 512-byte sector starts with its number and a write generation, the
 * rest is 0xa5; writes keep that layout); after each write row the last 64 writes are read back with their generation;
 * the completion count equals the submission count; vhostd's counters show no errors; allocated images pass
 * `qemu-img check` after each backend.
 *
 * Backends: vhostd on its io_uring engine (required: VHOSTD_DISK_ENGINE=io_uring), vhostd on the node:fs thread-pool
 * fallback (VHOSTD_DISK_ENGINE=threads, the engine before io_uring), and qsd with aio=io_uring (its best) and
 * aio=threads (its default). BENCH_RUNS runs (default 3); each run rotates which backend goes first, with `sync`
 * between backends; a row's value is the median over the runs, and the spread (max - min) / median is printed.
 * The machine is shared: only values from the same run compare.
 *
 * Placement on the 2-core machine: this driver on core 0, the backend on core 1.
 * BENCH_SECONDS per row (default 2 s quick, 10 s with --full), after a 0.3 s warm-up.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHistogram } from 'node:perf_hooks';
import { VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../src/blk/virtio-blk-defs.js';
import { VhostdProcess } from '../../test/e2e/support/vhostd-process.js';
import { report, type BenchRow } from '../support/report.js';
import { table } from '../support/harness.js';
import { FULL, pin } from '../support/proc.js';
import { startQsd, type QsdAio } from './qsd.js';
import { SlotBlkDriver, type Slot } from './slot-driver.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? (FULL ? 10 : 2));
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const WARMUP_S = 0.3;
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const IMAGE_SIZE = 256 * MiB;
const EMPTY_SIZE = 16 * GiB;
const CLUSTER = 64 * KiB;
const MAX_DATA = 64 * KiB;
const DEPTH = 32;
const FILL = 0xa5;

type Metric = { name: string; unit: string; value: number; lowerIsBetter: boolean };
interface RowSpec {
  name: string;
  kind: 'read' | 'write';
  bs: number;
  depth: number;
  /** rand: uniform over the disk; seq: from `seqStart` on, wrapping; alloc: one write per not-yet-allocated cluster of [lo, hi). */
  pattern: 'rand' | 'seq' | 'alloc';
  lo?: number;
  hi?: number;
}

// ------------------------------------------------------------------------------------------------ images

function stampImage(size: number): Buffer {
  const b = Buffer.alloc(size, FILL);
  for (let s = 0; s < size / 512; s++) {
    b.writeUInt32LE(s >>> 0, s * 512);
    b.writeUInt32LE(Math.floor(s / 2 ** 32), s * 512 + 4);
    b.writeUInt32LE(0, s * 512 + 8);
    b.writeUInt32LE(0, s * 512 + 12);
  }
  return b;
}

function stampSectors(slot: Slot, sector: number, len: number, gen: number): void {
  slot.data.fill(FILL, 0, len);
  const dv = slot.dataDv;
  for (let o = 0, s = sector; o < len; o += 512, s++) {
    dv.setUint32(o, s >>> 0, true);
    dv.setUint32(o + 4, Math.floor(s / 2 ** 32), true);
    dv.setUint32(o + 8, gen, true);
    dv.setUint32(o + 12, 0, true);
  }
}

/** Throws unless every sector in the slot's data carries its number (and `gen`, when given). */
function checkSectors(slot: Slot, sector: number, len: number, gen?: number): void {
  const dv = slot.dataDv;
  for (let o = 0, s = sector; o < len; o += 512, s++) {
    if (dv.getUint32(o, true) !== s >>> 0 || dv.getUint32(o + 4, true) !== Math.floor(s / 2 ** 32) || slot.data[o + 511] !== FILL)
      throw new Error(`sector ${s}: read returned data of sector ${dv.getUint32(o, true) + dv.getUint32(o + 4, true) * 2 ** 32} (last byte 0x${slot.data[o + 511].toString(16)})`);
    if (gen !== undefined && dv.getUint32(o + 8, true) !== gen) throw new Error(`sector ${s}: generation ${dv.getUint32(o + 8, true)}, expected ${gen}`);
  }
}

// ------------------------------------------------------------------------------------------------ workload

let generation = 0;
let rngState = 0x9e3779b9;
function rand32(): number {
  rngState ^= rngState << 13;
  rngState >>>= 0;
  rngState ^= rngState >>> 17;
  rngState ^= rngState << 5;
  rngState >>>= 0;
  return rngState;
}

interface RowResult {
  ops: number;
  bytes: number;
  seconds: number;
  hist: ReturnType<typeof createHistogram>;
}

/** Where alloc rows have got to (per backend run): the next permutation index per region. */
type AllocCursor = Map<string, number>;

async function runPhase(drv: SlotBlkDriver, spec: RowSpec, seconds: number, gen: number, capacity: number, alloc: AllocCursor, recent: { sector: number; len: number }[] | null): Promise<RowResult> {
  const hist = createHistogram();
  const type = spec.kind === 'read' ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
  const blocks = Math.floor(capacity / spec.bs);
  const spb = spec.bs / 512;
  let seq = 0;
  const allocKey = `${spec.lo}-${spec.hi}`;
  let allocIdx = alloc.get(allocKey) ?? 0;
  const nClusters = spec.pattern === 'alloc' ? (spec.hi! - spec.lo!) / CLUSTER : 0;
  let exhausted = false;
  const nextSector = (): number => {
    if (spec.pattern === 'rand') return (rand32() % blocks) * spb;
    if (spec.pattern === 'seq') {
      const s = seq * spb;
      seq = (seq + 1) % blocks;
      return s;
    }
    // A permutation of the region's clusters (odd multiplier modulo a power of two), a random 4 KiB block inside.
    const c = (allocIdx * 40503 + 7) % nClusters;
    allocIdx++;
    if (allocIdx >= nClusters) exhausted = true;
    return (spec.lo! + c * CLUSTER + (rand32() % (CLUSTER / spec.bs)) * spec.bs) / 512;
  };
  let ops = 0;
  let submitted = 0;
  let failure: Error | null = null;
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  const t0 = process.hrtime.bigint();
  let tEnd = t0;
  const issue = (slot: Slot, kick: boolean): void => {
    const sector = nextSector();
    if (type === VIRTIO_BLK_T_OUT) stampSectors(slot, sector, spec.bs, gen);
    submitted++;
    drv.submit(slot, type, sector, spec.bs, kick);
  };
  const done = new Promise<void>((resolve) => {
    drv.onComplete = (slot, status, usedLen) => {
      const now = process.hrtime.bigint();
      try {
        if (status !== 0) throw new Error(`${spec.name}: status ${status} for sector ${slot.sector} (used.len ${usedLen})`);
        if (type === VIRTIO_BLK_T_IN) checkSectors(slot, slot.sector, slot.len);
        else if (recent) {
          recent.push({ sector: slot.sector, len: slot.len });
          if (recent.length > 64) recent.shift();
        }
        hist.record(Math.max(1, Number(now - slot.t0)));
        ops++;
        if (now < deadline && !exhausted && !failure) issue(slot, true);
      } catch (e) {
        failure ??= e as Error;
      }
      if (drv.inFlight === 0) {
        tEnd = now;
        resolve();
      }
    };
  });
  for (let i = 0; i < spec.depth; i++) issue(drv.slots[i], false);
  drv.kickIfNeeded();
  // Native watchers do not keep the loop alive: a timer does, and bounds the wait.
  const keep = setInterval(() => {
    if (process.hrtime.bigint() > deadline + 10_000_000_000n) failure ??= new Error(`${spec.name}: ${drv.inFlight} requests not completed 10 s after the end`);
  }, 100);
  let stuck: NodeJS.Timeout | undefined;
  await Promise.race([done, new Promise<void>((_, rej) => (stuck = setTimeout(() => rej(new Error(`${spec.name}: stuck with ${drv.inFlight} in flight (${drv.ringState()})`)), seconds * 1000 + 15_000)))]);
  clearTimeout(stuck);
  clearInterval(keep);
  alloc.set(allocKey, allocIdx);
  if (failure) throw failure;
  if (ops !== submitted) throw new Error(`${spec.name}: ${submitted} submitted, ${ops} completed`);
  return { ops, bytes: ops * spec.bs, seconds: Number(tEnd - t0) / 1e9, hist };
}

/** One request on slot 0, awaited. */
async function oneRequest(drv: SlotBlkDriver, type: number, sector: number, len: number): Promise<Slot> {
  const slot = drv.slots[0];
  const p = new Promise<number>((resolve) => (drv.onComplete = (_s, status) => resolve(status)));
  drv.submit(slot, type, sector, len);
  const keep = setInterval(() => {}, 100);
  const status = await Promise.race([p, new Promise<number>((_, rej) => setTimeout(() => rej(new Error('request not completed within 10 s')), 10_000).unref())]);
  clearInterval(keep);
  if (status !== 0) throw new Error(`request type ${type} at ${sector}: status ${status}`);
  return slot;
}

async function runRow(drv: SlotBlkDriver, spec: RowSpec, capacity: number, alloc: AllocCursor): Promise<Metric[]> {
  const gen = ++generation;
  await runPhase(drv, spec, WARMUP_S, gen, capacity, alloc, null);
  const recent = spec.kind === 'write' ? ([] as { sector: number; len: number }[]) : null;
  const r = await runPhase(drv, spec, SECONDS, gen, capacity, alloc, recent);
  if (recent) {
    if (recent.length === 0) throw new Error(`${spec.name}: no writes`);
    for (const w of recent) checkSectors(await oneRequest(drv, VIRTIO_BLK_T_IN, w.sector, w.len), w.sector, w.len, gen);
    await oneRequest(drv, VIRTIO_BLK_T_FLUSH, 0, 0);
  }
  const iops = r.ops / r.seconds;
  if (spec.depth === 1)
    return [
      { name: 'p50', unit: 'µs', value: r.hist.percentile(50) / 1e3, lowerIsBetter: true },
      { name: 'p99', unit: 'µs', value: r.hist.percentile(99) / 1e3, lowerIsBetter: true },
      { name: 'p99.9', unit: 'µs', value: r.hist.percentile(99.9) / 1e3, lowerIsBetter: true },
      { name: 'IOPS', unit: 'IOPS', value: iops, lowerIsBetter: false },
    ];
  if (spec.bs === 4096) return [{ name: 'IOPS', unit: 'IOPS', value: iops, lowerIsBetter: false }];
  return [{ name: 'MB/s', unit: 'MB/s', value: r.bytes / r.seconds / 1e6, lowerIsBetter: false }];
}

// ------------------------------------------------------------------------------------------------ backends

interface Backend {
  socket: string;
  /** Checks after the rows (before stop), then stops. */
  finish(): Promise<void>;
}

async function startVhostd(image: string, format: string, dir: string, engine: 'io_uring' | 'threads'): Promise<Backend> {
  const v = new VhostdProcess(`vm "b" {\n    disk "${image}" format ${format}\n}\n`, { dir, env: { VHOSTD_DISK_ENGINE: engine } });
  await v.start();
  pin(v.proc!.pid!, 1);
  return {
    socket: path.join(dir, 'b.disk0.sock'),
    async finish() {
      try {
        const dev = (await v.stats())['b.disk0'].device;
        if (dev.badChain + dev.badRequest + dev.unsupported + dev.ioErrors !== 0) throw new Error(`vhostd counted errors: ${JSON.stringify(dev)}`);
        if (!(dev.writes > 0)) throw new Error('vhostd counted no writes');
      } finally {
        const code = await v.stop();
        if (code !== 0) throw new Error(`vhostd exited with ${code}: ${v.stderr}${v.tail()}`);
      }
    },
  };
}

async function startQsdBackend(image: string, format: string, dir: string, aio: QsdAio): Promise<Backend> {
  const socket = path.join(dir, 'qsd.sock');
  const qsd = await startQsd([{ image, format, socket }], { core: 1, aio });
  return { socket, finish: () => qsd.stop() };
}

async function connect(socket: string, capacity: number): Promise<SlotBlkDriver> {
  const drv = new SlotBlkDriver({ socket, depth: DEPTH, maxData: MAX_DATA });
  await drv.realize();
  await drv.start();
  const cap = new DataView(drv.config.buffer, drv.config.byteOffset).getBigUint64(0, true);
  if (cap !== BigInt(capacity / 512)) throw new Error(`capacity ${cap} sectors, expected ${capacity / 512}`);
  return drv;
}

// ------------------------------------------------------------------------------------------------ main

const ALLOCATED_ROWS: RowSpec[] = [
  { name: '4K randread QD1', kind: 'read', bs: 4096, depth: 1, pattern: 'rand' },
  { name: '4K randwrite QD1', kind: 'write', bs: 4096, depth: 1, pattern: 'rand' },
  { name: '4K randread QD32', kind: 'read', bs: 4096, depth: 32, pattern: 'rand' },
  { name: '4K randwrite QD32', kind: 'write', bs: 4096, depth: 32, pattern: 'rand' },
  { name: '64K seqread QD8', kind: 'read', bs: 64 * KiB, depth: 8, pattern: 'seq' },
  { name: '64K seqwrite QD8', kind: 'write', bs: 64 * KiB, depth: 8, pattern: 'seq' },
];
const ALLOC_ROWS: RowSpec[] = [
  { name: '4K alloc-write QD1', kind: 'write', bs: 4096, depth: 1, pattern: 'alloc', lo: 8 * GiB, hi: 10 * GiB },
  { name: '4K alloc-write QD32', kind: 'write', bs: 4096, depth: 32, pattern: 'alloc', lo: 10 * GiB, hi: 16 * GiB },
  { name: '64K seqwrite QD8', kind: 'write', bs: 64 * KiB, depth: 8, pattern: 'seq' },
];

/** The backends of one run, in the order of the first run (later runs rotate it). */
const ALL_BACKENDS = ['vhostd', 'vhostd-threads', 'qsd-io_uring', 'qsd-threads'] as const;
type BackendName = (typeof ALL_BACKENDS)[number];
/** BENCH_BACKENDS=vhostd,qsd-io_uring runs a subset (trials; the doc rows need all four). */
const BACKENDS: readonly BackendName[] = process.env.BENCH_BACKENDS ? ALL_BACKENDS.filter((b) => process.env.BENCH_BACKENDS!.split(',').includes(b)) : ALL_BACKENDS;
const LABEL: Record<BackendName, string> = {
  vhostd: 'vhostd (io_uring)',
  'vhostd-threads': 'vhostd (threads)',
  'qsd-io_uring': 'qsd aio=io_uring',
  'qsd-threads': 'qsd aio=threads',
};

async function runBackend(which: BackendName, image: string, format: string, dir: string, rows: RowSpec[], capacity: number): Promise<Metric[][]> {
  const be =
    which === 'vhostd' ? await startVhostd(image, format, dir, 'io_uring')
    : which === 'vhostd-threads' ? await startVhostd(image, format, dir, 'threads')
    : await startQsdBackend(image, format, dir, which === 'qsd-io_uring' ? 'io_uring' : 'threads');
  const out: Metric[][] = [];
  let drv: SlotBlkDriver | null = null;
  try {
    drv = await connect(be.socket, capacity);
    const alloc: AllocCursor = new Map();
    for (const r of rows) out.push(await runRow(drv, r, capacity, alloc));
  } finally {
    drv?.close();
    await be.finish();
  }
  if (format === 'qcow2') execFileSync('qemu-img', ['check', image], { stdio: 'pipe' });
  return out;
}

/** Per image, row and metric: every backend's values over the runs. */
interface Series {
  image: string;
  row: string;
  metric: Metric;
  values: Record<BackendName, number[]>;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function spread(xs: number[]): number {
  return (Math.max(...xs) - Math.min(...xs)) / median(xs);
}

async function main(): Promise<void> {
  pin(process.pid, 0);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-bench-blk-'));
  const series = new Map<string, Series>();
  const collect = (imageName: string, rows: RowSpec[], which: BackendName, v: Metric[][]) =>
    rows.forEach((r, i) =>
      v[i].forEach((m) => {
        const key = `${imageName}\u0000${r.name}\u0000${m.name}`;
        let sr = series.get(key);
        if (!sr) series.set(key, (sr = { image: imageName, row: r.name, metric: m, values: { vhostd: [], 'vhostd-threads': [], 'qsd-io_uring': [], 'qsd-threads': [] } }));
        sr.values[which].push(m.value);
      }),
    );
  const settle = () => execFileSync('sync');
  try {
    const raw = path.join(dir, 'disk.raw');
    fs.writeFileSync(raw, stampImage(IMAGE_SIZE));
    const qcow = path.join(dir, 'disk.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow]);
    const empty = path.join(dir, 'empty.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', empty, String(EMPTY_SIZE)]);
    for (let run = 0; run < RUNS; run++) {
      const order = BACKENDS.map((_, i) => BACKENDS[(i + run) % BACKENDS.length]!);
      for (const [name, img, fmt] of [['raw', raw, 'raw'], ['qcow2', qcow, 'qcow2']] as const) {
        for (const which of order) {
          process.stderr.write(`run ${run + 1}/${RUNS} ${name}: ${LABEL[which]}...\n`);
          settle();
          collect(name, ALLOCATED_ROWS, which, await runBackend(which, img, fmt, dir, ALLOCATED_ROWS, IMAGE_SIZE));
        }
      }
      // Allocating writes: each backend gets its own copy of the same empty image.
      for (const which of order) {
        process.stderr.write(`run ${run + 1}/${RUNS} empty qcow2: ${LABEL[which]}...\n`);
        const img = path.join(dir, `empty-${which}.qcow2`);
        fs.copyFileSync(empty, img);
        settle();
        collect('qcow2 empty', ALLOC_ROWS, which, await runBackend(which, img, 'qcow2', dir, ALLOC_ROWS, EMPTY_SIZE));
        fs.rmSync(img);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const dig = (x: number) => (x >= 1000 ? x.toFixed(0) : x >= 100 ? x.toFixed(1) : x.toFixed(2));
  const all = [...series.values()];
  const maxSpread = (b: BackendName) => Math.max(...all.map((sr) => spread(sr.values[b])));
  const LABELS = BACKENDS.map((b) => LABEL[b]);
  const note =
    `Backends: ${LABELS.join(', ')} (vhostd's engine set by VHOSTD_DISK_ENGINE, qemu-storage-daemon's by the file driver's aio option). ` +
    `Median of ${RUNS} runs of ${SECONDS} s per row; each run rotates which backend goes first, with sync between backends; largest spread (max - min) / median over the rows: ` +
    BACKENDS.map((b) => `${LABEL[b]} ${(maxSpread(b) * 100).toFixed(0)}%`).join(', ') +
    '. The machine was shared with other jobs: compare within a row only.';
  const rows: BenchRow[] = [];
  const push = (sr: Series, ref: BackendName) => {
    const v = median(sr.values.vhostd);
    const r = median(sr.values[ref]);
    rows.push({
      bench: 'blk/io',
      case: `${sr.image} ${sr.row} (vs ${LABEL[ref]}) ${sr.metric.name}`,
      unit: sr.metric.unit,
      value: Number(dig(v)),
      reference: LABEL[ref],
      referenceValue: Number(dig(r)),
      ratio: Number((v / r).toFixed(3)),
      lowerIsBetter: sr.metric.lowerIsBetter,
      seconds: SECONDS,
      runs: RUNS,
      spread: Number(spread(sr.values.vhostd).toFixed(3)),
      referenceSpread: Number(spread(sr.values[ref]).toFixed(3)),
      note,
    });
  };
  const ran = (b: BackendName) => BACKENDS.includes('vhostd') && BACKENDS.includes(b);
  // One set of rows per reference; the case says which (the doc's table has one reference column). The metric stays
  // last, so the doc groups percentiles into the latency chart.
  for (const ref of ['qsd-io_uring', 'qsd-threads', 'vhostd-threads'] as const) if (ran(ref)) for (const sr of all) push(sr, ref);
  report(rows);
  process.stderr.write(
    table(
      `blk/io: driver-side client on core 0, backend on core 1; ${SECONDS} s per row, median of ${RUNS} runs (spread = (max - min) / median); ratios = vhostd (io_uring) / other`,
      ['image', 'row', 'metric', ...BACKENDS.map((b) => LABEL[b]), 'spread', '/qsd io_uring', '/qsd threads', '/vhostd threads'],
      all.map((sr) => {
        const m = (b: BackendName) => median(sr.values[b]);
        return [
          sr.image,
          sr.row,
          `${sr.metric.name} ${sr.metric.unit === sr.metric.name ? '' : sr.metric.unit}`.trim(),
          ...BACKENDS.map((b) => dig(m(b))),
          BACKENDS.map((b) => `${(spread(sr.values[b]) * 100).toFixed(0)}%`).join('/'),
          (m('vhostd') / m('qsd-io_uring')).toFixed(2),
          (m('vhostd') / m('qsd-threads')).toFixed(2),
          (m('vhostd') / m('vhostd-threads')).toFixed(2),
        ];
      }),
    ),
  );
}

await main();
process.exit(0);
