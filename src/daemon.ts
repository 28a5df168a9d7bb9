/**
 * Daemon: builds the running system from a validated Config: one Switch per `switch` block, one NetDevice
 * (a switch port) and one VhostUserServer (its socket) per vm interface, one BlkDevice over an opened Disk and
 * its VhostUserServer per vm disk. Owns start-up (openDisks() before start()), the coarse aging timer, clean
 * shutdown (sockets removed, in-flight disk requests drained, images flushed and closed) and reload():
 * the plan comes from planReload (config/diff.ts); what the outside world can refuse (images, taps) is
 * opened first, so a failing reload changes nothing; devices that did not change are never touched, so their
 * guests keep their connection, rings and counters. Every socket gets mode 0660 and the `socket owner`, a vm's
 * device sockets its own `owner` where it has one.
 * No parsing or policy lives in the binary.
 */
import fs from 'node:fs';
import type { NativeBinding } from './native/types.js';
import {
  controlSocketPath,
  DEFAULT_MAX_ADDR,
  DEFAULT_TIMEOUT,
  type Config,
  type DiskConfig,
  type InterfaceConfig,
  type RuleConfig,
  type SocketOwner,
  type SwitchConfig,
  type VmConfig,
  DEFAULT_MAX_GUEST_MEMORY,
  vmSocketOwner,
} from './config/model.js';
import { changedPortFlags, planReload, type Changed, type Entry, type ReloadPlan } from './config/diff.js';
import { qemuArgsForDisk, qemuArgsForInterface, qemuMemoryArgs, formatShellArgs } from './config/qemu-args.js';
import { BlkDevice } from './blk/blk-device.js';
import type { Disk, DiskFiles } from './blk/disk.js';
import { openDisk } from './blk/open-disk.js';
import { ImageError } from './blk/qcow2/errors.js';
import { DEFAULT_PVID, parseIpv4, Switch, type FilterRule, type PortOptions } from './net/switch.js';
import { parseMac } from './net/mac.js';
import { NetDevice } from './net/net-device.js';
import { openVport, type TapPort } from './net/tap-port.js';
import { VhostUserServer } from './vhost-user/server.js';
import type { FrontendLimits } from './vhost-user/fd-checks.js';
import type { Logger } from './util/log.js';
import { setLogLevel } from './util/log.js';
import { applySocketOwner } from './util/socket-owner.js';

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

/** What a reload did. Names: "vm1.net0", "vm1.disk0", "switch s0"; restartRequired: sentences for the operator. */
export interface ReloadReport {
  added: string[];
  removed: string[];
  changed: string[];
  unchanged: string[];
  restartRequired: string[];
  /** Per changed name, what changed and how it was applied ("lladdr a → b; the guest reconnects"). */
  details?: { name: string; change: string }[];
}

/** Opened ahead of a reload, before anything running is touched. */
interface Prepared {
  disks: Map<string, BlkPort>;
  /** Images the running daemon has open until their old disk closes (re-opened after it). */
  deferredDisks: Entry<DiskConfig>[];
  switches: Map<string, Switch>;
  vports: TapPort[];
  /** Taps still open on another switch until it lets go of them. */
  deferredVports: SwitchConfig[];
}

export class Daemon {
  readonly switches = new Map<string, Switch>();
  readonly netPorts: NetPort[] = [];
  /** Host ports (vport: a TAP interface per switch that names one). */
  readonly vports: TapPort[] = [];
  /** Disks in configuration order, opened by openDisks(). */
  readonly blkPorts: BlkPort[] = [];
  private disksOpened = false;
  private running = false;
  private agingTimer: NodeJS.Timeout | null = null;
  private current: Config;
  /** What every front-end may ask for; read per request, so a reload applies to the next memory table. */
  private readonly limits: FrontendLimits = limitsOf(() => this.current);
  /** Reloads run one at a time, in the order they were asked for. */
  private reloads: Promise<unknown> = Promise.resolve();

  constructor(
    config: Config,
    private readonly native: NativeBinding,
    private readonly log: Logger,
  ) {
    this.current = config;
  }

  /** The running configuration (after a reload: the new one, minus what needs a restart). */
  get config(): Config {
    return this.current;
  }

