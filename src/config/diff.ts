/**
 * planReload: what `vhostctl reload` (docs/control.md) has to do to turn the running configuration into the next one.
 * Pure: two Configs in, a plan out; the Daemon applies it. Devices are keyed by name (`<vm>.net<N>`,
 * `<vm>.disk<N>`, the socket name), switches by name. Per interface: a changed lladdr or switch re-creates the
 * device (the guest reconnects); port flags (docs/configuration.md) are applied live. Per disk: a changed image,
 * format, readonly or cache re-opens it, and so does a changed `backing dir` list (disks not configured raw).
 * Per switch: maxaddr, timeout, poll, statics, rules, vport and mtu are applied live (mtu only for new negotiations),
 * and so are the socket owner, a vm's `owner` and the log level. Settings read once at start-up (socket dir, control socket,
 * metrics listener) keep their running value in `effective` and are listed
 * in `restartRequired`, so `daemon.config` always says what is actually served.
 */
import path from 'node:path';
import {
  controlSocketPath,
  DEFAULT_MAX_ADDR,
  DEFAULT_TIMEOUT,
  type Config,
  type DiskConfig,
  type InterfaceConfig,
  type SocketOwner,
  type SwitchConfig,
  vmSocketOwner,
} from './model.js';

/** One device of a configuration: its name and its vm. */
export interface Entry<T> {
  name: string;
  vm: string;
  config: T;
}

/** A device present in both configurations that differs; `reasons` are short "field: old → new" texts. */
export interface Changed<T> {
  name: string;
  vm: string;
  prev: T;
  next: T;
  reasons: string[];
}

/** A switch present in both configurations that differs, with what differs. */
export interface SwitchChange {
  name: string;
  prev: SwitchConfig;
  next: SwitchConfig;
  mtu: boolean;
  /** maxaddr or timeout (the MAC table's limits). */
  table: boolean;
  /** `poll` turned on or off. */
  poll: boolean;
  statics: boolean;
  rules: boolean;
  vport: boolean;
  reasons: string[];
}

export interface ReloadPlan {
  /** The configuration to run once the plan is applied: `next`, except settings that need a restart. */
  effective: Config;
  net: {
    added: Entry<InterfaceConfig>[];
    removed: Entry<InterfaceConfig>[];
    /** lladdr or switch changed: the device is re-created and the guest reconnects. */
    recreated: Changed<InterfaceConfig>[];
    /** Only port flags changed: Switch.configurePort, the guest stays connected. */
    live: Changed<InterfaceConfig>[];
    unchanged: string[];
  };
  disks: {
    added: Entry<DiskConfig>[];
    removed: Entry<DiskConfig>[];
    /** Image, format, readonly or cache changed: closed and re-opened, the guest reconnects. */
    reopened: Changed<DiskConfig>[];
    unchanged: string[];
  };
  switches: {
    added: SwitchConfig[];
    removed: SwitchConfig[];
    changed: SwitchChange[];
    unchanged: string[];
  };
  /** `socket owner` changed: every socket gets the new owner (chmod/chown only). */
  ownerChanged: boolean;
  /**
   * Vms in both configurations, with an `owner` in either, whose device sockets get another owner (their `owner`
   * merged with `socket owner`): chown in place, connected guests stay connected. `from`/`to` as `user:group`.
   */
  vmOwners: { vm: string; from: string; to: string }[];
  /** `log level` changed: applied live (every device logger follows the root's level). */
  logLevel: { from: string; to: string } | null;
  /** Human sentences: what this reload did not apply and needs a vhostd restart. */
  restartRequired: string[];
}

/** Port flags applied live, with their defaults when absent (docs/configuration.md). */
export const LIVE_PORT_FLAGS = ['learn', 'discover', 'blockNonIp', 'locked', 'span', 'protected', 'untagged', 'tagged', 'maxAddr'] as const;
export type LivePortFlag = (typeof LIVE_PORT_FLAGS)[number];

const FLAG_DEFAULTS: Record<LivePortFlag, unknown> = {
  learn: true,
  discover: true,
  blockNonIp: false,
  locked: false,
  span: false,
  protected: [],
  untagged: 1,
  tagged: [],
  maxAddr: undefined,
};

/** The flags of `iface` that differ from `prev` (absent and default compare equal). */
export function changedPortFlags(prev: InterfaceConfig, next: InterfaceConfig): LivePortFlag[] {
  return LIVE_PORT_FLAGS.filter((f) => !same(prev[f] ?? FLAG_DEFAULTS[f], next[f] ?? FLAG_DEFAULTS[f]));
}

