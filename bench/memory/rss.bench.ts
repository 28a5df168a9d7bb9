/**
 * Memory. (a) Idle: vhostd's resident set (VmRSS, VmHWM from /proc/PID/status) and open fds with the
 * embedded default configuration (2 ports), with 64 net ports (16 vms x 4 interfaces over 4 switches), with 64
 * ports and 16 qcow2 disks of 1 GiB, and with the 16 disks alone; per-port and per-disk costs are differences of
 * those. The 16-disk row has a reference: qemu-storage-daemon idle with the same 16 images exported over
 * vhost-user-blk. Nothing is connected, so no guest memory is mapped; each daemon settles 1 s and the figure is the
 * median of samples over the next 2 s.
 *
 * (b) Leak check: CYCLES connect/disconnect cycles of the driver-side client (bench/memory/cycles.ts: a full
 * negotiation with SET_MEM_TABLE, rings started, close) over LANES ports at once. RSS and fds are sampled every
 * CYCLES/10 cycles; the first tenth is warm-up (JIT, heap sizing). Asserted before reporting: the daemon counted
 * exactly one connection per cycle and dropped none, each sample saw the sampling lane's rings started, the fd count
 * comes back to its value before the first cycle, and RSS growth after warm-up stays under 16 MiB.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createQcow2 } from '../../src/blk/qcow2/create.js';
import { DEFAULT_CONFIG_TEXT } from '../../src/config/default.js';
import { VhostdProcess } from '../../test/e2e/support/vhostd-process.js';
import { startQsd } from '../blk/qsd.js';
import { table } from '../support/harness.js';
import { FULL, fdCount, mib, pin, procMemory, type ProcMemory } from '../support/proc.js';
import { report, type BenchRow } from '../support/report.js';
import { runCycles } from './cycles.js';

const CYCLES = Number(process.env.BENCH_CYCLES ?? 100_000);
const LANES = Number(process.env.BENCH_CYCLE_LANES ?? 4);
const GROWTH_LIMIT_KIB = 16 * 1024;
const VMS = 16;
const IFACES = 4;
const SWITCHES = 4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sub(dir: string, name: string): string {
  fs.mkdirSync(path.join(dir, name), { recursive: true });
  return path.join(dir, name);
}

/** Idle footprint of `pid`: settle, then the median RSS of samples over 2 s (HWM and fds at the end). */
async function idle(pid: number): Promise<ProcMemory & { fds: number }> {
  await sleep(1000);
  const rss: number[] = [];
  for (let i = 0; i < 9; i++) {
    rss.push(procMemory(pid).rssKiB);
    await sleep(250);
  }
  rss.sort((a, b) => a - b);
  return { ...procMemory(pid), rssKiB: rss[4], fds: fdCount(pid) };
}

function config(opts: { nets: boolean; disks: string[] }): string {
  const out: string[] = [];
  if (opts.nets) for (let s = 0; s < SWITCHES; s++) out.push(`switch "s${s}" {\n    mtu 1500\n}`);
  for (let v = 0; v < VMS; v++) {
    const body: string[] = [];
    if (opts.nets) for (let i = 0; i < IFACES; i++) body.push(`    interface { switch "s${i % SWITCHES}" }`);
    if (opts.disks.length) body.push(`    disk "${opts.disks[v]}" format qcow2`);
    out.push(`vm "vm${v}" {\n${body.join('\n')}\n}`);
  }
  return out.join('\n') + '\n';
}

async function vhostdIdle(conf: string, dir: string, expectPorts: number): Promise<ProcMemory & { fds: number }> {
  const v = new VhostdProcess(conf, { dir });
  await v.start();
  try {
    const listening = v.logs.filter((l) => l.msg === 'listening').length;
    if (listening !== expectPorts) throw new Error(`vhostd listens on ${listening} sockets, expected ${expectPorts}`);
    return await idle(v.proc!.pid!);
  } finally {
    const code = await v.stop();
    if (code !== 0) throw new Error(`vhostd exited with ${code}: ${v.stderr}`);
  }
}

interface IdleResult {
  name: string;
  mem: ProcMemory & { fds: number };
  ref?: ProcMemory & { fds: number };
}

