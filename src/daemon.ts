/**
 * Daemon: builds the running system from a validated Config: one Switch per `switch` block, one NetDevice
 * (a switch port) and one VhostUserServer (its socket) per vm interface. Owns start-up, the coarse aging
 * timer and clean shutdown (sockets removed). No parsing or policy lives in the binary.
 */
import fs from 'node:fs';
import type { NativeBinding } from './native/types.js';
import type { Config, InterfaceConfig, RuleConfig, SwitchConfig } from './config/model.js';
import { qemuArgsForInterface, qemuMemoryArgs, formatShellArgs } from './config/qemu-args.js';
import { parseIpv4, Switch, type FilterRule } from './net/switch.js';
import { parseMac } from './net/mac.js';
import { NetDevice } from './net/net-device.js';
import { openVport, type TapPort } from './net/tap-port.js';
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
  /** Host ports (vport: a TAP interface per switch that names one). */
  readonly vports: TapPort[] = [];
  private agingTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly config: Config,
    private readonly native: NativeBinding,
    private readonly log: Logger,
  ) {}

  start(): void {
    fs.mkdirSync(this.config.socketDir, { recursive: true });
    for (const s of this.config.switches) {
      // Fair eviction when the table is full (issue 3 §3), instead of veb's "learn nothing more".
      this.switches.set(s.name, new Switch(s.name, { mtu: s.mtu, maxAddr: s.maxAddr, timeoutSec: s.timeout, evict: true }));
    }
    try {
      for (const s of this.config.switches) {
        if (s.vport) this.vports.push(openVport(this.switches.get(s.name)!, s.vport, this.log.child({ vport: s.vport, switch: s.name }), this.native));
      }
      const devices: { device: NetDevice; iface: InterfaceConfig }[] = [];
      for (const vm of this.config.vms) {
        for (const iface of vm.interfaces) {
          const sw = this.switches.get(iface.switchName)!;
          const name = `${vm.name}.net${iface.index}`;
          const log = this.log.child({ vm: vm.name, dev: name, socket: iface.socketPath });
          const device = new NetDevice({ name, sw, log, mac: iface.lladdr });
          sw.configurePort(device, {
            learn: iface.learn,
            discover: iface.discover,
            blockNonIp: iface.blockNonIp,
            locked: iface.locked,
            span: iface.span,
            protected: iface.protected,
            untagged: iface.untagged,
            tagged: iface.tagged,
            maxAddr: iface.maxAddr,
          });
          devices.push({ device, iface });
          const server = new VhostUserServer(this.native, iface.socketPath, device, log);
          this.netPorts.push({ vm: vm.name, index: iface.index, device, server });
        }
      }
      for (const s of this.config.switches) applySwitchConfig(this.switches.get(s.name)!, s);
      for (const { device, iface } of devices) bindStatics(this.switches.get(iface.switchName)!, device, iface, this.config.switches);
      for (const p of this.netPorts) p.server.listen();
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
    const guests: PortStats[] = this.netPorts.map((p) => ({
      port: p.device.name,
      switch: p.device.switchName,
      connected: p.server.connected,
      connections: p.server.connections,
      dropped: p.server.droppedConnections,
      device: { ...p.device.counters },
      vrings: p.server.currentSession?.vrings.map((v) => ({ i: v.index, started: v.started, enabled: v.enabled, serving: v.serving, kicks: v.kicks, calls: v.calls, lastAvail: v.hasQueue ? v.queue.lastAvailIdx : v.base, broken: v.hasQueue ? v.queue.broken : false })) ?? [],
      switchPort: p.device.id >= 0 ? { ...this.switches.get(p.device.switchName)!.counters(p.device.id) } : null,
    }));
    const hostPorts: PortStats[] = this.vports.map((v) => ({
        port: v.name,
        switch: v.switchName,
        connected: true,
        connections: 0,
        dropped: 0,
        device: { ...v.counters },
        vrings: [],
        switchPort: v.id >= 0 ? { ...this.switches.get(v.switchName)!.counters(v.id) } : null,
      }));
    return [...guests, ...hostPorts];
  }

  stop(): void {
    if (this.agingTimer) clearInterval(this.agingTimer);
    this.agingTimer = null;
    for (const p of this.netPorts) {
      p.server.close();
      p.device.detach();
    }
    this.netPorts.length = 0;
    for (const v of this.vports) v.close();
    this.vports.length = 0;
  }
}

/** Static entries and filter rules of one switch block (ports already attached). */
function applySwitchConfig(sw: Switch, s: SwitchConfig): void {
  for (const st of s.statics ?? []) sw.addStatic(st.mac, st.port);
  for (const r of s.rules ?? []) sw.addRule(r.port, filterRule(r));
}

/** Config rule → switch rule (MACs and IPv4 addresses as numbers). */
export function filterRule(r: RuleConfig): FilterRule {
  const mac = (m: string | undefined): number | undefined => (m === undefined ? undefined : parseMac(m));
  const ip = (a: string | undefined): number | undefined => (a === undefined ? undefined : parseIpv4(a));
  return {
    action: r.action,
    dir: r.dir,
    src: mac(r.src),
    dst: mac(r.dst),
    arp: r.arp && { rarp: r.arp.rarp, op: r.arp.op, sha: mac(r.arp.sha), spa: ip(r.arp.spa), tha: mac(r.arp.tha), tpa: ip(r.arp.tpa) },
  };
}

/**
 * Keep a port's static entries across guest connections: NetDevice.reset() forgets every entry of the port, so
 * on link down the configured `static ... on` entries are put back at once (veb statics never go away) and the
 * `locked lladdr` entry is removed; on link up (TX queue started, before any frame) the locked MAC is installed.
 */
function bindStatics(sw: Switch, device: NetDevice, iface: InterfaceConfig, switches: readonly SwitchConfig[]): void {
  const mine = switches.find((s) => s.name === iface.switchName)?.statics?.filter((st) => st.port === device.name) ?? [];
  const locked = iface.locked === true ? parseMac(iface.lladdr) : undefined;
  if (mine.length === 0 && locked === undefined) return;
  device.onLinkChange = (up) => {
    for (const st of mine) sw.addStatic(st.mac, device);
    if (locked === undefined) return;
    if (up) sw.addStatic(locked, device);
    else if (sw.macTable.staticPort(locked) === device.id) sw.delAddr(locked);
  };
}
