/**
 * Read-only views of a running Daemon for the control socket: `status` (every vm device) and `show-switch`
 * (ports with flags and counters, the MAC table with ages, like `ifconfig veb0` and `ifconfig veb0 addr`).
 * Counters come from Daemon.stats(), the one place that gathers them; port settings come from daemon.config,
 * which says what is being served (reload keeps it in step with the switches).
 */
import type { Daemon, PortStats } from '../daemon.js';
import type { InterfaceConfig, SwitchConfig } from '../config/model.js';
import { protocolFeatureNames } from '../vhost-user/features.js';
import type { VhostUserServer } from '../vhost-user/server.js';
import { deviceFeatureNames } from './feature-names.js';
import { ControlError, type DeviceStatus, type PortView, type QueueStatus, type StatusResult, type SwitchView } from './protocol.js';

function queues(stats: PortStats | undefined): QueueStatus[] {
  return (stats?.vrings ?? []).map((v) => ({
    index: Number(v.i),
    started: v.started === true,
    enabled: v.enabled === true,
    kicks: Number(v.kicks),
    calls: Number(v.calls),
    lastAvail: Number(v.lastAvail),
    broken: v.broken === true,
  }));
}

function negotiated(server: VhostUserServer, kind: 'net' | 'blk'): { features: string[]; protocolFeatures: string[] } {
  const s = server.currentSession;
  if (!s) return { features: [], protocolFeatures: [] };
  return { features: deviceFeatureNames(kind, s.ackedFeatures), protocolFeatures: protocolFeatureNames(s.protocolFeatures) };
}

/** `status`: every vm device with its connection, negotiated features, queues, MTU or image, and counters. */
export function statusView(daemon: Daemon): StatusResult {
  const stats = new Map(daemon.stats().map((s) => [s.port, s]));
  const byVm = new Map<string, DeviceStatus[]>(daemon.config.vms.map((vm) => [vm.name, []]));
  const add = (d: DeviceStatus): void => {
    const list = byVm.get(d.vm) ?? [];
    list.push(d);
    byVm.set(d.vm, list);
  };
  for (const p of daemon.netPorts) {
    const s = stats.get(p.device.name);
    add({
      vm: p.vm,
      kind: 'net',
      name: p.device.name,
      socket: p.server.socketPath,
      connected: p.server.connected,
      connections: p.server.connections,
      droppedConnections: p.server.droppedConnections,
      ...negotiated(p.server, 'net'),
      queues: queues(s),
      counters: { ...p.device.counters },
      net: { switch: p.device.switchName, mac: p.device.mac, mtu: p.device.mtu, switchPort: s?.switchPort ?? null },
    });
  }
  for (const b of daemon.blkPorts) {
    add({
      vm: b.vm,
      kind: 'disk',
      name: b.device.name,
      socket: b.server.socketPath,
      connected: b.server.connected,
      connections: b.server.connections,
      droppedConnections: b.server.droppedConnections,
      ...negotiated(b.server, 'blk'),
      queues: queues(stats.get(b.device.name)),
      counters: { ...b.device.counters },
      disk: { image: b.disk.path, format: b.disk.format, readOnly: b.disk.readOnly, sizeBytes: b.disk.size, writeback: b.device.writeback, engine: b.disk.engine ?? 'threads' },
    });
  }
  // Configuration order of vms; within a vm, interfaces then disks, each by index.
  const devices = [...byVm.values()].flatMap((list) =>
    list.sort((a, b) => (a.kind === b.kind ? indexOf(a.name) - indexOf(b.name) : a.kind === 'net' ? -1 : 1)),
  );
  const switches = [...daemon.switches.values()].map((sw) => {
    const t = sw.totals();
    return { name: sw.name, mtu: sw.mtu, poll: sw.poller.spin, ports: t.ports, macEntries: t.macEntries };
  });
  return { config: daemon.config.file, pid: process.pid, devices, switches };
}

/** N of "<vm>.net<N>" / "<vm>.disk<N>". */
const indexOf = (name: string): number => Number(/(\d+)$/.exec(name)?.[1] ?? 0);

/** ifconfig(8) veb port flag names for the settings of an interface. */
function portFlags(iface: InterfaceConfig | undefined): string[] {
  const flags: string[] = [];
  if (iface?.learn ?? true) flags.push('LEARNING');
  if (iface?.discover ?? true) flags.push('DISCOVER');
  if (iface?.blockNonIp) flags.push('BLOCKNONIP');
  if (iface?.locked) flags.push('LOCKED');
  if (iface?.span) flags.push('SPAN');
  return flags;
}

/** `show-switch`: ports with flags, settings and counters; the MAC table with ages. Throws for an unknown switch. */
export function switchView(daemon: Daemon, name: string): SwitchView {
  const sw = daemon.switches.get(name);
  if (!sw) throw unknownSwitch(daemon, name);
  const cfg: SwitchConfig | undefined = daemon.config.switches.find((s) => s.name === name);
  const ifaces = new Map<string, InterfaceConfig>();
  for (const vm of daemon.config.vms) for (const i of vm.interfaces) ifaces.set(`${vm.name}.net${i.index}`, i);
  const connected = new Map(daemon.netPorts.map((p) => [p.device.name, p.server.connected]));
  const ports: PortView[] = sw.ports().map((port) => {
    const iface = ifaces.get(port.name);
    const isVm = connected.has(port.name);
    const view: PortView = {
      name: port.name,
      id: port.id,
      kind: isVm ? 'vm' : 'vport',
      flags: portFlags(isVm ? iface : undefined),
      protected: iface?.protected ?? [],
      untagged: iface?.untagged ?? 1,
      tagged: iface?.tagged ?? [],
      connected: connected.get(port.name) ?? true,
      counters: { ...sw.counters(port.id) },
    };
    const maxAddr = iface?.maxAddr ?? cfg?.maxAddr;
    if (maxAddr !== undefined) view.maxAddr = maxAddr;
    return view;
  });
  return {
    name: sw.name,
    mtu: sw.mtu,
    maxAddr: sw.macTable.maxAddr,
    timeoutSec: sw.macTable.timeoutSec,
    poll: sw.poller.spin,
    ports,
    addresses: sw.entries().map((e) => ({ mac: e.mac, port: e.port, ageSec: Math.max(0, Math.round(e.ageSec)), static: e.static })),
    totals: { ...sw.totals() },
  };
}

/** The error for a switch name that is not configured, listing the known ones. */
export function unknownSwitch(daemon: Daemon, name: string): ControlError {
  const known = [...daemon.switches.keys()].map((n) => JSON.stringify(n)).join(', ');
  return new ControlError(`unknown switch ${JSON.stringify(name)}${known ? `, expected one of: ${known}` : ' (no switches configured)'}`);
}