export function planReload(prev: Config, nextIn: Config): ReloadPlan {
  const next = structuredClone(nextIn);
  const restartRequired: string[] = [];
  const effective = keepStartupSettings(prev, next, restartRequired);

  const plan: ReloadPlan = {
    effective,
    net: { added: [], removed: [], recreated: [], live: [], unchanged: [] },
    disks: { added: [], removed: [], reopened: [], unchanged: [] },
    switches: { added: [], removed: [], changed: [], unchanged: [] },
    ownerChanged: !same(ownerIds(prev.socketOwner), ownerIds(effective.socketOwner)),
    vmOwners: [],
    logLevel: (prev.logLevel ?? 'info') === (effective.logLevel ?? 'info') ? null : { from: prev.logLevel ?? 'info', to: effective.logLevel ?? 'info' },
    restartRequired,
  };

  for (const vm of effective.vms) {
    const before = prev.vms.find((v) => v.name === vm.name);
    // A vm without an owner of its own in either file follows `socket owner`: ownerChanged covers it.
    if (!before || (!before.owner && !vm.owner)) continue;
    const [from, to] = [vmSocketOwner(prev, vm.name), vmSocketOwner(effective, vm.name)];
    if (!same(ownerIds(from), ownerIds(to))) plan.vmOwners.push({ vm: vm.name, from: ownerText(from), to: ownerText(to) });
  }

  const oldIfaces = interfaces(prev);
  const newIfaces = interfaces(effective);
  for (const [name, n] of newIfaces) {
    const o = oldIfaces.get(name);
    if (!o) {
      plan.net.added.push(n);
      continue;
    }
    const p = o.config;
    const c = n.config;
    const recreate: string[] = [];
    if (p.lladdr !== c.lladdr) recreate.push(`lladdr ${p.lladdr} → ${c.lladdr}`);
    if (p.switchName !== c.switchName) recreate.push(`switch ${p.switchName} → ${c.switchName}`);
    if (p.socketPath !== c.socketPath) recreate.push(`socket ${p.socketPath} → ${c.socketPath}`);
    if (recreate.length > 0) {
      plan.net.recreated.push({ name, vm: n.vm, prev: p, next: c, reasons: recreate });
      continue;
    }
    const flags = changedPortFlags(p, c);
    if (flags.length > 0) {
      const reasons = flags.map((f) => `${f} ${show(p[f] ?? FLAG_DEFAULTS[f])} → ${show(c[f] ?? FLAG_DEFAULTS[f])}`);
      plan.net.live.push({ name, vm: n.vm, prev: p, next: c, reasons });
    } else {
      plan.net.unchanged.push(name);
    }
  }
  for (const [name, o] of oldIfaces) if (!newIfaces.has(name)) plan.net.removed.push(o);

  const oldDisks = disks(prev);
  const newDisks = disks(effective);
  // `backing dir` changes what a qcow2 chain may reach: images that may have one are re-opened under the new list.
  const dirsText = (c: Config): string => (c.backingDirs ?? []).join(', ') || 'none';
  const dirsChanged = dirsText(prev) !== dirsText(effective);
  for (const [name, n] of newDisks) {
    const o = oldDisks.get(name);
    if (!o) {
      plan.disks.added.push(n);
      continue;
    }
    const p = o.config;
    const c = n.config;
    const reasons: string[] = [];
    if (p.path !== c.path) reasons.push(`image ${p.path} → ${c.path}`);
    if (p.format !== c.format) reasons.push(`format ${p.format ?? 'detected'} → ${c.format ?? 'detected'}`);
    if (p.readOnly !== c.readOnly) reasons.push(`readonly ${p.readOnly} → ${c.readOnly}`);
    if (p.cacheBytes !== c.cacheBytes) reasons.push(`cache ${p.cacheBytes ?? 'default'} → ${c.cacheBytes ?? 'default'}`);
    if (p.socketPath !== c.socketPath) reasons.push(`socket ${p.socketPath} → ${c.socketPath}`);
    if (dirsChanged && c.format !== 'raw') reasons.push(`backing dir ${dirsText(prev)} → ${dirsText(effective)}`);
    if (reasons.length > 0) plan.disks.reopened.push({ name, vm: n.vm, prev: p, next: c, reasons });
    else plan.disks.unchanged.push(name);
  }
  for (const [name, o] of oldDisks) if (!newDisks.has(name)) plan.disks.removed.push(o);

  const oldSwitches = new Map(prev.switches.map((s) => [s.name, s]));
  const newNames = new Set(effective.switches.map((s) => s.name));
  for (const c of effective.switches) {
    const p = oldSwitches.get(c.name);
    if (!p) {
      plan.switches.added.push(c);
      continue;
    }
    const ch: SwitchChange = { name: c.name, prev: p, next: c, mtu: false, table: false, poll: false, statics: false, rules: false, vport: false, reasons: [] };
    if (p.mtu !== c.mtu) {
      ch.mtu = true;
      ch.reasons.push(`mtu ${p.mtu} → ${c.mtu}`);
    }
    const [pm, cm] = [p.maxAddr ?? DEFAULT_MAX_ADDR, c.maxAddr ?? DEFAULT_MAX_ADDR];
    const [pt, ct] = [p.timeout ?? DEFAULT_TIMEOUT, c.timeout ?? DEFAULT_TIMEOUT];
    if (pm !== cm || pt !== ct) {
      ch.table = true;
      if (pm !== cm) ch.reasons.push(`maxaddr ${pm} → ${cm}`);
      if (pt !== ct) ch.reasons.push(`timeout ${pt} → ${ct}`);
    }
    if ((p.poll ?? false) !== (c.poll ?? false)) {
      ch.poll = true;
      ch.reasons.push(c.poll ? 'poll mode on' : 'poll mode off');
    }
    if (!same(p.statics ?? [], c.statics ?? [])) {
      ch.statics = true;
      ch.reasons.push(`statics ${(p.statics ?? []).length} → ${(c.statics ?? []).length}`);
    }
    if (!same(p.rules ?? [], c.rules ?? [])) {
      ch.rules = true;
      ch.reasons.push(`rules ${(p.rules ?? []).length} → ${(c.rules ?? []).length}`);
    }
    if (p.vport !== c.vport) {
      ch.vport = true;
      ch.reasons.push(`vport ${p.vport ?? 'none'} → ${c.vport ?? 'none'}`);
    }
    if (ch.reasons.length > 0) plan.switches.changed.push(ch);
    else plan.switches.unchanged.push(c.name);
  }
  for (const p of prev.switches) if (!newNames.has(p.name)) plan.switches.removed.push(p);
  return plan;
}