async function idleRows(dir: string): Promise<IdleResult[]> {
  const images: string[] = [];
  for (let i = 0; i < VMS; i++) {
    const img = path.join(dir, `d${i}.qcow2`);
    await createQcow2(img, { size: 1024 ** 3 });
    images.push(img);
  }
  const res: IdleResult[] = [];
  process.stderr.write('idle: default configuration...\n');
  res.push({ name: 'idle default config (2 ports)', mem: await vhostdIdle(DEFAULT_CONFIG_TEXT.replace('socket dir "run"', `socket dir "${sub(dir, 'def')}"`), sub(dir, 'def'), 2) });
  process.stderr.write('idle: 64 ports...\n');
  res.push({ name: 'idle 64 ports', mem: await vhostdIdle(config({ nets: true, disks: [] }), sub(dir, 'p64'), VMS * IFACES) });
  process.stderr.write('idle: 64 ports + 16 disks...\n');
  res.push({ name: 'idle 64 ports + 16 disks', mem: await vhostdIdle(config({ nets: true, disks: images }), sub(dir, 'p64d16'), VMS * IFACES + VMS) });
  process.stderr.write('idle: 16 disks, then qemu-storage-daemon with the same 16 images...\n');
  const disks = await vhostdIdle(config({ nets: false, disks: images }), sub(dir, 'd16'), VMS);
  const qsd = await startQsd(images.map((image, i) => ({ image, format: 'qcow2', socket: path.join(dir, `q${i}.sock`) })));
  let ref: ProcMemory & { fds: number };
  try {
    ref = await idle(qsd.pid);
  } finally {
    await qsd.stop();
  }
  res.push({ name: 'idle 16 disks', mem: disks, ref });
  return res;
}

interface CycleResult {
  samples: ({ done: number; fds: number } & ProcMemory)[];
  start: { rssKiB: number; fds: number };
  end: { rssKiB: number; hwmKiB: number; fds: number };
  refused: number;
  seconds: number;
}

async function cycleRun(dir: string): Promise<CycleResult> {
  const vms = Array.from({ length: LANES }, (_, i) => `vm "c${i}" {\n    interface { switch "s" }\n}`).join('\n');
  const v = new VhostdProcess(`switch "s" {\n    mtu 1500\n}\n${vms}\n`, { dir });
  await v.start();
  pin(v.proc!.pid!, 1);
  const pid = v.proc!.pid!;
  // Two log lines per cycle: keep only what stats() needs, fail on any error line.
  const prune = () => {
    const bad = v.logs.find((l) => l.level >= 50);
    if (bad) throw new Error(`vhostd logged an error: ${JSON.stringify(bad)}`);
    const keep = v.logs.filter((l) => l.msg === 'listening');
    v.logs.length = 0;
    v.logs.push(...keep);
  };
  try {
    const start = await idle(pid);
    const samples: CycleResult['samples'] = [];
    const t0 = process.hrtime.bigint();
    const every = Math.max(1, Math.round(CYCLES / 10));
    const p = await runCycles({
      sockets: Array.from({ length: LANES }, (_, i) => v.socket(`c${i}`)),
      total: CYCLES,
      every,
      onSample: async (prog, socket) => {
        prune();
        const port = path.basename(socket, '.sock');
        if (!(await ringsStarted(v, port))) throw new Error(`${port}: rings not started while its client is connected`);
        const s = { done: prog.done, ...procMemory(pid), fds: fdCount(pid) };
        samples.push(s);
        process.stderr.write(`  ${s.done} cycles: RSS ${mib(s.rssKiB)} MiB (anon ${mib(s.anonKiB)}, shmem ${mib(s.shmemKiB)}), ${s.fds} fds, ${prog.refused} refused+retried\n`);
      },
    });
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    // The daemon handles the last closes asynchronously: wait until every port is free again.
    let st = await v.stats();
    for (let i = 0; i < 100 && Object.values(st).some((s) => s.connected); i++) {
      await sleep(50);
      st = await v.stats();
    }
    prune();
    const conns = Object.values(st).reduce((a, s) => a + (s as unknown as { connections: number }).connections, 0);
    const dropped = Object.values(st).reduce((a, s) => a + (s as unknown as { dropped: number }).dropped, 0);
    if (conns !== p.done) throw new Error(`vhostd counted ${conns} connections for ${p.done} cycles`);
    if (dropped !== 0) throw new Error(`vhostd dropped ${dropped} connections with an error`);
    await sleep(500);
    const endMem = procMemory(pid);
    return { samples, start, end: { rssKiB: endMem.rssKiB, hwmKiB: endMem.hwmKiB, fds: fdCount(pid) }, refused: p.refused, seconds };
  } finally {
    const code = await v.stop();
    if (code !== 0) throw new Error(`vhostd exited with ${code}: ${v.stderr}`);
  }
}

/** True when `port` has a front-end with both rings started and enabled, from the daemon's own counters. */
async function ringsStarted(v: VhostdProcess, port: string): Promise<boolean> {
  const st = (await v.stats()) as unknown as Record<string, { connected: boolean; vrings: { started: boolean; enabled: boolean }[] }>;
  const s = st[port];
  return !!s && s.connected && s.vrings.length === 2 && s.vrings.every((r) => r.started && r.enabled);
}

