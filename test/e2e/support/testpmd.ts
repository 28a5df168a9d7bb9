// DPDK testpmd as a peer: userspace virtio-net driver (net_virtio_user) for load generation, or
// DPDK's vhost PMD (net_vhost) as the reference backend. Runs non-interactively with
// --stats-period, parses the periodic port statistics into samples, stops with SIGINT and parses
// the final "Forward statistics" summary.
//
// Lcores: on the 2-core machines two busy-polling testpmds must forward on different cores. Use
// LCORES_BACKEND (main 0, forwarding 1) for the net_vhost/vhostd side and LCORES_DRIVER
// (main 1, forwarding 0) for the virtio_user side; main lcores mostly sleep.
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';

export interface PortSample {
  port: number;
  rxPackets: number;
  rxMissed: number;
  rxBytes: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txErrors: number;
  txBytes: number;
  rxPps: number;
  txPps: number;
  rxBps: number;
  txBps: number;
}

export interface Sample {
  /** ms since the process was spawned */
  t: number;
  ports: PortSample[];
}

export interface ForwardStats {
  port: number | 'all';
  rxPackets: number;
  rxDropped: number;
  rxTotal: number;
  txPackets: number;
  txDropped: number;
  txTotal: number;
}

export interface FinalStats {
  ports: ForwardStats[];
  total: ForwardStats | null;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
}

export interface TestpmdOptions {
  /** Unique --file-prefix (one per concurrently running DPDK process). */
  prefix: string;
  lcores: number[];
  mainLcore?: number;
  vdevs: string[];
  /** testpmd application args after `--` (overrides the defaults below when given keys clash). */
  args?: string[];
  forwardMode?: 'io' | 'macswap' | 'txonly' | 'rxonly' | 'mac' | string;
  txFirst?: boolean;
  statsPeriodS?: number; // default 1
  memMiB?: number; // default 1024 (--no-huge -m); 256 is plenty with mbufs <= 32768
  /** --total-num-mbufs (default: testpmd's own, ~155k = 330 MB). Smaller starts faster. */
  mbufs?: number;
  /** Extra EAL args (e.g. ['--log-level=pmd.net.vhost:debug']). */
  eal?: string[];
  /** Number of ports to expect per sample (default: vdevs.length). */
  nbPorts?: number;
  echo?: boolean;
  bin?: string;
}