/**
 * `next` with the settings vhostd reads only at start-up put back to their running values (each difference is
 * reported). A socket dir change keeps every socket in the running directory: QEMU's reconnect=1 keeps dialling
 * the path it was started with, so moving a connected guest's socket would cut it off for good.
 */
function keepStartupSettings(prev: Config, next: Config, restart: string[]): Config {
  const nextControl = controlSocketPath(next); // before the socket dir is put back: an implicit one follows it
  if (prev.socketDir !== next.socketDir) {
    restart.push(`socket dir: ${prev.socketDir} → ${next.socketDir} (restart vhostd; until then every socket stays in ${prev.socketDir})`);
    const move = (p: string): string => (path.dirname(p) === next.socketDir ? path.join(prev.socketDir, path.basename(p)) : p);
    for (const vm of next.vms) {
      for (const i of vm.interfaces) i.socketPath = move(i.socketPath);
      for (const d of vm.disks ?? []) d.socketPath = move(d.socketPath);
    }
    next.socketDir = prev.socketDir;
  }
  if (controlSocketPath(prev) !== nextControl) {
    restart.push(`control socket: ${controlSocketPath(prev)} → ${nextControl} (restart vhostd)`);
  }
  next.controlPath = prev.controlPath;
  if (!same(prev.metricsListen, next.metricsListen)) {
    restart.push(`metrics listen: ${listen(prev.metricsListen)} → ${listen(next.metricsListen)} (restart vhostd)`);
  }
  next.metricsListen = prev.metricsListen;
  // Keep absent fields absent, so a config that had none compares equal to itself in tests and in status output.
  for (const k of ['controlPath', 'metricsListen'] as const) if (next[k] === undefined) delete next[k];
  return next;
}

function interfaces(cfg: Config): Map<string, Entry<InterfaceConfig>> {
  const m = new Map<string, Entry<InterfaceConfig>>();
  for (const vm of cfg.vms) for (const i of vm.interfaces) m.set(`${vm.name}.net${i.index}`, { name: `${vm.name}.net${i.index}`, vm: vm.name, config: i });
  return m;
}

function disks(cfg: Config): Map<string, Entry<DiskConfig>> {
  const m = new Map<string, Entry<DiskConfig>>();
  for (const vm of cfg.vms) for (const d of vm.disks ?? []) m.set(`${vm.name}.disk${d.index}`, { name: `${vm.name}.disk${d.index}`, vm: vm.name, config: d });
  return m;
}

function ownerIds(o: SocketOwner | undefined): [number, number] {
  return [o?.uid ?? -1, o?.gid ?? -1];
}

/** "user:group", "user", ":group" as configured, or "none" (the daemon's own user and group). */
function ownerText(o: SocketOwner | undefined): string {
  const user = o && o.uid !== -1 ? (o.user ?? String(o.uid)) : '';
  const group = o && o.gid !== -1 ? `:${o.group ?? o.gid}` : '';
  return user + group || 'none';
}

function listen(l: Config['metricsListen']): string {
  return l ? `${l.host}:${l.port}` : 'off';
}

function show(v: unknown): string {
  if (Array.isArray(v)) return v.length === 0 ? 'none' : v.join(',');
  return v === undefined ? 'default' : String(v);
}

/** Structural equality ignoring source positions (a moved line is not a change). */
function same(a: unknown, b: unknown): boolean {
  const strip = (k: string, v: unknown): unknown => (k === 'pos' ? undefined : v);
  return JSON.stringify(a, strip) === JSON.stringify(b, strip);
}
