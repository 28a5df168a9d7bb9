/**
 * Switch metrics: per-port counters (the switch's view: rx = frames the port sent into the switch, tx = frames
 * delivered to it), drops by reason with veb's names, and the MAC table. Names follow PORT_COUNTER_NAMES, so a
 * counter appended there is exported without a change here.
 */
import type { Registry } from 'prom-client';
import { DROP_REASONS, PORT_COUNTER_NAMES, type DropCounterName, type PortCounterName, type PortCounters } from '../net/switch.js';
import { counterFrom, gaugeFrom, label, snake, type Emit } from './collect.js';
import { portLabels, switchLabels, type Labels, type MetricsSource } from './source.js';

const HELP: Partial<Record<PortCounterName, string>> = {
  rxFrames: 'Frames the port sent into the switch (ingress), dropped ones included',
  rxBytes: 'Bytes the port sent into the switch (ingress)',
  txFrames: 'Frames the switch delivered to the port (egress)',
  txBytes: 'Bytes the switch delivered to the port (egress)',
  floodFrames: 'Ingress frames flooded (broadcast, multicast, unknown unicast)',
  macLearned: 'Source MACs learned on the port',
  macMoves: 'Source MACs that moved to the port from another one',
  learnTableFull: 'Source MACs not learned because the MAC table was full',
  macMoveDamped: 'MAC moves to the port refused by damping',
  macEvicted: 'Dynamic MAC entries of the port evicted to make room',
};

/** Metric name of a non-drop port counter (floodFrames reads better as flooded_frames). */
function portMetricName(n: PortCounterName): string {
  return n === 'floodFrames' ? 'vhostd_switch_port_flooded_frames_total' : `vhostd_switch_port_${snake(n)}_total`;
}

const isDrop = (n: PortCounterName): n is DropCounterName => n.startsWith('drop');

export function registerSwitchMetrics(reg: Registry, src: MetricsSource): void {
  const eachPort = (fill: (l: Labels, c: Readonly<PortCounters>) => void): void => {
    for (const sw of src.switches.values()) {
      for (const port of sw.ports()) {
        const c = sw.counters(port.id);
        if (c) fill(portLabels(sw.name, port), c);
      }
    }
  };
  for (const n of PORT_COUNTER_NAMES) {
    if (isDrop(n)) continue;
    counterFrom(reg, portMetricName(n), HELP[n] ?? `Switch port counter ${n}`, (emit: Emit) => eachPort((l, c) => emit(l, c[n])));
  }
  const drops = PORT_COUNTER_NAMES.filter(isDrop).map((d) => [d, label('reason', DROP_REASONS[d])] as const);
  counterFrom(reg, 'vhostd_switch_port_drops_total', 'Frames the switch dropped on this port, by reason (veb names)', (emit) =>
    eachPort((l, c) => {
      for (const [d, reason] of drops) emit(l, c[d], reason);
    }),
  );

  gaugeFrom(reg, 'vhostd_switch_mac_entries', 'Entries in the MAC table (dynamic and static)', (emit) => {
    for (const sw of src.switches.values()) emit(switchLabels(sw), sw.macTable.size);
  });
  gaugeFrom(reg, 'vhostd_switch_mac_entries_max', 'Size of the MAC table (maxaddr)', (emit) => {
    for (const sw of src.switches.values()) emit(switchLabels(sw), sw.macTable.maxAddr);
  });
  gaugeFrom(reg, 'vhostd_switch_ports', 'Ports attached to the switch', (emit) => {
    for (const sw of src.switches.values()) emit(switchLabels(sw), sw.ports().length);
  });
}
