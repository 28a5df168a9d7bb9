/**
 * Network throughput: DPDK testpmd (two net_virtio_user ports, macswap, --tx-first, loop topology: each port
 * echoes what it receives) driving frames through three backends in the same run:
 * - vhostd: two ports on one switch;
 * - DPDK's vhost PMD: testpmd with two net_vhost ports in io mode (a cross-connect, no switching: the ceiling);
 * - Open vSwitch with DPDK: a netdev bridge with two dpdkvhostuserclient ports and the default NORMAL flow (a
 *   learning switch, what a vhostd user would otherwise run); the driver's ports are then servers (server=1).
 * Each figure is Mpps per port, the mean over a run's 1 s stats periods after ramp-up (single periods swing a lot
 * on a shared machine), averaged over several runs; the order of the backends rotates from run to run so none is
 * always first (or always last) after the others warmed the caches and the host. Asserts frames flowed through
 * each backend (its own counters) before it reports.
 *
 * Placement on the 2-core machine: the driver forwards on core 0; the backend (vhostd, the net_vhost testpmd's
 * forwarding lcore, or OVS's PMD thread and DPDK lcore) runs on core 1. OVS is started once and warmed up once
 * (its first connection builds its mempool, seconds on 4 KiB pages); between its runs it is frozen (SIGSTOP),
 * since its PMD thread busy-polls core 1 even with nothing connected, and its MAC table is flushed before each run.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OvsDpdk } from '../../test/e2e/support/ovs-dpdk.js';
import { LCORES_BACKEND, LCORES_DRIVER, meanPps, startTestpmd, vhostVdev, virtioUserVdev, vhostSocketReady, type Sample, type Testpmd } from '../../test/e2e/support/testpmd.js';
import { VhostdProcess } from '../../test/e2e/support/vhostd-process.js';
import { FULL } from '../support/proc.js';
import { report, type BenchRow } from '../support/report.js';
import { cpuNs } from './support/cpu-time.js';

/** Seconds measured per run after the first frames flowed (quick 6, --full 20). */
const SECONDS = Number(process.env.BENCH_SECONDS ?? (FULL ? 20 : 6));
/**
 * Seconds after the first frames before the window opens (frames and CPU are not counted). A backend's first pass
 * over the driver's mbuf pool is ramp-up, not steady state: with testpmd on 4 KiB pages (--no-huge) vhostd took
 * about 320,000 minor faults (first touch of each page, once per port mapping) in the first 2-3 s, none after.
 */
const WARMUP_S = Number(process.env.BENCH_WARMUP ?? 4);
/** Runs per frame size, each running every backend once (quick 3, --full 5). */
const RUNS = Number(process.env.BENCH_RUNS ?? (FULL ? 5 : 3));
/** Frame sizes (bytes, without FCS); BENCH_FRAMES=64 runs one size. */
const FRAMES = (process.env.BENCH_FRAMES ?? '64,1500').split(',').map(Number);
const BACKEND_CORE = 1;

type Backend = 'vhostd' | 'dpdk' | 'ovs';
const BACKENDS: Backend[] = ['vhostd', 'dpdk', 'ovs'];
const NAME: Record<Backend, string> = { vhostd: 'vhostd', dpdk: 'DPDK vhost PMD', ovs: 'OVS-DPDK' };

/** vhostd / anchor targets per frame size. */
const TARGETS: Record<number, Partial<Record<Exclude<Backend, 'vhostd'>, number>>> = { 64: { ovs: 1.0, dpdk: 0.5 }, 1500: { dpdk: 0.8 } };

const loopArgs = (frame: number) => ['--port-topology=loop', `--txpkts=${frame}`];

function driver(prefix: string, sockA: string, sockB: string, frame: number): Testpmd {
  return startTestpmd({
    prefix,
    lcores: [...LCORES_DRIVER.lcores],
    mainLcore: LCORES_DRIVER.mainLcore,
    vdevs: [virtioUserVdev(0, sockA), virtioUserVdev(1, sockB)],
    forwardMode: 'macswap',
    txFirst: true,
    args: loopArgs(frame),
    statsPeriodS: 1,
  });
}

/**
 * Mean Rx-pps per port over the periods that started inside the window: `opened` is the number of periods
 * printed when it opened (the one running then is skipped, it began during the warm-up).
 */
function steadyMeans(samples: Sample[], opened: number): { mpps: number[]; periods: number } {
  const first = samples.findIndex((s) => s.ports.length === 2 && s.ports.every((p) => p.rxPackets > 0));
  if (first < 0) throw new Error('no stats period with frames on both ports');
  const skip = Math.max(first, opened) + 1;
  const periods = samples.length - skip;
  if (periods < 1) throw new Error(`only ${samples.length - first} stats periods after the first frames`);
  return { mpps: [0, 1].map((port) => meanPps(samples, port, 'rxPps', skip) / 1e6), periods };
}