pin(process.pid, 0);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-bench-rss-'));
let idleRes: IdleResult[];
let cyc: CycleResult;
const ONLY = process.env.BENCH_RSS_ONLY; // 'cycles' skips the idle part (trial runs; nothing is reported then)
try {
  idleRes = ONLY === 'cycles' ? [] : await idleRows(dir);
  process.stderr.write(`cycles: ${CYCLES} connect/disconnect cycles over ${LANES} ports...\n`);
  cyc = await cycleRun(sub(dir, 'cyc'));
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

if (ONLY === 'cycles') process.exit(0);
const warm = cyc.samples[0];
const growthKiB = cyc.end.rssKiB - warm.rssKiB;
if (cyc.end.fds !== cyc.start.fds) throw new Error(`fd count ${cyc.end.fds} after the cycles, ${cyc.start.fds} before: a descriptor leak`);
if (growthKiB >= GROWTH_LIMIT_KIB) throw new Error(`RSS grew by ${mib(growthKiB)} MiB after warm-up over ${CYCLES - warm.done} cycles: a leak`);

const [def, p64, p64d16] = idleRes;
const perPortKiB = (p64.mem.rssKiB - def.mem.rssKiB) / (VMS * IFACES - 2);
const perDiskKiB = (p64d16.mem.rssKiB - p64.mem.rssKiB) / VMS;
const note =
  'VmRSS/VmHWM from /proc/PID/status and the number of open fds of the vhostd process. Idle rows: nothing connected, median of 9 samples after 1 s. ' +
  `Cycles: the driver-side client negotiates (SET_MEM_TABLE, rings started) and disconnects, ${LANES} ports at once; growth is measured from the end of the first tenth (warm-up): the JS heap grows to its working size during the first cycles and keeps it.`;
const rows: BenchRow[] = [
  ...idleRes.map((r) => ({
    bench: 'memory/rss',
    case: `${r.name} RSS`,
    unit: 'MiB',
    value: mib(r.mem.rssKiB),
    lowerIsBetter: true,
    ...(r.ref ? { reference: 'qemu-storage-daemon', referenceValue: mib(r.ref.rssKiB), ratio: Number((r.mem.rssKiB / r.ref.rssKiB).toFixed(3)), referenceFds: r.ref.fds } : {}),
    hwmMiB: mib(r.mem.hwmKiB),
    fds: r.mem.fds,
    note,
  })),
  { bench: 'memory/rss', case: 'per net port (64 ports vs default)', unit: 'KiB', value: Math.round(perPortKiB), lowerIsBetter: true, note },
  { bench: 'memory/rss', case: 'per qcow2 disk (64 ports + 16 disks vs 64 ports)', unit: 'KiB', value: Math.round(perDiskKiB), lowerIsBetter: true, note },
  { bench: 'memory/rss', case: `before connect/disconnect cycles RSS (${LANES} ports)`, unit: 'MiB', value: mib(cyc.start.rssKiB), lowerIsBetter: true, fds: cyc.start.fds, note },
  { bench: 'memory/rss', case: 'after connect/disconnect cycles RSS', unit: 'MiB', value: mib(cyc.end.rssKiB), lowerIsBetter: true, hwmMiB: mib(cyc.end.hwmKiB), fds: cyc.end.fds, cycles: CYCLES, note },
  { bench: 'memory/rss', case: 'RSS growth over the cycles after warm-up', unit: 'MiB', value: mib(growthKiB), lowerIsBetter: true, limitMiB: GROWTH_LIMIT_KIB / 1024, fromCycle: warm.done, cycles: CYCLES, note },
  { bench: 'memory/rss', case: 'connect/disconnect cycles per second', unit: 'cycles/s', value: Math.round(CYCLES / cyc.seconds), refused: cyc.refused, note },
];
report(rows);
process.stderr.write(
  table(
    'memory/rss: vhostd resident set (MiB), idle and around connect/disconnect cycles',
    ['case', 'RSS MiB', 'HWM MiB', 'fds', 'qsd RSS MiB'],
    idleRes.map((r) => [r.name, mib(r.mem.rssKiB), mib(r.mem.hwmKiB), r.mem.fds, r.ref ? mib(r.ref.rssKiB) : '']),
  ) +
    table(
      `cycles: ${CYCLES} over ${LANES} ports in ${cyc.seconds.toFixed(1)} s (${cyc.refused} early reconnects refused and retried); before: RSS ${mib(cyc.start.rssKiB)} MiB, ${cyc.start.fds} fds`,
      ['cycles', 'RSS MiB', 'fds'],
      [...cyc.samples.map((s) => [s.done, mib(s.rssKiB), s.fds]), ['end (idle)', mib(cyc.end.rssKiB), cyc.end.fds]],
    ) +
    `per net port ${Math.round(perPortKiB)} KiB, per qcow2 disk ${Math.round(perDiskKiB)} KiB; growth after warm-up ${mib(growthKiB)} MiB (limit ${GROWTH_LIMIT_KIB / 1024} MiB)\n`,
);
process.exit(0);
