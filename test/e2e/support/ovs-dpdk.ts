// Open vSwitch with DPDK (Debian openvswitch-switch-dpdk) as a peer: the production vhost-user switch, run by
// hand in a private temp dir (its own database, run, log and config dirs; the package's service is not used),
// without hugepages. A netdev (userspace) bridge with dpdkvhostuserclient ports: OVS connects as the vhost-user
// client to sockets served by the driver (testpmd's net_virtio_user with server=1). The bridge keeps OVS's
// default flow (NORMAL: a learning switch). See docs/benchmarks.md "How Open vSwitch with DPDK runs here".
//
// Both daemons run in the foreground as children of this process (not --detach): they stay in its process
// group, so a bench harness that kills the group on a timeout also kills them.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { LCORES_DRIVER, startTestpmd, virtioUserVdev, type Testpmd } from './testpmd.js';

const run = promisify(execFile);

export const OVS_VSWITCHD_DPDK = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';
export const OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

export interface OvsDpdkOptions {
  /** DPDK --file-prefix, unique per concurrently running DPDK process. */
  prefix: string;
  /** Core of OVS's PMD thread and of its DPDK lcore (pmd-cpu-mask = dpdk-lcore-mask = 1 << core). */
  core: number;
  /** Port names; port `n` is served by the driver at socket(n). */
  ports: string[];
  /** --no-huge -m: OVS's default mempool (262144 mbufs) needs 2048 MiB; 1024 does not fit. */
  memMiB?: number;
  echo?: boolean;
}

export interface PortCounters {
  rxPackets: number;
  txPackets: number;
  txDropped: number;
}

interface Daemon {
  name: string;
  proc: ChildProcess;
  exited: Promise<void>;
  dead: () => boolean;
  out: () => string;
}

export class OvsDpdk {
  readonly dir: string;
  private readonly db: string;
  private readonly ctl: string;
  private readonly env: NodeJS.ProcessEnv;
  private daemons: Daemon[] = [];