interface Measured {
  mpps: number[];
  periods: number;
  /**
   * CPU the backend process got over the window, in cores. A polling backend (vhost PMD, OVS) that gets well
   * under 1 shared its core with something else: the machine, not the backend, set that run's figure.
   */
  cpu: number;
}

/**
 * Waits for frames on both ports and WARMUP_S more, measures SECONDS (and the CPU time of the backend process `pid`), runs `check`
 * while the driver is still connected, stops.
 */
async function measure(tp: Testpmd, pid: number, check: () => Promise<void> = async () => {}): Promise<Measured> {
  let m: Measured;
  try {
    await tp.waitForSample((s) => s.ports.length === 2 && s.ports.every((p) => p.rxPackets > 0), 60_000);
    await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
    const opened = tp.samples().length;
    const c0 = cpuNs(pid);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const cpu = (cpuNs(pid) - c0) / 1e6 / (performance.now() - t0);
    m = { ...steadyMeans(tp.samples(), opened), cpu };
    await check();
  } catch (e) {
    await tp.stop();
    throw e;
  }
  const final = await tp.stop();
  if (!final.ports.every((p) => p.rxPackets > 0)) throw new Error('a port received no frames: the benchmark is invalid');
  return m;
}

async function vhostdRun(frame: number): Promise<Measured> {
  const v = new VhostdProcess('switch "s" {\n  mtu 1500\n}\nvm "a" {\n  interface { switch "s" }\n}\nvm "b" {\n  interface { switch "s" }\n}\n');
  await v.start();
  // Pin the daemon to the backend core (the driver forwards on core 0).
  await new Promise((r) => spawn('taskset', ['-a', '-p', '-c', String(BACKEND_CORE), String(v.proc!.pid)], { stdio: 'ignore' }).on('exit', r));
  try {
    const m = await measure(driver('bench-vu-vhostd', v.socket('a'), v.socket('b'), frame), v.proc!.pid!);
    const st = await v.stats();
    if (!(st['a.net0'].device.rxFrames > 0 && st['b.net0'].device.rxFrames > 0)) throw new Error('vhostd counted no frames');
    return m;
  } finally {
    await v.stop();
    v.cleanup();
  }
}

