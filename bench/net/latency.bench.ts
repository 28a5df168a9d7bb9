/**
 * Network latency: ping-pong round trips through one vhostd switch hop, EVENT_IDX on and off,
 * closed loop and open loop, against DPDK's vhost PMD echoing on one port (the anchor), in the same run.
 *
 * - Client A (bench/net/support/pingpong.ts): the project's driver-side virtio-net client in this process,
 *   event-driven (sleeps on its RX call eventfd, never polls), frames carry a sequence number; every reply is
 *   checked (right sequence, in order, MACs swapped) before anything is reported. RTTs go into
 *   perf_hooks.createHistogram (ns): p50, p90, p99, p99.9, max.
 * - vhostd case: A → vhostd port a → switch → port b → reflector B → back. B is DPDK testpmd with one
 *   net_virtio_user port in macswap, loop topology. Chosen over a second event-driven Node client because the
 *   anchor's echo is DPDK's polling macswap too: with a polling reflector both cases share the client and the
 *   echo code, and the difference is vhostd (two switch traversals, each a kick/wakeup in vhostd) against
 *   the vhost PMD's single polled echo. A Node reflector would add its own wakeup (~10 µs) to vhostd's figure.
 * - Anchor: A → testpmd `--vdev net_vhost0` in macswap mode, one port, loop topology → back to A.
 * - EVENT_IDX on/off is what A negotiates (virtio_user B never negotiates it, docs/protocol.md §4).
 * - Poll mode (vhostd's opt-in `poll` in the switch block: the switch busy-polls its rings instead of sleeping on
 *   kicks), EVENT_IDX on, against the same DPDK run. When the daemon does not accept the keyword (checked with
 *   `vhostd -n`), those rows say "poll mode: not available" instead of a figure.
 * - Targets (ratio vhostd / DPDK, closed loop): event-driven p50 <= 2 and p99 <= 3; poll mode p50 <= 1.2.
 * - Closed loop: one frame in flight. Open loop: a fixed rate (2000/s, far below saturation) from a timer
 *   schedule (a worker thread sleeping until each intended send time), latency measured from the intended
 *   send time so coordinated omission cannot hide stalls; the client's own send lag is printed alongside.
 *   vhostd itself reads no clock.
 *
 * Placement on the 2-core machine: DPDK's forwarding lcore busy-polls core 0 (the reflector B, or the vhost PMD
 * anchor), its main lcore sleeps on core 1. This process (A, and its timer thread) and vhostd are pinned to
 * core 1 (taskset): both are event-driven and take turns within a round trip. In the anchor A has core 1 alone,
 * so the vhostd figure also carries the cost of sharing a core with the client (in poll mode too: vhostd then
 * spins on the client's core, which the scheduler preempts when the client wakes).
 * Open vSwitch with DPDK is not measured here: its PMD thread busy-polls a core, and with the polling reflector on
 * the other one it would spin on the client's core for its whole time slice.
 */
import { spawnSync } from 'node:child_process';
import type { RecordableHistogram } from 'node:perf_hooks';
import { VIRTIO_RING_F_EVENT_IDX, bit } from '../../src/vhost-user/features.js';
import { FrontendRequest, u64Payload } from '../../src/vhost-user/message.js';
import { startTestpmd, vhostSocketReady, vhostVdev, virtioUserVdev, type Testpmd } from '../../test/e2e/support/testpmd.js';
import { VHOSTD_BIN, VhostdProcess } from '../../test/e2e/support/vhostd-process.js';
import { FakeNetDriver } from '../../test/helpers/fake-net-driver.js';
import { FULL, pin } from '../support/proc.js';
import { report, type BenchRow } from '../support/report.js';
import { PingPongClient, type LatencyRun } from './support/pingpong.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const MAC_A = '02:00:00:00:0a:01';
const MAC_B = '02:00:00:00:0b:01';
const FRAME = 64;
/**
 * Ring size of A and of the reflector: a 1024-entry ring absorbs a 0.5 s stall of its consumer at the open-loop
 * rate (this shared VM's vCPUs do stall for 100-200 ms), which then shows up as latency instead of a lost frame.
 */
const RING = 1024;
const CLOSED = { count: FULL ? 200_000 : 20_000, warmup: 1000 };
const OPEN_RATE = 2000;
const OPEN = { count: OPEN_RATE * (FULL ? 60 : 5), warmup: 400 };
const BACKEND_CORE = 0; // DPDK forwarding lcore (reflector or anchor)
const CLIENT_CORE = 1; // this process and vhostd
/** ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK (virtio 1.2 §2.1). */
const VIRTIO_STATUS_DRIVER_READY = 0x1 | 0x2 | 0x8 | 0x4;
const REFERENCE = 'DPDK vhost PMD (testpmd macswap)';
const PCTS: [string, (h: RecordableHistogram) => number][] = [
  ['p50', (h) => h.percentile(50)],
  ['p90', (h) => h.percentile(90)],
  ['p99', (h) => h.percentile(99)],
  ['p99.9', (h) => h.percentile(99.9)],
  ['max', (h) => h.max],
];