  constructor(private readonly o: OvsDpdkOptions) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-ovs-'));
    this.db = path.join(this.dir, 'db.sock');
    this.ctl = path.join(this.dir, 'ovs-vswitchd.ctl');
    // Every OVS tool looks here instead of /var/run/openvswitch, /etc/openvswitch, /var/log/openvswitch.
    this.env = { ...process.env, OVS_RUNDIR: this.dir, OVS_LOGDIR: this.dir, OVS_DBDIR: this.dir, OVS_SYSCONFDIR: this.dir };
  }

  /** The socket the driver serves for port `name` (OVS's vhost-server-path). */
  socket(name: string): string {
    return path.join(this.dir, `${name}.sock`);
  }

  /** Process ids of the running daemons (ovsdb-server, ovs-vswitchd-dpdk). */
  pids(): number[] {
    return this.daemons.filter((d) => !d.dead()).map((d) => d.proc.pid!);
  }

  async vsctl(...args: string[]): Promise<string> {
    return (await run('ovs-vsctl', [`--db=unix:${this.db}`, '--timeout=60', ...args], { env: this.env })).stdout.trim();
  }

  async appctl(...args: string[]): Promise<string> {
    return (await run('ovs-appctl', ['-t', this.ctl, '--timeout=60', ...args], { env: this.env })).stdout.trim();
  }

  /** Database, DPDK init, vswitchd, bridge br0 (netdev datapath) and its dpdkvhostuserclient ports. */
  async start(): Promise<void> {
    const d = this.dir;
    await run('ovsdb-tool', ['create', path.join(d, 'conf.db'), OVS_SCHEMA], { env: this.env });
    const dbUp = this.daemon('ovsdb-server', 'ovsdb-server', [
      `--remote=punix:${this.db}`,
      `--unixctl=${path.join(d, 'ovsdb-server.ctl')}`,
      `--log-file=${path.join(d, 'ovsdb-server.log')}`,
      path.join(d, 'conf.db'),
    ]);
    await this.waitFor(() => fs.existsSync(this.db), dbUp, 'ovsdb-server socket', 20_000);
    const mask = `0x${(1 << this.o.core).toString(16)}`;
    await this.vsctl('--no-wait', 'init');
    await this.vsctl(
      '--no-wait', 'set', 'Open_vSwitch', '.',
      'other_config:dpdk-init=true',
      `other_config:dpdk-lcore-mask=${mask}`,
      `other_config:pmd-cpu-mask=${mask}`,
      // --legacy-mem: otherwise OVS adds --in-memory, which DPDK refuses together with --no-huge here.
      `other_config:dpdk-extra=--no-huge -m ${this.o.memMiB ?? 2048} --no-pci --legacy-mem --file-prefix=${this.o.prefix}`,
    );
    const sw = this.daemon('ovs-vswitchd', OVS_VSWITCHD_DPDK, [
      `unix:${this.db}`,
      `--unixctl=${this.ctl}`,
      `--log-file=${path.join(d, 'ovs-vswitchd.log')}`,
    ]);
    await this.waitFor(() => fs.existsSync(this.ctl) && /DPDK Enabled - initialized/.test(this.log()), sw, 'ovs-vswitchd DPDK init', 60_000);
    // Without --no-wait, ovs-vsctl returns once vswitchd has applied the change.
    const ports = this.o.ports.flatMap((p) => [
      '--', 'add-port', 'br0', p,
      '--', 'set', 'Interface', p, 'type=dpdkvhostuserclient', `options:vhost-server-path=${this.socket(p)}`,
    ]);
    await this.vsctl('add-br', 'br0', '--', 'set', 'bridge', 'br0', 'datapath_type=netdev', ...ports);
  }

  /**
   * One untimed connection through every port pair: OVS builds its mempool (on 4 KiB pages, seconds) when the
   * first vhost-user device comes up, which must not fall inside a measurement. Resolves once both ports of
   * every pair have received frames. Then the MAC table is flushed.
   */
  async warmUp(timeoutMs = 90_000): Promise<void> {
    const tp = this.driver(`${this.o.prefix}-warm`, 'io', []);
    try {
      await tp.waitForSample((s) => s.ports.length === this.o.ports.length && s.ports.every((p) => p.rxPackets > 0), timeoutMs);
    } finally {
      await tp.stop();
    }
    await this.flushFdb();
  }

  /**
   * testpmd net_virtio_user ports in server mode on this bridge's sockets (forwarding on the driver core,
   * LCORES_DRIVER), --tx-first.
   */
  driver(prefix: string, forwardMode: string, args: string[], statsPeriodS = 1): Testpmd {
    return startTestpmd({
      prefix,
      lcores: [...LCORES_DRIVER.lcores],
      mainLcore: LCORES_DRIVER.mainLcore,
      vdevs: this.o.ports.map((p, i) => virtioUserVdev(i, this.socket(p), 1, 'server=1')),
      forwardMode,
      txFirst: true,
      args,
      statsPeriodS,
    });
  }

  /**
   * Freezes vswitchd (SIGSTOP) / lets it run again (SIGCONT). Its PMD thread busy-polls its core even with no
   * device connected: a benchmark that keeps OVS warm between its own runs freezes it while another backend
   * uses that core.
   */
  async pause(): Promise<void> {
    await this.signalUntil('SIGSTOP', (st) => st === 'T');
  }

  async resume(): Promise<void> {
    await this.signalUntil('SIGCONT', (st) => st !== 'T');
  }

  /** Sends `sig` to vswitchd and waits until its proc(5) state satisfies `done` (signals are delivered async). */
  private async signalUntil(sig: NodeJS.Signals, done: (state: string) => boolean): Promise<void> {
    const pid = this.vswitchdPid();
    process.kill(pid, sig);
    const until = Date.now() + 5000;
    for (;;) {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (done(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0])) return;
      if (Date.now() > until) throw new Error(`ovs-vswitchd did not react to ${sig}`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** Process id of the running ovs-vswitchd-dpdk (its PMD thread and main thread). */
  vswitchdPid(): number {
    const d = this.vswitchd();
    if (!d) throw new Error('ovs-vswitchd is not running');
    return d.proc.pid!;
  }

  private vswitchd(): Daemon | undefined {
    return this.daemons.find((d) => d.name === 'ovs-vswitchd' && !d.dead());
  }

  /** Clears the learnt MAC table: each timed run starts from the same (empty) table. */
  async flushFdb(): Promise<void> {
    await this.appctl('fdb/flush', 'br0');
  }

  /**
   * A port's packet counters, live from vswitchd over OpenFlow (the database's Interface.statistics is only
   * refreshed every few seconds). A vhost-user port has counters only while its device is up (else "?": this
   * throws).
   */
  async portStats(port: string): Promise<PortCounters> {
    const text = (await run('ovs-ofctl', ['dump-ports', `unix:${path.join(this.dir, 'br0.mgmt')}`, port], { env: this.env })).stdout;
    // "  port  vu0: rx pkts=123, bytes=..., drop=0, ...\n           tx pkts=456, bytes=..., drop=0, ..."
    const num = (re: RegExp) => {
      const m = re.exec(text);
      if (!m) throw new Error(`ovs-ofctl dump-ports ${port}: unexpected output:\n${text}`);
      return Number(m[1]);
    };
    return { rxPackets: num(/rx pkts=(\d+)/), txPackets: num(/tx pkts=(\d+)/), txDropped: num(/tx pkts=\d+, bytes=\d+, drop=(\d+)/) };
  }

  /** Stops vswitchd, then the database (SIGTERM, SIGKILL after 10 s), and removes the temp and DPDK run dirs. */
  async stop(): Promise<void> {
    for (const d of [...this.daemons].reverse()) {
      if (!d.dead()) {
        d.proc.kill('SIGCONT'); // a paused vswitchd handles SIGTERM only once it runs
        d.proc.kill('SIGTERM');
        const t = setTimeout(() => d.proc.kill('SIGKILL'), 10_000);
        await d.exited;
        clearTimeout(t);
      }
    }
    this.daemons = [];
    fs.rmSync(this.dir, { recursive: true, force: true });
    for (const base of ['/var/run/dpdk', process.env.XDG_RUNTIME_DIR ? `${process.env.XDG_RUNTIME_DIR}/dpdk` : '']) {
      if (base) fs.rmSync(`${base}/${this.o.prefix}`, { recursive: true, force: true });
    }
  }

  /** ovs-vswitchd's log so far (its log file, or its console output when there is no file yet). */
  log(): string {
    try {
      return fs.readFileSync(path.join(this.dir, 'ovs-vswitchd.log'), 'utf8');
    } catch {
      return this.daemons.find((d) => d.name === 'ovs-vswitchd')?.out() ?? '';
    }
  }

  private daemon(name: string, bin: string, args: string[]): Daemon {
    const proc = spawn(bin, args, { env: this.env, stdio: ['ignore', 'pipe', 'pipe'], cwd: this.dir });
    let out = '';
    const echo = this.o.echo ?? process.env.VHOSTD_OVS_ECHO === '1';
    const onData = (b: Buffer) => {
      const s = b.toString('utf8');
      out = (out + s).slice(-200_000);
      if (echo) process.stderr.write(s.replace(/^/gm, `[${name}] `));
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    let dead = false;
    const exited = new Promise<void>((resolve) => {
      proc.on('exit', () => {
        dead = true;
        resolve();
      });
      proc.on('error', (e) => {
        out += `\n[spawn error] ${e.message}\n`;
        dead = true;
        resolve();
      });
    });
    const d: Daemon = { name, proc, exited, dead: () => dead, out: () => out };
    this.daemons.push(d);
    return d;
  }

  private async waitFor(ok: () => boolean, d: Daemon, what: string, timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!ok()) {
      if (d.dead()) throw new Error(`${d.name} exited before ${what}:\n${d.out().slice(-3000)}`);
      if (Date.now() > until) throw new Error(`timeout waiting for ${what}:\n${d.out().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
