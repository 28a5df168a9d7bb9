/**
 * Daemon: builds the running system from a validated Config: one Switch per `switch` block, one NetDevice
 * (a switch port) and one VhostUserServer (its socket) per vm interface, one BlkDevice over an opened Disk and
 * its VhostUserServer per vm disk. Owns start-up (openDisks() before start()), the coarse aging timer and clean
 * shutdown (sockets removed, in-flight disk requests drained, images flushed and closed). No parsing or policy
 * lives in the binary.
 */
import fs from 'node:fs';
import type { NativeBinding } from './native/types.js';
import type { Config, InterfaceConfig, RuleConfig, SwitchConfig } from './config/model.js';
import { qemuArgsForDisk, qemuArgsForInterface, qemuMemoryArgs, formatShellArgs } from './config/qemu-args.js';
import { BlkDevice } from './blk/blk-device.js';
import type { Disk } from './blk/disk.js';
import { openDisk } from './blk/open-disk.js';
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

export interface BlkPort {
  vm: string;
  index: number;
  disk: Disk;
  device: BlkDevice;
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
  /** Disks in configuration order, opened by openDisks(). */
  readonly blkPorts: BlkPort[] = [];
  private disksOpened = false;
  private agingTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly config: Config,
    private readonly native: NativeBinding,
    private readonly log: Logger,
  ) {}

  /**
   * Open every configured image (format detected unless configured). Call before start(); on failure the images
   * opened so far are closed and the error names the image.
   */
  async openDisks(): Promise<void> {
    try {
      for (const vm of this.config.vms) {
        for (const dc of vm.disks ?? []) {
          const name = `${vm.name}.disk${dc.index}`;
          const log = this.log.child({ vm: vm.name, dev: name, socket: dc.socketPath });
          let disk: Disk;
          try {
            disk = await openDisk(dc.path, dc.format, dc.readOnly, log, { cacheBytes: dc.cacheBytes });
          } catch (err) {
            throw new Error(`${name}: cannot open image ${dc.path}: ${(err as Error).message}`, { cause: err });
          }
          const device = new BlkDevice({ name, disk, log, serial: name });
          const server = new VhostUserServer(this.native, dc.socketPath, device, log);
          this.blkPorts.push({ vm: vm.name, index: dc.index, disk, device, server });
          log.info({ image: dc.path, format: disk.format, readOnly: disk.readOnly, sectors: disk.size / 512 }, 'disk opened');
        }
      }
    } catch (err) {
      await this.closeDisks();
      throw err;
    }
    this.disksOpened = true;
  }

  start(): void {
    if (!this.disksOpened && this.config.vms.some((vm) => (vm.disks?.length ?? 0) > 0)) {
      throw new Error('Daemon.start(): call openDisks() first (the configuration has disks)');
    }
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
      for (const b of this.blkPorts) b.server.listen();
    } catch (err) {
      void this.stop();
      throw err;
    }
    this.agingTimer = setInterval(() => {
      const now = Date.now() / 1000;
      for (const sw of this.switches.values()) sw.tick(now);
    }, AGING_TICK_MS);
    this.agingTimer.unref();
    this.log.info(
      { switches: this.config.switches.length, vms: this.config.vms.length, ports: this.netPorts.length, disks: this.blkPorts.length, socketDir: this.config.socketDir },
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
      for (const d of vm.disks ?? []) {
        const args = [...qemuMemoryArgs(), ...qemuArgsForDisk(vm, d, opts)];
        out.push({ vm: vm.name, socket: d.socketPath, args: formatShellArgs(args) });
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
    const disks: PortStats[] = this.blkPorts.map((b) => ({
      port: b.device.name,
      switch: '',
      connected: b.server.connected,
      connections: b.server.connections,
      dropped: b.server.droppedConnections,
      device: { ...b.device.counters, writeback: b.device.writeback },
      vrings: b.server.currentSession?.vrings.filter((v) => v.started || v.enabled).map((v) => ({ i: v.index, started: v.started, enabled: v.enabled, serving: v.serving, kicks: v.kicks, calls: v.calls, lastAvail: v.hasQueue ? v.queue.lastAvailIdx : v.base, broken: v.hasQueue ? v.queue.broken : false })) ?? [],
      switchPort: null,
    }));
    return [...guests, ...hostPorts, ...disks];
  }

  /**
   * Stop serving (sockets closed and removed); the returned promise settles once in-flight disk requests have
   * completed and every image is flushed and closed.
   */
  stop(): Promise<void> {
    if (this.agingTimer) clearInterval(this.agingTimer);
    this.agingTimer = null;
    for (const p of this.netPorts) {
      p.server.close();
      p.device.detach();
    }
    this.netPorts.length = 0;
    for (const v of this.vports) v.close();
    this.vports.length = 0;
    for (const b of this.blkPorts) b.server.close();
    return this.closeDisks();
  }

  private async closeDisks(): Promise<void> {
    const ports = this.blkPorts.splice(0);
    this.disksOpened = false;
    await Promise.all(
      ports.map(async (b) => {
        b.server.close();
        try {
          await b.device.drainAll();
          await b.disk.close();
        } catch (err) {
          this.log.error({ dev: b.device.name, image: b.disk.path, reason: (err as Error).message }, 'closing the image failed');
        }
      }),
    );
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