/** Event-driven targets (closed loop) and the poll-mode one, as ratios vhostd / DPDK. */
const TARGET_EVENT: Record<string, number> = { p50: 2, p99: 3 };
const TARGET_POLL: Record<string, number> = { p50: 1.2 };
const POLL_UNAVAILABLE = 'poll mode: not available';

/** The switch block; `poll` asks for vhostd's poll mode. */
function switchConfig(poll: boolean): string {
  return `switch "s" {\n  mtu 1500\n${poll ? '  poll\n' : ''}}\n`;
}

function vhostdConfig(poll: boolean): string {
  return (
    switchConfig(poll) +
    `vm "a" {\n  interface { switch "s"; lladdr ${MAC_A} }\n}\nvm "b" {\n  interface { switch "s"; lladdr ${MAC_B} }\n}\n`
  );
}

/** null when the daemon accepts the poll-mode configuration (`vhostd -n`), else why not. */
function pollModeMissing(): string | null {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-lat-poll-'));
  try {
    const conf = path.join(dir, 'vhostd.conf');
    fs.writeFileSync(conf, `socket dir "${dir}"\n${vhostdConfig(true)}`);
    const r = spawnSync(process.execPath, [VHOSTD_BIN, '-n', '-f', conf], { encoding: 'utf8' });
    if (r.status === 0) return null;
    const why = `${r.stderr}${r.stdout}`.trim();
    // Only the keyword may be missing: any other rejection is a broken benchmark.
    if (!/\bpoll\b/.test(why)) throw new Error(`vhostd -n rejects the poll-mode configuration: ${why}`);
    return why;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

interface Result {
  closed: LatencyRun;
  open: LatencyRun;
}

/** testpmd on one port, macswap back out of the port it came in on; forwarding on BACKEND_CORE. */
function echoTestpmd(prefix: string, vdev: string): Testpmd {
  return startTestpmd({
    prefix,
    lcores: [BACKEND_CORE, CLIENT_CORE],
    mainLcore: CLIENT_CORE,
    vdevs: [vdev],
    forwardMode: 'macswap',
    args: ['--port-topology=loop', `--rxd=${RING}`, `--txd=${RING}`],
    statsPeriodS: 1,
    memMiB: 256,
    mbufs: 8192,
  });
}

/** Connect A, run both loops, and check every frame A sent was echoed by `echo` exactly once. */
async function measure(socket: string, eventIdx: boolean, echo: Testpmd, setStatus: boolean): Promise<Result> {
  const drv = new FakeNetDriver({ socket, eventIdx, sequence: 'qemu', maxFrame: FRAME, queueSize: RING });
  try {
    await drv.start();
    // DPDK's vhost starts a device that negotiated F_STATUS only at DRIVER_OK (QEMU 7.2 sends it on start).
    if (setStatus) await drv.fe.ack(FrontendRequest.SET_STATUS, u64Payload(VIRTIO_STATUS_DRIVER_READY));
    if (((drv.acked & bit(VIRTIO_RING_F_EVENT_IDX)) !== 0n) !== eventIdx) throw new Error(`EVENT_IDX ${eventIdx ? 'not' : 'unexpectedly'} negotiated`);
    const client = new PingPongClient(drv, MAC_A, MAC_B, FRAME);
    const closed = await client.closedLoop(CLOSED.count, CLOSED.warmup);
    const open = await client.openLoop(OPEN_RATE, OPEN.count, OPEN.warmup);
    const fin = await echo.stop();
    const echoed = fin.ports[0]?.rxPackets;
    const sent = closed.replies + open.replies;
    if (echoed !== sent) throw new Error(`testpmd received ${echoed} frames, A sent ${sent} (and got every reply)`);
    return { closed, open };
  } finally {
    await echo.stop();
    drv.close();
  }
}

async function vhostdRun(eventIdx: boolean, poll = false): Promise<Result> {
  const v = new VhostdProcess(vhostdConfig(poll));
  await v.start();
  try {
    pin(v.proc!.pid!, CLIENT_CORE);
    const reflector = echoTestpmd('bench-lat-refl', virtioUserVdev(0, v.socket('b'), 1, `mac=${MAC_B},queue_size=${RING}`));
    await reflector.waitForSample((s) => s.ports.length === 1, 30_000);
    const r = await measure(v.socket('a'), eventIdx, reflector, false).catch(async (e: Error) => {
      throw new Error(`${e.message}\nvhostd counters: ${JSON.stringify(await v.stats())}`);
    });
    const st = await v.stats();
    const sent = r.closed.replies + r.open.replies;
    const a = st['a.net0'].device;
    const b = st['b.net0'].device;
    // Each frame crossed the switch twice: A → B and B → A, all counted by vhostd's own ports.
    if (a.txFrames !== sent || b.rxFrames !== sent || b.txFrames !== sent || a.rxFrames !== sent) {
      throw new Error(`vhostd counters: a tx ${a.txFrames} rx ${a.rxFrames}, b tx ${b.txFrames} rx ${b.rxFrames}; A sent ${sent}`);
    }
    return r;
  } finally {
    await v.stop();
    v.cleanup();
  }
}

async function dpdkRun(eventIdx: boolean): Promise<Result> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-lat-'));
  const sock = path.join(dir, 'a.sock');
  const anchor = echoTestpmd('bench-lat-ref', vhostVdev(0, sock));
  try {
    await anchor.waitForOutput(vhostSocketReady(sock), 30_000);
    // The socket listens once the port has started, i.e. when forwarding (and its stats) have begun.
    await anchor.waitForSample((s) => s.ports.length === 1, 30_000);
    return await measure(sock, eventIdx, anchor, true);
  } finally {
    await anchor.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const us = (ns: number): number => Number((ns / 1000).toFixed(ns < 100_000 ? 2 : 1));

pin(process.pid, CLIENT_CORE);
const rows: BenchRow[] = [];
const lines: string[] = [];
const pollMissing = pollModeMissing();

function pushRows(label: string, mode: 'closed' | 'open', a: LatencyRun, b: LatencyRun, targets: Record<string, number>): void {
  for (const [name, get] of PCTS) {
    const value = us(get(a.hist));
    const referenceValue = us(get(b.hist));
    const target = mode === 'closed' ? targets[name] : undefined;
    rows.push({
      bench: 'net/latency',
      case: `${mode}-loop ${label} ${name}`,
      unit: 'µs',
      value,
      reference: REFERENCE,
      referenceValue,
      ratio: Number((value / referenceValue).toFixed(3)),
      lowerIsBetter: true,
      ...(target !== undefined ? { target } : {}),
      samples: a.hist.count,
      referenceSamples: b.hist.count,
      ...(mode === 'open' ? { rate: OPEN_RATE } : {}),
    });
  }
  const p = (h: RecordableHistogram) => `p50 ${us(h.percentile(50))} p99 ${us(h.percentile(99))} max ${us(h.max)}`;
  const lag = (r: LatencyRun) => (r.sendLag && r.fromSend ? `; client send lag ${p(r.sendLag)}; RTT from actual send ${p(r.fromSend)}` : '');
  lines.push(`${mode}-loop ${label}: vhostd ${a.hist.count} RTTs in ${a.seconds.toFixed(1)} s${lag(a)}; DPDK ${b.hist.count} in ${b.seconds.toFixed(1)} s${lag(b)} (µs)`);
}

let refOn: Result | null = null;
for (const eventIdx of [true, false]) {
  // Alternate which backend goes first, so neither always runs on a machine the other just warmed.
  let vh: Result;
  let ref: Result;
  if (eventIdx) {
    vh = await vhostdRun(eventIdx);
    ref = await dpdkRun(eventIdx);
  } else {
    ref = await dpdkRun(eventIdx);
    vh = await vhostdRun(eventIdx);
  }
  if (eventIdx) refOn = ref;
  const label = `EVENT_IDX ${eventIdx ? 'on' : 'off'}`;
  for (const mode of ['closed', 'open'] as const) pushRows(label, mode, vh[mode], ref[mode], TARGET_EVENT);
}
// Poll mode, EVENT_IDX on, beside the same DPDK run.
if (pollMissing === null) {
  const vh = await vhostdRun(true, true);
  for (const mode of ['closed', 'open'] as const) pushRows('poll EVENT_IDX on', mode, vh[mode], refOn![mode], TARGET_POLL);
} else {
  for (const name of ['p50', 'p99']) {
    rows.push({
      bench: 'net/latency',
      case: `closed-loop poll EVENT_IDX on ${name}`,
      unit: 'µs',
      value: NaN, // no figure (JSON null): the doc shows `unavailable` instead
      unavailable: POLL_UNAVAILABLE,
      reference: REFERENCE,
      referenceValue: us(PCTS.find(([n]) => n === name)![1](refOn!.closed.hist)),
      lowerIsBetter: true,
      ...(TARGET_POLL[name] !== undefined ? { target: TARGET_POLL[name] } : {}),
    });
  }
  lines.push(`poll mode: not available (${pollMissing})`);
}
report(rows, { replaces: true });
process.stderr.write(
  `\nnet/latency: ${FRAME}-byte ping-pong, event-driven client A; vhostd = A → switch → testpmd macswap → A; ` +
    `reference = A → ${REFERENCE}\n` +
    `case                                  vhostd µs   DPDK µs   ratio\n` +
    rows
      .map((r) => {
        const target = typeof r.target === 'number' ? `  target <= ${r.target}x: ${typeof r.ratio !== 'number' ? 'not measured' : r.ratio <= r.target ? 'met' : `MISSED by ${((r.ratio / r.target - 1) * 100).toFixed(0)}%`}` : '';
        const value = r.unavailable ? String(r.unavailable) : String(r.value);
        return `${r.case.padEnd(36)}  ${value.padStart(9)}  ${String(r.referenceValue).padStart(8)}  ${String(r.ratio ?? '').padStart(6)}${target}`;
      })
      .join('\n') +
    '\n' +
    lines.join('\n') +
    '\n',
);
