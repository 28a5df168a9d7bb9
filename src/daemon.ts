/**
 * Daemon: builds the running system from a validated Config: one Switch per `switch` block, one NetDevice
 * (a switch port) and one VhostUserServer (its socket) per vm interface. Owns start-up, the coarse aging
 * timer and clean shutdown (sockets removed). No parsing or policy lives in the binary.
 */
import fs from 'node:fs';
import type { NativeBinding } from './native/types.js';
import type { Config } from './config/model.js';
import { qemuArgsForInterface, qemuMemoryArgs, formatShellArgs } from './config/qemu-args.js';
import { Switch } from './net/switch.js';
import { NetDevice } from './net/net-device.js';
import { VhostUserServer } from './vhost-user/server.js';
import type { Logger } from './util/log.js';

/** MAC aging runs on this coarse tick; nothing on the data path reads a clock. */
const AGING_TICK_MS = 1000;

export interface NetPort {
  vm: string;
  index: number;
  device: NetDevice;
  server: VhostUserServer;
}

export interface PortStats {
  port: string;
  switch: string;
  connected: boolean;
  connections: number;
  dropped: number;
  device: Record<string, number>;
  switchPort: Record<string, number> | null;
  vrings: Record<string, number | boolean>[];
}

export class Daemon {
  readonly switches = new Map<string, Switch>();
  readonly netPorts: NetPort[] = [];
  private agingTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly config: Config,
    private readonly native: NativeBinding,
    private readonly log: Logger,
  ) {}

  start(): void {
    fs.mkdirSync(this.config.socketDir, { recursive: true });
    for (const s of this.config.switches) this.switches.set(s.name, new Switch(s.name, { mtu: s.mtu }));
    try {
      for (const vm of this.config.vms) {
        for (const iface of vm.interfaces) {
          const sw = this.switches.get(iface.switchName)!;
          const name = `${vm.name}.net${iface.index}`;
          const log = this.log.child({ vm: vm.name, dev: name, socket: iface.socketPath });
          const device = new NetDevice({ name, sw, log, mac: iface.lladdr });
          const server = new VhostUserServer(this.native, iface.socketPath, device, log);
          this.netPorts.push({ vm: vm.name, index: iface.index, device, server });
          server.listen();
        }
      }
    } catch (err) {
      this.stop();
      throw err;
    }
    this.agingTimer = setInterval(() => {
      const now = Date.now() / 1000;
      for (const sw of this.switches.values()) sw.tick(now);
    }, AGING_TICK_MS);
    this.agingTimer.unref();
    this.log.info(
      { switches: this.config.switches.length, vms: this.config.vms.length, ports: this.netPorts.length, socketDir: this.config.socketDir },
      'vhostd started',
    );
  }

  /** QEMU arguments that attach each configured interface, for the start-up banner and docs. */
  qemuArgs(opts: { tcg?: boolean } = {}): { vm: string; socket: string; args: string }[] {
    const out: { vm: string; socket: string; args: string }[] = [];
    for (const vm of this.config.vms) {
      for (const iface of vm.interfaces) {
        const args = [...qemuMemoryArgs(), ...qemuArgsForInterface(this.config, vm, iface, opts)];
        out.push({ vm: vm.name, socket: iface.socketPath, args: formatShellArgs(args) });
      }
    }
    return out;
  }

  /** Per-port counters: the device's (guest view) and the switch's (port view). Logged on SIGUSR2 and at exit. */
  stats(): PortStats[] {
    return this.netPorts.map((p) => ({
      port: p.device.name,
      switch: p.device.switchName,
      connected: p.server.connected,
      connections: p.server.connections,
      dropped: p.server.droppedConnections,
      device: { ...p.device.counters },
      vrings: p.server.currentSession?.vrings.map((v) => ({ i: v.index, started: v.started, enabled: v.enabled, serving: v.serving, kicks: v.kicks, calls: v.calls, lastAvail: v.hasQueue ? v.queue.lastAvailIdx : v.base, broken: v.hasQueue ? v.queue.broken : false })) ?? [],
      switchPort: p.device.id >= 0 ? { ...this.switches.get(p.device.switchName)!.counters(p.device.id) } : null,
    }));
  }

  stop(): void {
    if (this.agingTimer) clearInterval(this.agingTimer);
    this.agingTimer = null;
    for (const p of this.netPorts) {
      p.server.close();
      p.device.detach();
    }
    this.netPorts.length = 0;
  }
}