export interface Testpmd {
  proc: ChildProcess;
  args: string[];
  /** Date.now() when the process was spawned: Sample.t is relative to it. */
  startedAt: number;
  output(): string;
  samples(): Sample[];
  /** Resolves with the first sample (existing or future) satisfying pred. */
  waitForSample(pred: (s: Sample) => boolean, timeoutMs: number): Promise<Sample>;
  waitForOutput(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** SIGINT, wait for exit (SIGKILL after timeoutMs), parse the final summary. */
  stop(timeoutMs?: number): Promise<FinalStats>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export const LCORES_BACKEND = { lcores: [0, 1], mainLcore: 0 } as const;
export const LCORES_DRIVER = { lcores: [0, 1], mainLcore: 1 } as const;

export const vhostVdev = (i: number, sock: string, queues = 1, extra = '') =>
  `net_vhost${i},iface=${sock},queues=${queues}${extra ? ',' + extra : ''}`;
export const virtioUserVdev = (i: number, sock: string, queues = 1, extra = '') =>
  `net_virtio_user${i},path=${sock},queues=${queues}${extra ? ',' + extra : ''}`;

export function testpmdArgs(o: TestpmdOptions): string[] {
  const eal = [
    '-l', o.lcores.join(','),
    ...(o.mainLcore !== undefined ? ['--main-lcore', String(o.mainLcore)] : []),
    '--no-pci', '--no-huge', '-m', String(o.memMiB ?? 1024),
    `--file-prefix=${o.prefix}`,
    ...o.vdevs.flatMap((v) => ['--vdev', v]),
    ...(o.eal ?? []),
  ];
  const nbFwd = Math.max(1, o.lcores.length - 1);
  const app = [
    `--forward-mode=${o.forwardMode ?? 'io'}`,
    `--nb-cores=${nbFwd}`,
    `--stats-period=${o.statsPeriodS ?? 1}`,
    ...(o.txFirst ? ['--tx-first'] : []),
    ...(o.mbufs ? [`--total-num-mbufs=${o.mbufs}`] : []),
    ...(o.args ?? []),
  ];
  return [...eal, '--', ...app];
}

const KEYMAP: Record<string, keyof PortSample> = {
  'RX-packets': 'rxPackets',
  'RX-missed': 'rxMissed',
  'RX-bytes': 'rxBytes',
  'RX-errors': 'rxErrors',
  'RX-nombuf': 'rxNombuf',
  'TX-packets': 'txPackets',
  'TX-errors': 'txErrors',
  'TX-bytes': 'txBytes',
  'Rx-pps': 'rxPps',
  'Tx-pps': 'txPps',
  'Rx-bps': 'rxBps',
  'Tx-bps': 'txBps',
};

const emptyPort = (port: number): PortSample => ({
  port, rxPackets: 0, rxMissed: 0, rxBytes: 0, rxErrors: 0, rxNombuf: 0,
  txPackets: 0, txErrors: 0, txBytes: 0, rxPps: 0, txPps: 0, rxBps: 0, txBps: 0,
});

/** Incremental line parser for testpmd's periodic "NIC statistics" blocks. */
export class StatsParser {
  private cur: PortSample | null = null;
  private block: PortSample[] = [];
  readonly samples: Sample[] = [];
  constructor(private nbPorts: number, private now: () => number) {}

  line(l: string): Sample | null {
    let emitted: Sample | null = null;
    if (/Port statistics =+/.test(l)) {
      emitted = this.flush();
    }
    const m = l.match(/NIC statistics for port (\d+)/);
    if (m) {
      this.cur = emptyPort(Number(m[1]));
      return emitted;
    }
    if (!this.cur) return emitted;
    if (/^\s*#{20,}\s*$/.test(l)) {
      this.block.push(this.cur);
      this.cur = null;
      if (this.block.length >= this.nbPorts) emitted = this.flush() ?? emitted;
      return emitted;
    }
    for (const kv of l.matchAll(/([A-Za-z]+-[A-Za-z]+):\s*(\d+)/g)) {
      const k = KEYMAP[kv[1]];
      if (k && k !== 'port') this.cur[k] = Number(kv[2]);
    }
    return emitted;
  }

  flush(): Sample | null {
    if (this.block.length === 0) return null;
    const s: Sample = { t: this.now(), ports: this.block.sort((a, b) => a.port - b.port) };
    this.block = [];
    this.samples.push(s);
    return s;
  }
}

/** Parse "Forward statistics for port N" and the accumulated block printed at stop. */
export function parseFinal(text: string): { ports: ForwardStats[]; total: ForwardStats | null } {
  const ports: ForwardStats[] = [];
  let total: ForwardStats | null = null;
  const re = /(Forward statistics for port (\d+)|Accumulated forward statistics for all ports)[^\n]*\n([\s\S]*?)(?:\n\s*[-+]{20,})/g;
  for (const m of text.matchAll(re)) {
    const body = m[3];
    const num = (k: string) => Number(body.match(new RegExp(`${k}:\\s*(\\d+)`))?.[1] ?? NaN);
    const fs: ForwardStats = {
      port: m[2] !== undefined ? Number(m[2]) : 'all',
      rxPackets: num('RX-packets'),
      rxDropped: num('RX-dropped'),
      rxTotal: num('RX-total'),
      txPackets: num('TX-packets'),
      txDropped: num('TX-dropped'),
      txTotal: num('TX-total'),
    };
    if (fs.port === 'all') total = fs;
    else ports.push(fs);
  }
  return { ports, total };
}

/** Mean of a per-port field over the samples taken after `skip` (warm-up) samples. */
export function meanPps(samples: Sample[], port: number, field: 'rxPps' | 'txPps' = 'rxPps', skip = 1): number {
  const xs = samples.slice(skip).map((s) => s.ports.find((p) => p.port === port)?.[field] ?? 0);
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

export function startTestpmd(o: TestpmdOptions): Testpmd {
  const args = testpmdArgs(o);
  const bin = o.bin ?? 'dpdk-testpmd';
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const t0 = Date.now();
  const parser = new StatsParser(o.nbPorts ?? o.vdevs.length, () => Date.now() - t0);
  let out = '';
  let partial = '';
  const echo = o.echo ?? process.env.VHOSTD_TESTPMD_ECHO === '1';
  const waiters = new Set<() => void>();
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const notify = () => {
    for (const w of [...waiters]) w();
  };
  const onData = (b: Buffer) => {
    // eslint-disable-next-line no-control-regex
    const s = b.toString('utf8').replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').replace(/\r/g, '');
    out += s;
    if (echo) process.stderr.write(s.replace(/^/gm, `[testpmd ${o.prefix}] `));
    partial += s;
    const lines = partial.split('\n');
    partial = lines.pop()!;
    for (const l of lines) parser.line(l);
    notify();
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      notify();
      resolve(exitInfo);
    });
    proc.on('error', (err) => {
      out += `\n[spawn error] ${err.message}\n`;
      exitInfo = { code: -1, signal: null };
      notify();
      resolve(exitInfo);
    });
  });
  const tail = () => out.slice(-3000);

  function waitGeneric<T>(probe: () => T | null, what: string, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = () => {
        const v = probe();
        if (v !== null) {
          done();
          resolve(v);
        } else if (exitInfo) {
          done();
          reject(new Error(`testpmd ${o.prefix} exited (${JSON.stringify(exitInfo)}) before ${what}; tail:\n${tail()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`testpmd ${o.prefix}: timeout ${timeoutMs} ms waiting for ${what}; tail:\n${tail()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  }

  const stop = async (timeoutMs = 10_000): Promise<FinalStats> => {
    if (!exitInfo) {
      proc.kill('SIGINT');
      const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
      await exited;
      clearTimeout(t);
    }
    // testpmd leaves its runtime dir behind (root: /var/run/dpdk/<prefix>)
    for (const base of ['/var/run/dpdk', process.env.XDG_RUNTIME_DIR ? `${process.env.XDG_RUNTIME_DIR}/dpdk` : '']) {
      if (base) rmSync(`${base}/${o.prefix}`, { recursive: true, force: true });
    }
    const fin = parseFinal(out);
    return { ...fin, exitCode: exitInfo!.code, signal: exitInfo!.signal };
  };

  return {
    proc,
    args,
    startedAt: t0,
    output: () => out,
    samples: () => parser.samples,
    waitForSample: (pred, timeoutMs) =>
      waitGeneric(() => parser.samples.find(pred) ?? null, 'a matching stats sample', timeoutMs),
    waitForOutput: (re, timeoutMs) => waitGeneric(() => out.match(re), String(re), timeoutMs),
    stop,
    exited,
  };
}

/** net_vhost server sockets are ready once this appears for each iface. */
export const vhostSocketReady = (sock: string) =>
  new RegExp(`\\(${sock.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\) binding succeeded`);
