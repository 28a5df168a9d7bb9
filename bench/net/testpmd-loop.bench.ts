/**
 * Network throughput: DPDK testpmd (two net_virtio_user ports, macswap, --tx-first, loop topology: each port
 * echoes what it receives) driving frames through two vhostd ports on one switch; then, in the same run, the same
 * driver against DPDK's own vhost PMD (two net_vhost ports in io mode) as the reference backend.
 * Prints Mpps per port for both and the ratio. Asserts frames flowed before it reports.
 *
 * Placement on the 2-core machine: the driver forwards on core 0; the backend (vhostd, or the net_vhost
 * testpmd's forwarding lcore) runs on core 1.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { LCORES_BACKEND, LCORES_DRIVER, meanPps, startTestpmd, vhostVdev, virtioUserVdev, vhostSocketReady, type Testpmd } from '../../test/e2e/support/testpmd.js';
import { VhostdProcess } from '../../test/e2e/support/vhostd-process.js';
import { FULL } from '../support/proc.js';
import { report, type BenchRow } from '../support/report.js';

/** Seconds measured per run (quick 8, --full 20); the first two 1 s samples are ramp-up and not counted. */
const SECONDS = Number(process.env.BENCH_SECONDS ?? (FULL ? 20 : 8));
/** Frame sizes (bytes, without FCS); BENCH_FRAMES=64 runs one size. */
const FRAMES = (process.env.BENCH_FRAMES ?? '64,1500').split(',').map(Number);

function driver(prefix: string, sockA: string, sockB: string, FRAME: number): Testpmd {
  return startTestpmd({
    prefix,
    lcores: [...LCORES_DRIVER.lcores],
    mainLcore: LCORES_DRIVER.mainLcore,
    vdevs: [virtioUserVdev(0, sockA), virtioUserVdev(1, sockB)],
    forwardMode: 'macswap',
    txFirst: true,
    args: ['--port-topology=loop', `--txpkts=${FRAME}`],
    statsPeriodS: 1,
  });
}

async function measure(tp: Testpmd): Promise<number[]> {
  await tp.waitForSample((s) => s.ports.length === 2 && s.ports.every((p) => p.rxPackets > 0), 60_000);
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const samples = tp.samples();
  const final = await tp.stop();
  const total = final.ports.reduce((a, p) => a + p.rxPackets, 0);
  if (!(total > 0)) throw new Error('no frames were received: the benchmark is invalid');
  // Skip the first two samples (ramp-up).
  return [0, 1].map((port) => meanPps(samples, port, 'rxPps', 2) / 1e6);
}

async function vhostdRun(frame: number): Promise<number[]> {
  const v = new VhostdProcess('switch "s" {\n  mtu 1500\n}\nvm "a" {\n  interface { switch "s" }\n}\nvm "b" {\n  interface { switch "s" }\n}\n');
  await v.start();
  // Pin the daemon to core 1 (the driver forwards on core 0).
  await new Promise((r) => spawn('taskset', ['-a', '-p', '-c', '1', String(v.proc!.pid)], { stdio: 'ignore' }).on('exit', r));
  try {
    const mpps = await measure(driver('bench-vu-vhostd', v.socket('a'), v.socket('b'), frame));
    const st = await v.stats();
    if (!(st['a.net0'].device.rxFrames > 0 && st['b.net0'].device.rxFrames > 0)) throw new Error('vhostd counted no frames');
    return mpps;
  } finally {
    await v.stop();
    v.cleanup();
  }
}

async function dpdkRun(frame: number): Promise<number[]> {
  const dir = path.join('/tmp', `vhostd-bench-${process.pid}`);
  const { mkdirSync, rmSync } = await import('node:fs');
  mkdirSync(dir, { recursive: true });
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
    return await measure(driver('bench-vu-ref', a, b, frame));
  } finally {
    await backend.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows: BenchRow[] = [];
for (const frame of FRAMES) {
  const vhostd = await vhostdRun(frame);
  const ref = await dpdkRun(frame);
  for (const port of [0, 1]) {
    rows.push({
      bench: 'net/testpmd-macswap-loop',
      case: `frame=${frame} port=${port}`,
      unit: 'Mpps',
      value: Number(vhostd[port].toFixed(3)),
      gbps: Number(((vhostd[port] * 1e6 * frame * 8) / 1e9).toFixed(2)),
      reference: 'dpdk-vhost-pmd',
      referenceValue: Number(ref[port].toFixed(3)),
      ratio: Number((vhostd[port] / ref[port]).toFixed(3)),
    });
  }
}
report(rows);
process.stderr.write(
  `\nnet/testpmd-macswap-loop (testpmd virtio_user macswap, loop topology, --tx-first), ${SECONDS} s per run\n` +
    `frame  port  vhostd Mpps  Gbit/s  DPDK vhost PMD Mpps  ratio\n` +
    rows
      .map((r) => {
        const [f, p] = r.case.replace('frame=', '').split(' port=');
        return `${f.padStart(5)}  ${p.padEnd(4)}  ${String(r.value).padStart(11)}  ${String(r.gbps).padStart(6)}  ${String(r.referenceValue).padStart(19)}  ${String(r.ratio).padStart(5)}`;
      })
      .join('\n') +
    '\n',
);
