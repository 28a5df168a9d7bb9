/**
 * Human-readable output of vhostctl (the default; `--json` prints the result as the daemon sent it). Layout after
 * ifconfig(8): one line per device or port with indented detail lines, zero drop counters left out.
 */
import { formatShellArgs } from '../config/qemu-args.js';
import type {
  DeviceStatus,
  LogLevelResult,
  QemuArgsResult,
  ReloadReport,
  StatusResult,
  SwitchEditResult,
  SwitchView,
} from './protocol.js';

/** "key value key value" of the counters, in their order; with `nonZero`, zeros are left out. */
function counterLine(c: Record<string, number>, nonZero = false): string {
  const parts = Object.entries(c)
    .filter(([, v]) => !nonZero || v !== 0)
    .map(([k, v]) => `${k} ${v}`);
  return parts.length ? parts.join(' ') : 'all zero';
}

/** 1073741824 → "1 GiB"; sizes that are not a whole number of units keep their bytes. */
export function formatBytes(n: number): string {
  for (const [unit, size] of [['TiB', 2 ** 40], ['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) {
    if (n >= size) return Number.isInteger(n / size) ? `${n / size} ${unit}` : `${(n / size).toFixed(1)} ${unit} (${n} bytes)`;
  }
  return `${n} bytes`;
}

function device(d: DeviceStatus): string[] {
  const out = [`  ${d.name.padEnd(12)} ${d.kind.padEnd(5)} ${(d.connected ? 'connected' : 'not connected').padEnd(14)} ${d.socket}`];
  if (d.net) out.push(`      switch ${d.net.switch}  lladdr ${d.net.mac}  mtu ${d.net.mtu}`);
  if (d.disk) {
    out.push(`      image ${d.disk.image}  ${d.disk.format}  ${d.disk.readOnly ? 'read-only' : 'read-write'}  ${formatBytes(d.disk.sizeBytes)}  ${d.disk.writeback ? 'writeback' : 'write-through'}  engine ${d.disk.engine}`);
  }
  out.push(`      connections ${d.connections}, dropped ${d.droppedConnections}`);
  if (d.connected) {
    out.push(`      features: ${d.features.join(' ') || 'none yet'}`);
    out.push(`      protocol: ${d.protocolFeatures.join(' ') || 'none yet'}`);
    for (const q of d.queues) {
      const state = [q.started ? 'started' : 'stopped', q.enabled ? 'enabled' : 'disabled', ...(q.broken ? ['BROKEN'] : [])].join(' ');
      out.push(`      queue ${q.index}: ${state}  kicks ${q.kicks} calls ${q.calls} avail ${q.lastAvail}`);
    }
  }
  out.push(`      counters: ${counterLine(d.counters)}`);
  if (d.net?.switchPort) out.push(`      switch port: ${counterLine(d.net.switchPort, true)}`);
  return out;
}

/** `vhostctl status`: the switches, then per vm its devices with detail lines. */
export function formatStatus(s: StatusResult): string {
  const out = [`vhostd pid ${s.pid}, configuration ${s.config}`];
  for (const sw of s.switches) out.push(`switch ${sw.name}: mtu ${sw.mtu}${sw.poll ? ', poll mode' : ''}, ${sw.ports} ports, ${sw.macEntries} addresses`);
  let vm = '';
  for (const d of s.devices) {
    if (d.vm !== vm) {
      vm = d.vm;
      out.push('', `vm ${vm}`);
    }
    out.push(...device(d));
  }
  if (s.devices.length === 0) out.push('', 'no vm devices');
  return out.join('\n');
}

/** `show switch NAME`: the switch, its ports (ifconfig veb0) and its MAC table (ifconfig veb0 addr). */
export function formatSwitch(v: SwitchView): string {
  const out = [`switch ${v.name}: mtu ${v.mtu} maxaddr ${v.maxAddr} timeout ${v.timeoutSec}${v.poll ? ' poll' : ''}`];
  for (const p of v.ports) {
    const extra = [
      `port ${p.id}`,
      p.kind === 'vport' ? 'vport' : p.connected ? 'connected' : 'not connected',
      p.untagged === 'none' ? 'untagged none' : `untagged ${p.untagged}`,
      ...(p.tagged.length ? [`tagged ${compactList(p.tagged)}`] : []),
      ...(p.protected.length ? [`protected ${p.protected.join(',')}`] : []),
      ...(p.maxAddr !== undefined ? [`maxaddr ${p.maxAddr}`] : []),
    ];
    out.push(`  ${p.name} flags=<${p.flags.join(',')}>`, `      ${extra.join('  ')}`, `      ${counterLine(p.counters, true)}`);
  }
  out.push(`addresses (${v.addresses.length}):`);
  for (const a of v.addresses) out.push(`  ${a.mac} ${a.port.padEnd(12)} ${a.static ? 'static' : `age ${a.ageSec}s`}`);
  return out.join('\n');
}

/** 5,7,8,9,20 → "5,7-9,20". */
function compactList(ids: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < ids.length; ) {
    let j = i;
    while (j + 1 < ids.length && ids[j + 1] === ids[j]! + 1) j++;
    out.push(j > i ? `${ids[i]}-${ids[j]}` : `${ids[i]}`);
    i = j + 1;
  }
  return out.join(',');
}

/** One line confirming a `switch NAME flush|static|deladdr`. */
export function formatSwitchEdit(cmd: 'flush' | 'static' | 'deladdr', r: SwitchEditResult): string {
  if (cmd === 'flush') return `switch ${r.switch}: ${r.flushed} dynamic addresses flushed`;
  if (cmd === 'static') return `switch ${r.switch}: static ${r.mac} on ${r.port}`;
  return `switch ${r.switch}: ${r.mac} deleted`;
}

/** QEMU arguments as a shell fragment, one option per line, ready to paste after qemu-system-x86_64. */
export function formatQemuArgs(r: QemuArgsResult): string {
  return formatShellArgs(r.args, { multiline: true });
}

/** What a reload did: added, removed, changed (with details), unchanged, and what needs a restart. */
export function formatReload(r: ReloadReport): string {
  const out: string[] = [];
  const list = (label: string, names: string[]): void => {
    if (names.length) out.push(`${label}: ${names.join(' ')}`);
  };
  list('added', r.added);
  list('removed', r.removed);
  list('changed', r.changed);
  for (const d of r.details ?? []) out.push(`  ${d.name}: ${d.change}`);
  list('unchanged', r.unchanged);
  for (const s of r.restartRequired) out.push(`restart required: ${s}`);
  return out.length ? out.join('\n') : 'nothing configured';
}

/** The new and the previous log level. */
export function formatLogLevel(r: LogLevelResult): string {
  return `log level ${r.level} (was ${r.previous})`;
}