  /**
   * Open every configured image (format detected unless configured). Call before start(); on failure the images
   * opened so far are closed and the error names the image.
   */
  async openDisks(): Promise<void> {
    try {
      for (const vm of this.current.vms) {
        for (const dc of [...(vm.disks ?? [])]) {
          try {
            this.blkPorts.push(await this.openBlkPort(vm.name, dc));
          } catch (err) {
            // Refused by the image policy: that disk does not start, every other device does.
            if (!(err instanceof Error && err.cause instanceof ImageError && err.cause.kind === 'Refused')) throw err;
            this.log.error({ vm: vm.name, dev: `${vm.name}.disk${dc.index}`, image: dc.path, reason: err.cause.message }, 'disk not started: image refused by the image policy');
            dropDiskConfig(vm, dc.index);
          }
        }
      }
      // Once every image is open: a disk whose backing chain holds another disk's image would read what that
      // disk's guest writes. The chain's reader is refused, whichever of the two came first in the file.
      const conflicts = chainConflicts(this.blkPorts.map(portImages));
      const refused = new Set(conflicts.map((c) => c.reader.name));
      for (const c of conflicts) {
        this.log.error({ vm: c.reader.vm, dev: c.reader.name, image: c.reader.path, reason: conflictReason(c) }, 'disk not started: image refused by the image policy');
      }
      for (const b of this.blkPorts.filter((x) => refused.has(x.device.name))) {
        this.blkPorts.splice(this.blkPorts.indexOf(b), 1);
        await this.closeBlkPort(b);
        dropDiskConfig(this.current.vms.find((v) => v.name === b.vm)!, b.index);
      }
    } catch (err) {
      await this.closeDisks();
      throw err;
    }
    this.disksOpened = true;
  }

  start(): void {
    const cfg = this.current;
    if (!this.disksOpened && cfg.vms.some((vm) => (vm.disks?.length ?? 0) > 0)) {
      throw new Error('Daemon.start(): call openDisks() first (the configuration has disks)');
    }
    fs.mkdirSync(cfg.socketDir, { recursive: true });
    for (const s of cfg.switches) this.switches.set(s.name, newSwitch(s));
    try {
      for (const s of cfg.switches) if (s.vport) this.vports.push(this.openVport(this.switches.get(s.name)!, s));
      for (const vm of cfg.vms) for (const iface of vm.interfaces) this.netPorts.push(this.createNetPort(vm.name, iface));
      for (const s of cfg.switches) applySwitchConfig(this.switches.get(s.name)!, s);
      for (const p of this.netPorts) this.bindStatics(p, cfg);
      for (const p of [...this.netPorts, ...this.blkPorts]) this.serve(p.server, vmSocketOwner(cfg, p.vm));
    } catch (err) {
      void this.stop();
      throw err;
    }
    this.running = true;
    this.agingTimer = setInterval(() => {
      const now = Date.now() / 1000;
      for (const sw of this.switches.values()) sw.tick(now);
    }, AGING_TICK_MS);
    this.agingTimer.unref();
    this.log.info(
      { switches: cfg.switches.length, vms: cfg.vms.length, ports: this.netPorts.length, disks: this.blkPorts.length, socketDir: cfg.socketDir },
      'vhostd started',
    );
  }

  /**
   * Re-read configuration (docs/control.md, reload): apply the difference between the running configuration and `next`.
   * Rejects, with nothing changed, when a new image or tap cannot be opened. Reloads are serialised.
   */
  reload(next: Config): Promise<ReloadReport> {
    const run = this.reloads.then(() => this.reloadNow(next));
    this.reloads = run.catch(() => undefined);
    return run;
  }