async function dpdkRun(frame: number): Promise<Measured> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-bench-'));
  const a = path.join(dir, 'a.sock');
  const b = path.join(dir, 'b.sock');
  const backend = startTestpmd({
    prefix: 'bench-vhost-ref',
    lcores: [...LCORES_BACKEND.lcores],
    mainLcore: LCORES_BACKEND.mainLcore,
    vdevs: [vhostVdev(0, a), vhostVdev(1, b)],
    forwardMode: 'io',
    statsPeriodS: 5,
  });
  try {
    await backend.waitForOutput(vhostSocketReady(a), 30_000);
    await backend.waitForOutput(vhostSocketReady(b), 30_000);
    return await measure(driver('bench-vu-ref', a, b, frame), backend.proc.pid!);
  } finally {
    await backend.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function ovsRun(ovs: OvsDpdk, frame: number): Promise<Measured> {
  await ovs.resume();
  try {
    await ovs.flushFdb();
    return await measure(ovs.driver('bench-vu-ovs', 'macswap', loopArgs(frame)), ovs.vswitchdPid(), async () => {
      const c = await Promise.all(['vu0', 'vu1'].map((p) => ovs.portStats(p)));
      if (!c.every((p) => p.rxPackets > 0 && p.txPackets > 0)) throw new Error(`OVS counted no frames: ${JSON.stringify(c)}`);
    });
  } finally {
    await ovs.pause();
  }
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const r3 = (x: number): number => Number(x.toFixed(3));

const ovs = new OvsDpdk({ prefix: 'bench-ovs', core: BACKEND_CORE, ports: ['vu0', 'vu1'] });
/** Per frame size and backend: the per-run means (Mpps per port, both ports averaged). */
const perRun = new Map<string, number[]>();
const periods = new Map<Backend, number[]>();
const cpus = new Map<Backend, number[]>();
const load0 = fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
try {
  await ovs.start();
  await ovs.warmUp();
  await ovs.pause();
  for (let run = 0; run < RUNS; run++) {
    const order = BACKENDS.map((_, i) => BACKENDS[(i + run) % BACKENDS.length]);
    for (const frame of FRAMES) {
      for (const b of order) {
        const m = b === 'vhostd' ? await vhostdRun(frame) : b === 'dpdk' ? await dpdkRun(frame) : await ovsRun(ovs, frame);
        const k = `${frame}/${b}`;
        perRun.set(k, [...(perRun.get(k) ?? []), mean(m.mpps)]);
        periods.set(b, [...(periods.get(b) ?? []), m.periods]);
        cpus.set(b, [...(cpus.get(b) ?? []), m.cpu]);
        if (process.env.BENCH_DEBUG) {
          process.stderr.write(`run ${run} ${frame} B ${NAME[b]}: ${m.mpps.map((x) => x.toFixed(3)).join(' / ')} Mpps (${m.periods} periods, ${m.cpu.toFixed(2)} cores)\n`);
        }
      }
    }
  }
} finally {
  await ovs.stop();
}

const load1 = fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
const cpuRange = (b: Backend) => `${NAME[b]} ${Math.min(...cpus.get(b)!).toFixed(2)}-${Math.max(...cpus.get(b)!).toFixed(2)}`;
const NOTE =
  'testpmd net_virtio_user (2 ports, macswap, loop topology, --tx-first) on core 0 against each backend on core 1: vhostd (one switch), ' +
  "DPDK's vhost PMD (io cross-connect) and Open vSwitch with DPDK (NORMAL learning bridge, dpdkvhostuserclient ports). " +
  `Mpps per port: mean over each run's 1 s stats periods after ramp-up, then over ${RUNS} runs with the backends' order rotating. ` +
  'Target = the ratio vhostd / anchor the data path aims for. ' +
  `This run: 1-min load average ${load0} before and ${load1} after on ${os.cpus().length} cores; CPU each backend process got per run, in cores: ` +
  `${BACKENDS.map(cpuRange).join(', ')} (a polling anchor well under 1 shared its core with other jobs: that run's figures are the machine's, not the backend's).`;

const rows: BenchRow[] = [];
const lines: string[] = [];
for (const frame of FRAMES) {
  const runs = (b: Backend) => perRun.get(`${frame}/${b}`)!;
  const vh = mean(runs('vhostd'));
  for (const anchor of ['dpdk', 'ovs'] as const) {
    const ref = mean(runs(anchor));
    const ratio = vh / ref;
    const target = TARGETS[frame]?.[anchor];
    rows.push({
      bench: 'net/testpmd-macswap-loop',
      case: `${frame} B vs ${NAME[anchor]}`,
      unit: 'Mpps',
      value: r3(vh),
      gbps: Number(((vh * 1e6 * frame * 8) / 1e9).toFixed(2)),
      reference: NAME[anchor],
      referenceValue: r3(ref),
      ratio: r3(ratio),
      ...(target !== undefined ? { target, met: ratio >= target } : {}),
      runs: runs('vhostd').map(r3),
      referenceRuns: runs(anchor).map(r3),
      cpu: cpus.get('vhostd')!.map((x) => Number(x.toFixed(2))),
      referenceCpu: cpus.get(anchor)!.map((x) => Number(x.toFixed(2))),
      note: NOTE,
    });
    const verdict = target === undefined ? '' : `  target >= ${target.toFixed(1)}x: ${ratio >= target ? 'met' : `MISSED (${((ratio / target) * 100).toFixed(0)}% of it)`}`;
    lines.push(
      `${String(frame).padStart(5)}  ${NAME[anchor].padEnd(14)}  ${vh.toFixed(3).padStart(11)}  ${ref.toFixed(3).padStart(11)}  ${ratio.toFixed(3).padStart(6)}x${verdict}` +
        `\n       runs: vhostd ${runs('vhostd').map((x) => x.toFixed(3)).join(' ')}; ${NAME[anchor]} ${runs(anchor).map((x) => x.toFixed(3)).join(' ')}`,
    );
  }
}
report(rows, { replaces: true });
const per = [...periods.entries()].map(([b, ps]) => `${NAME[b]} ${Math.min(...ps)}-${Math.max(...ps)}`).join(', ');
process.stderr.write(
  `\nnet/testpmd-macswap-loop (testpmd virtio_user macswap, loop topology, --tx-first), ${SECONDS} s per run, ${RUNS} runs, ` +
    `stats periods counted per run: ${per}; backend CPU per run (cores): ${BACKENDS.map(cpuRange).join(', ')}; load average ${load0} -> ${load1}\n` +
    `frame  anchor          vhostd Mpps  anchor Mpps  vhostd/anchor\n` +
    lines.join('\n') +
    '\n',
);