  /** QEMU arguments that attach each configured interface, for the start-up banner and docs. */
  qemuArgs(opts: { tcg?: boolean } = {}): { vm: string; socket: string; args: string }[] {
    const out: { vm: string; socket: string; args: string }[] = [];
    for (const vm of this.current.vms) {
      for (const iface of vm.interfaces) {
        const args = [...qemuMemoryArgs(), ...qemuArgsForInterface(this.current, vm, iface, opts)];
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
    this.running = false;
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

  // ---------------------------------------------------------------- building blocks (start and reload)

  private async openBlkPort(vm: string, dc: DiskConfig, cfg: Config = this.current): Promise<BlkPort> {
    const name = `${vm}.disk${dc.index}`;
    const log = this.log.child({ vm, dev: name, socket: dc.socketPath });
    let disk: Disk;
    try {
      // Image policy: backing files in the image's directory tree or a `backing dir`, never another disk's image.
      const denyImages = cfg.vms.flatMap((v) => (v.disks ?? []).map((d) => ({ path: d.path, disk: `${v.name}.disk${d.index}` }))).filter((d) => d.path !== dc.path);
      disk = await openDisk(dc.path, dc.format, dc.readOnly, log, { cacheBytes: dc.cacheBytes, policy: { backingDirs: cfg.backingDirs, denyImages } });
    } catch (err) {
      throw new Error(`${name}: cannot open image ${dc.path}: ${(err as Error).message}`, { cause: err });
    }
    const device = new BlkDevice({ name, disk, log, serial: name });
    const server = new VhostUserServer(this.native, dc.socketPath, device, log, this.limits);
    log.info({ image: dc.path, format: disk.format, readOnly: disk.readOnly, sectors: disk.size / 512 }, 'disk opened');
    return { vm, index: dc.index, disk, device, server };
  }

  /** A NetDevice attached to its switch with the interface's port flags, and its (not yet listening) server. */
  private createNetPort(vm: string, iface: InterfaceConfig): NetPort {
    const sw = this.switches.get(iface.switchName)!;
    const name = `${vm}.net${iface.index}`;
    const log = this.log.child({ vm, dev: name, socket: iface.socketPath });
    const device = new NetDevice({ name, sw, log, mac: iface.lladdr });
    try {
      sw.configurePort(device, portOptions(iface));
    } catch (err) {
      device.detach();
      throw err;
    }
    return { vm, index: iface.index, device, server: new VhostUserServer(this.native, iface.socketPath, device, log, this.limits) };
  }

  private openVport(sw: Switch, s: SwitchConfig): TapPort {
    return openVport(sw, s.vport!, this.log.child({ vport: s.vport, switch: s.name }), this.native);
  }

  /** Listen, then mode 0660 and the configured owner (docs/configuration.md) before any front-end can connect. */
  private serve(server: VhostUserServer, owner: SocketOwner | undefined): void {
    server.listen();
    applySocketOwner(server.socketPath, owner);
  }

  /**
   * Keep a port's static entries across guest connections: NetDevice.reset() forgets every entry of the port, so
   * on link down the configured `static ... on` entries are put back at once (veb statics never go away) and the
   * `locked lladdr` entry is removed; on link up (TX queue started, before any frame) the locked MAC is installed.
   */
  private bindStatics(p: NetPort, cfg: Config): void {
    const device = p.device;
    const iface = findInterface(cfg, p.vm, p.index)!;
    const sw = this.switches.get(iface.switchName)!;
    const mine = cfg.switches.find((s) => s.name === iface.switchName)?.statics?.filter((st) => st.port === device.name) ?? [];
    const locked = iface.locked === true ? parseMac(iface.lladdr) : undefined;
    if (mine.length === 0 && locked === undefined) {
      device.onLinkChange = undefined;
      return;
    }
    device.onLinkChange = (up) => {
      for (const st of mine) sw.addStatic(st.mac, device);
      if (locked === undefined) return;
      if (up) sw.addStatic(locked, device);
      else if (sw.macTable.staticPort(locked) === device.id) sw.delAddr(locked);
    };
  }

  private async closeDisks(): Promise<void> {
    const ports = this.blkPorts.splice(0);
    this.disksOpened = false;
    await Promise.all(ports.map((b) => this.closeBlkPort(b)));
  }

  /** Close the socket (the guest is disconnected), wait for in-flight requests, flush and close the image. */
  private async closeBlkPort(b: BlkPort): Promise<void> {
    b.server.close();
    try {
      await b.device.drainAll();
      await b.disk.close();
    } catch (err) {
      this.log.error({ dev: b.device.name, image: b.disk.path, reason: (err as Error).message }, 'closing the image failed');
    }
  }

  // ---------------------------------------------------------------- reload

  private async reloadNow(next: Config): Promise<ReloadReport> {
    if (!this.running) throw new Error('Daemon.reload(): the daemon is not running');
    const prev = this.current;
    const plan = planReload(prev, next);
    const eff = plan.effective;
    const prep = await this.prepareReload(plan);

    const report: ReloadReport = {
      added: [],
      removed: [],
      changed: [],
      unchanged: [...plan.net.unchanged, ...plan.disks.unchanged, ...plan.switches.unchanged.map((s) => `switch ${s}`)],
      restartRequired: [],
      details: [],
    };
    const restart = (sentence: string): void => {
      report.restartRequired.push(sentence);
      this.log.warn({ change: sentence }, 'reload: needs a restart');
    };
    plan.restartRequired.forEach(restart);
    const note = (list: 'added' | 'removed' | 'changed', name: string, change: string): void => {
      report[list].push(name);
      report.details!.push({ name, change });
      this.log.info({ dev: name, change }, `reload: ${list}`);
    };
    const problem = (sentence: string, err?: unknown): void => {
      report.restartRequired.push(sentence);
      this.log.error({ reason: err === undefined ? undefined : (err as Error).message }, `reload: ${sentence}`);
    };

    // 1. Take down what goes away or is re-created: a re-created device takes over the same socket path.
    for (const e of plan.net.removed) {
      this.dropNetPort(e.name);
      note('removed', e.name, 'removed: the guest is disconnected');
    }
    for (const c of plan.net.recreated) this.dropNetPort(c.name);
    const closing = [...plan.disks.removed.map((e) => e.name), ...plan.disks.reopened.map((c) => c.name)];
    await Promise.all(closing.map((n) => this.dropBlkPort(n)));
    for (const e of plan.disks.removed) note('removed', e.name, 'removed: the guest is disconnected, the image is flushed and closed');
    const tapsGoing = new Set([...plan.switches.removed.map((s) => s.name), ...plan.switches.changed.filter((c) => c.vport).map((c) => c.name)]);
    for (const v of this.vports.filter((t) => tapsGoing.has(t.switchName) && !prep.vports.includes(t))) {
      v.close();
      this.vports.splice(this.vports.indexOf(v), 1);
    }

    // 2. Switches: removed ones have no ports left (the parser checks every interface names an existing switch).
    for (const s of plan.switches.removed) {
      this.switches.delete(s.name);
      note('removed', `switch ${s.name}`, 'removed');
    }
    for (const [name, sw] of prep.switches) this.switches.set(name, sw);
    this.vports.push(...prep.vports);
    for (const c of plan.switches.changed) {
      const sw = this.switches.get(c.name)!;
      if (c.mtu || c.table) sw.reconfigure({ mtu: c.next.mtu, maxAddr: c.next.maxAddr ?? DEFAULT_MAX_ADDR, timeoutSec: c.next.timeout ?? DEFAULT_TIMEOUT });
      if (c.poll) sw.reconfigure({ poll: c.next.poll ?? false });
    }
    for (const s of prep.deferredVports) {
      try {
        this.vports.push(this.openVport(this.switches.get(s.name)!, s));
      } catch (err) {
        problem(`vport ${s.vport} on switch ${s.name}: cannot open (${(err as Error).message}); fix it and restart vhostd`, err);
      }
    }

    // 3. Interfaces: new and re-created devices, live port flags.
    const fresh: NetPort[] = [];
    for (const e of plan.net.added) fresh.push(this.createNetPort(e.vm, e.config));
    for (const c of plan.net.recreated) fresh.push(this.createNetPort(c.vm, c.next));
    this.netPorts.push(...fresh);
    const liveLocked: NetPort[] = [];
    for (const c of plan.net.live) {
      const p = this.applyPortFlags(c, eff);
      if (c.prev.locked !== c.next.locked) liveLocked.push(p);
      note('changed', c.name, `${c.reasons.join('; ')}; applied live, the guest stays connected`);
    }
    for (const e of plan.net.added) note('added', e.name, `added on switch ${e.config.switchName}`);
    for (const c of plan.net.recreated) note('changed', c.name, `${c.reasons.join('; ')}; device re-created, the guest reconnects`);

    // 4. Switch tables: per-port limits after a new table size, statics and rules wherever ports or lists changed.
    const resync = new Set([...prep.switches.keys(), ...fresh.map((p) => p.device.switchName)]);
    for (const c of plan.switches.changed) {
      if (c.statics || c.rules) resync.add(c.name);
      if (c.table) for (const p of this.portsOn(c.name)) this.switches.get(c.name)!.macTable.setPortLimit(p.device.id, findInterface(eff, p.vm, p.index)!.maxAddr);
    }
    for (const name of resync) this.resyncSwitch(name, prev, eff, fresh, problem);
    for (const p of this.netPorts) if (resync.has(p.device.switchName) || liveLocked.includes(p)) this.bindStatics(p, eff);
    for (const s of plan.switches.added) note('added', `switch ${s.name}`, `added (mtu ${s.mtu}${s.vport ? `, vport ${s.vport}` : ''})`);
    for (const c of plan.switches.changed) {
      note('changed', `switch ${c.name}`, `${c.reasons.join('; ')}; applied live`);
      if (c.mtu) this.mtuSentences(c.name, c.prev.mtu, c.next.mtu, fresh).forEach(restart);
    }

    // 5. Disks: images that were open here until step 1, then every new server listens.
    const newDisks: BlkPort[] = [...prep.disks.values()];
    for (const e of prep.deferredDisks) {
      try {
        const b = await this.openBlkPort(e.vm, e.config, eff);
        const conflict = chainConflicts([...this.blkPorts, ...newDisks, b].map(portImages)).find((c) => c.reader.name === b.device.name || c.owner.name === b.device.name);
        if (conflict) {
          await this.closeBlkPort(b);
          throw new Error(conflictReason(conflict));
        }
        newDisks.push(b);
      } catch (err) {
        // Not served: drop it from the running configuration, so the next reload sees it as new and tries again.
        dropDiskConfig(eff.vms.find((v) => v.name === e.vm)!, e.config.index);
        problem(`${e.name}: ${(err as Error).message}; the disk is not served (fix it and reload)`, err);
      }
    }
    this.blkPorts.push(...newDisks);
    for (const e of plan.disks.added) if (newDisks.some((b) => b.device.name === e.name)) note('added', e.name, `added (${e.config.path})`);
    for (const c of plan.disks.reopened) if (newDisks.some((b) => b.device.name === c.name)) note('changed', c.name, `${c.reasons.join('; ')}; re-opened, the guest reconnects`);

    for (const p of [...fresh, ...newDisks]) {
      try {
        this.serve(p.server, vmSocketOwner(eff, p.vm));
      } catch (err) {
        problem(`${p.server.socketPath}: cannot listen (${(err as Error).message}); restart vhostd`, err);
      }
    }
    if (plan.ownerChanged || plan.vmOwners.length > 0) this.applyOwnerEverywhere(eff, (s, err) => problem(s, err));
    for (const o of plan.vmOwners) note('changed', `vm ${o.vm}`, `owner of its sockets ${o.from} → ${o.to}; applied live, connected guests stay connected`);
    if (plan.logLevel) {
      setLogLevel(this.log, plan.logLevel.to);
      note('changed', 'log level', `${plan.logLevel.from} → ${plan.logLevel.to}; applied live`);
    }

    this.current = eff;
    sortByConfig(this.netPorts, eff, (p) => `${p.vm}.net${p.index}`);
    sortByConfig(this.blkPorts, eff, (b) => `${b.vm}.disk${b.index}`);
    this.log.info(
      { added: report.added.length, removed: report.removed.length, changed: report.changed.length, unchanged: report.unchanged.length, restartRequired: report.restartRequired.length },
      'configuration reloaded',
    );
    return report;
  }

  /** Open new images and taps; on any failure close what was opened and throw: nothing running was touched. */
  private async prepareReload(plan: ReloadPlan): Promise<Prepared> {
    const prep: Prepared = { disks: new Map(), deferredDisks: [], switches: new Map(), vports: [], deferredVports: [] };
    const openImages = new Set(this.blkPorts.map((b) => b.disk.path));
    const openTaps = new Set(this.vports.map((v) => v.name));
    try {
      for (const e of [...plan.disks.added, ...plan.disks.reopened.map((c) => ({ name: c.name, vm: c.vm, config: c.next }))]) {
        if (openImages.has(e.config.path)) {
          // Still open here (cache/readonly change, or moved to another vm): a second open would fight over the
          // image's metadata, so it is re-opened once the old disk has closed; check it is still there now.
          fs.accessSync(e.config.path, e.config.readOnly ? fs.constants.R_OK : fs.constants.R_OK | fs.constants.W_OK);
          prep.deferredDisks.push(e);
        } else {
          prep.disks.set(e.name, await this.openBlkPort(e.vm, e.config, plan.effective));
        }
      }
      this.checkChainsAfterReload(plan, prep);
      for (const s of plan.switches.added) prep.switches.set(s.name, newSwitch(s));
      for (const s of [...plan.switches.added, ...plan.switches.changed.filter((c) => c.vport).map((c) => c.next)]) {
        if (s.vport === undefined) continue;
        if (openTaps.has(s.vport)) prep.deferredVports.push(s);
        else prep.vports.push(this.openVport(prep.switches.get(s.name) ?? this.switches.get(s.name)!, s));
      }
    } catch (err) {
      for (const v of prep.vports) v.close();
      await Promise.all([...prep.disks.values()].map((b) => b.disk.close().catch(() => undefined)));
      const where = err instanceof DiskConflictError ? err.fields() : {};
      this.log.error({ ...where, reason: (err as Error).message }, 'reload refused: nothing was changed');
      throw err;
    }
    return prep;
  }

  /**
   * The disks that run once `plan` is applied (those kept, those just opened, and the deferred ones, which will
   * reopen the image a running disk has open now and are judged by its chain) must not read each other's images:
   * a new disk whose image is a backing file of a kept disk, or the other way round, refuses the reload.
   */
  private checkChainsAfterReload(plan: ReloadPlan, prep: Prepared): void {
    const closing = new Set([...plan.disks.removed.map((e) => e.name), ...plan.disks.reopened.map((c) => c.name)]);
    const kept = this.blkPorts.filter((b) => !closing.has(b.device.name)).map(portImages);
    const fresh = [
      ...[...prep.disks.values()].map(portImages),
      ...prep.deferredDisks.map((e) => ({ name: e.name, vm: e.vm, path: e.config.path, files: this.blkPorts.find((b) => b.disk.path === e.config.path)?.disk.files })),
    ];
    const freshNames = new Set(fresh.map((d) => d.name));
    const conflict = chainConflicts([...kept, ...fresh]).find((c) => freshNames.has(c.reader.name) || freshNames.has(c.owner.name));
    if (conflict) throw new DiskConflictError(conflict, freshNames.has(conflict.owner.name) ? conflict.owner.name : conflict.reader.name);
  }

  private dropNetPort(name: string): void {
    const i = this.netPorts.findIndex((p) => p.device.name === name);
    if (i < 0) return;
    const [p] = this.netPorts.splice(i, 1);
    p!.server.close(); // the guest's reset forgets its MACs while it is still a port
    p!.device.detach();
  }

  private async dropBlkPort(name: string): Promise<void> {
    const i = this.blkPorts.findIndex((b) => b.device.name === name);
    if (i >= 0) await this.closeBlkPort(this.blkPorts.splice(i, 1)[0]!);
  }

  private portsOn(sw: string): NetPort[] {
    return this.netPorts.filter((p) => p.device.switchName === sw);
  }

  /** Only the port flags that changed (Switch.configurePort keeps the others), guest connected throughout. */
  private applyPortFlags(c: Changed<InterfaceConfig>, eff: Config): NetPort {
    const p = this.netPorts.find((x) => x.device.name === c.name)!;
    const sw = this.switches.get(c.next.switchName)!;
    const full = portOptions(c.next, true);
    const opts: PortOptions = {};
    for (const f of changedPortFlags(c.prev, c.next)) (opts as Record<string, unknown>)[f] = full[f];
    sw.configurePort(p.device, opts);
    if ('maxAddr' in opts && opts.maxAddr === undefined) sw.macTable.setPortLimit(p.device.id); // back to the default
    if ('locked' in opts) {
      const mac = parseMac(c.next.lladdr);
      const configured = findSwitchConfig(eff, sw.name)?.statics?.some((st) => st.mac === c.next.lladdr) ?? false;
      if (opts.locked && p.device.linkUp) sw.addStatic(mac, p.device);
      else if (!opts.locked && !configured && sw.macTable.staticPort(mac) === p.device.id) sw.delAddr(mac);
    }
    return p;
  }

  /**
   * Statics and rules of switch `name` after a reload: statics no longer configured are deleted, the configured
   * ones (re-)added; rules are rebuilt on every port when the list changed, else added for new ports only.
   */
  private resyncSwitch(name: string, prev: Config, eff: Config, fresh: NetPort[], problem: (sentence: string, err: unknown) => void): void {
    const sw = this.switches.get(name)!;
    const before = findSwitchConfig(prev, name);
    const after = findSwitchConfig(eff, name)!;
    const keep = new Set((after.statics ?? []).map((st) => `${st.mac} ${st.port}`));
    for (const st of before?.statics ?? []) if (!keep.has(`${st.mac} ${st.port}`) && sw.macTable.staticPort(parseMac(st.mac)) >= 0) sw.delAddr(st.mac);
    for (const st of after.statics ?? []) {
      try {
        sw.addStatic(st.mac, st.port);
      } catch (err) {
        problem(`switch ${name}: static ${st.mac} on ${st.port} not installed (${(err as Error).message})`, err); // e.g. maxaddr below the statics
      }
    }
    const rulesChanged = before === undefined || JSON.stringify(stripPos(before.rules)) !== JSON.stringify(stripPos(after.rules));
    if (rulesChanged) for (const port of sw.ports()) sw.flushRules(port);
    const freshNames = new Set(fresh.map((p) => p.device.name));
    for (const r of after.rules ?? []) if (rulesChanged || freshNames.has(r.port)) sw.addRule(r.port, filterRule(r));
  }

  /** A new switch MTU reaches a guest when it renegotiates; connected ones (and a tap) keep theirs until then. */
  private mtuSentences(name: string, from: number, to: number, fresh: NetPort[]): string[] {
    const out: string[] = [];
    for (const p of this.portsOn(name)) {
      if (!fresh.includes(p) && p.server.connected) {
        out.push(`${p.device.name}: switch ${name} mtu ${from} → ${to}; the connected guest keeps MTU ${p.device.mtu} until its QEMU restarts (host_mtu=${to})`);
      }
    }
    for (const v of this.vports) if (v.switchName === name && v.mtu !== to) out.push(`vport ${v.name}: switch ${name} mtu ${from} → ${to}; the tap keeps MTU ${v.mtu} until vhostd restarts`);
    return out;
  }

  /**
   * `socket owner` or a vm's `owner` changed: chmod/chown every socket in place (connected guests are not
   * affected). Device sockets get their vm's owner, the control socket `socket owner`.
   */
  private applyOwnerEverywhere(eff: Config, problem: (sentence: string, err: unknown) => void): void {
    const sockets: { path: string; owner: SocketOwner | undefined }[] = [...this.netPorts, ...this.blkPorts].map((p) => ({ path: p.server.socketPath, owner: vmSocketOwner(eff, p.vm) }));
    const control = controlSocketPath(eff);
    if (isSocket(control)) sockets.push({ path: control, owner: eff.socketOwner });
    for (const { path, owner } of sockets) {
      try {
        applySocketOwner(path, owner);
      } catch (err) {
        problem(`${path}: cannot apply the socket owner (${(err as Error).message})`, err);
      }
    }
    const vmOwners = eff.vms.filter((v) => v.owner).map((v) => v.name);
    this.log.info({ user: eff.socketOwner?.user, group: eff.socketOwner?.group, vmsWithOwner: vmOwners, sockets: sockets.length }, 'reload: socket owner applied');
  }
}

/** A disk that is not served leaves the running configuration (a later reload sees it as new and tries again). */
function dropDiskConfig(vm: VmConfig, index: number): void {
  vm.disks = vm.disks!.filter((d) => d.index !== index);
  if (vm.disks.length === 0) delete vm.disks;
}

/** A disk as the chain check sees it: its name, vm, image path and the files it reads. */
interface DiskImages {
  name: string;
  vm: string;
  path: string;
  files: DiskFiles | undefined;
}

/** `reader`'s backing chain holds `owner`'s image: reader's guest would read what owner's guest writes. */
interface ChainConflict {
  reader: DiskImages;
  owner: DiskImages;
}

function portImages(b: BlkPort): DiskImages {
  return { name: b.device.name, vm: b.vm, path: b.disk.path, files: b.disk.files };
}

/** Every pair of disks where one's backing chain holds the other's image (compared by device and inode). */
function chainConflicts(disks: readonly DiskImages[]): ChainConflict[] {
  const out: ChainConflict[] = [];
  for (const reader of disks) {
    for (const owner of disks) {
      if (owner !== reader && owner.files && reader.files?.chain.has(owner.files.image)) out.push({ reader, owner });
    }
  }
  return out;
}

function conflictReason(c: ChainConflict): string {
  return `the image ${c.owner.path} of ${c.owner.name} (vm ${c.owner.vm}) is a backing file of ${c.reader.name} (vm ${c.reader.vm}, image ${c.reader.path}); ${c.reader.name} would read what ${c.owner.vm}'s guest writes`;
}

/** A reload refused because one disk would read another's image; `dev` is the disk the reload adds or re-opens. */
class DiskConflictError extends Error {
  constructor(
    readonly conflict: ChainConflict,
    readonly dev: string,
  ) {
    super(`${dev}: ${conflictReason(conflict)}`);
    this.name = 'DiskConflictError';
  }

  /** Log fields naming the disk the reload brings in and the disk it conflicts with. */
  fields(): Record<string, string> {
    const [mine, other] = this.conflict.reader.name === this.dev ? [this.conflict.reader, this.conflict.owner] : [this.conflict.owner, this.conflict.reader];
    return { vm: mine.vm, dev: mine.name, image: mine.path, conflictsWith: other.name };
  }
}

function newSwitch(s: SwitchConfig): Switch {
  // Fair eviction when the table is full (docs/configuration.md `maxaddr`), instead of veb's "learn nothing more".
  return new Switch(s.name, { mtu: s.mtu, maxAddr: s.maxAddr, timeoutSec: s.timeout, evict: true, poll: s.poll ?? false });
}

/** Port flags of an interface; with `defaults`, absent flags are spelled out (a reload that removes one). */
function portOptions(i: InterfaceConfig, defaults = false): PortOptions {
  if (!defaults) {
    return { learn: i.learn, discover: i.discover, blockNonIp: i.blockNonIp, locked: i.locked, span: i.span, protected: i.protected, untagged: i.untagged, tagged: i.tagged, maxAddr: i.maxAddr };
  }
  return {
    learn: i.learn ?? true,
    discover: i.discover ?? true,
    blockNonIp: i.blockNonIp ?? false,
    locked: i.locked ?? false,
    span: i.span ?? false,
    protected: i.protected ?? [],
    untagged: i.untagged ?? DEFAULT_PVID,
    tagged: i.tagged ?? [],
    maxAddr: i.maxAddr,
  };
}

function findInterface(cfg: Config, vm: string, index: number): InterfaceConfig | undefined {
  return cfg.vms.find((v) => v.name === vm)?.interfaces.find((i) => i.index === index);
}

function findSwitchConfig(cfg: Config, name: string): SwitchConfig | undefined {
  return cfg.switches.find((s) => s.name === name);
}

function stripPos(rules: RuleConfig[] | undefined): unknown[] {
  return (rules ?? []).map(({ pos: _pos, ...r }) => r);
}

/** Sort ports in configuration order (status output follows the file). */
function sortByConfig<T>(ports: T[], cfg: Config, name: (p: T) => string): void {
  const order = new Map<string, number>();
  for (const vm of cfg.vms) {
    for (const i of vm.interfaces) order.set(`${vm.name}.net${i.index}`, order.size);
    for (const d of vm.disks ?? []) order.set(`${vm.name}.disk${d.index}`, order.size);
  }
  ports.sort((a, b) => (order.get(name(a)) ?? 0) - (order.get(name(b)) ?? 0));
}

function isSocket(path: string): boolean {
  try {
    return fs.lstatSync(path).isSocket();
  } catch {
    return false;
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

/** The front-end limits of the running configuration (`max guest memory`), read when a request needs them. */
function limitsOf(config: () => Config): FrontendLimits {
  return {
    get maxGuestMemory(): number {
      return config().maxGuestMemory ?? DEFAULT_MAX_GUEST_MEMORY;
    },
  };
}
