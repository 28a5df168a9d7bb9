/**
 * Per-port counters of the switch (switch.ts): the names, the record type and its constructor, the drop reason labels
 * for metrics and the switch-wide totals type. Control-path definitions; the pipeline increments the fields in place.
 */

/**
 * Per-port counter names, in display/export order. To add a counter (e.g. `dropMtu`, `dropNoRxBuffer`,
 * `dropBlocked`), append its name here: the record type, zeroing, totals and export follow from this list.
 * Direction is from the switch's view: rx = frames the port sent into the switch, tx = frames delivered to it.
 */
export const PORT_COUNTER_NAMES = [
  'rxFrames', // frames offered by this port (ingress), including those dropped afterwards
  'rxBytes',
  'txFrames', // frames this port accepted on egress (deliver() returned true)
  'txBytes',
  'floodFrames', // ingress frames that were flooded (broadcast, multicast, unknown unicast)
  'macLearned', // new source MACs learned on this port
  'macMoves', // source MACs that moved to this port from another one
  'learnTableFull', // source MACs not learned because the table was full (frame still forwarded)
  'dropRunt', // ingress: shorter than 14 bytes
  'dropHairpin', // ingress: known unicast destination lives on the ingress port (veb "hairpin")
  'dropMtu', // egress: longer than the egress port's MTU + Ethernet header (+ VLAN tag)
  'dropEgress', // egress: deliver() returned false (the port counts its own reason)
  'macMoveDamped', // source MAC moves to this port refused by damping (too many moves in the window)
  'macEvicted', // dynamic entries of this port evicted to make room (fair eviction)
  'dropSpanIn', // ingress: frames sent by a span port (span ports only receive copies)
  'dropReserved', // ingress: destination 01:80:c2:00:00:0X (802.1 reserved group, never forwarded)
  'dropDoubleTagged', // ingress: 802.1Q inside 802.1Q (VLAN hopping)
  'dropTaggedIn', // ingress: tagged with a VID not in the port's tagged set
  'dropUntagged', // ingress: untagged on a port without PVID (`untagged none`)
  'dropLocked', // ingress: locked port, source MAC is not a static entry of this port
  'dropBlockNonIpIn', // ingress: blocknonip port, not IPv4/IPv6/ARP/RARP
  'dropSvlan', // ingress: 802.1ad (0x88a8) frame on a VLAN-aware switch
  'dropRulesIn', // ingress: blocked by an `in` rule of this port
  'dropProtected', // ingress: known unicast to a port sharing a protected domain
  'dropTaggedOut', // egress: known unicast in a VLAN this port is not a member of
  'dropRulesOut', // egress: blocked by an `out` rule of this port
  'dropBlockNonIpOut', // egress: blocknonip port, not IPv4/IPv6/ARP/RARP
] as const;

/** Name of one per-port counter. */
export type PortCounterName = (typeof PORT_COUNTER_NAMES)[number];
/** Name of a drop counter (by convention `drop<Reason>`). */
export type DropCounterName = Extract<PortCounterName, `drop${string}`>;
/** Per-port counters: plain numeric fields, one object per port, updated in place. */
export type PortCounters = { [K in PortCounterName]: number };

/**
 * Drop counter → reason label (veb kstat spelling where veb has one, OpenBSD if_veb.c), for metrics such as
 * `vhostd_switch_port_drops_total{port="vm1",reason="hairpin"}`. The type forces a label for every `drop*` name.
 */
export const DROP_REASONS: Readonly<Record<DropCounterName, string>> = {
  dropRunt: 'runt',
  dropHairpin: 'hairpin',
  dropMtu: 'mtu',
  dropEgress: 'egress',
  dropSpanIn: 'span-in',
  dropReserved: 'reserved',
  dropDoubleTagged: 'double-tagged',
  dropTaggedIn: 'tagged-in',
  dropUntagged: 'untagged',
  dropLocked: 'locked',
  dropBlockNonIpIn: 'blocknonip-in',
  dropSvlan: 'svlan',
  dropRulesIn: 'rules-in',
  dropProtected: 'protected',
  dropTaggedOut: 'tagged-out',
  dropRulesOut: 'rules-out',
  dropBlockNonIpOut: 'blocknonip-out',
};

/** Switch-wide totals: sums of every port's counters (including removed ports) plus table and switch figures. */
export type SwitchTotals = PortCounters & {
  /** Attached ports. */
  ports: number;
  /** Entries in the MAC table. */
  macEntries: number;
  /** MAC table generation rotations. */
  macRotations: number;
  /** forward() calls whose ingress port is not attached to this switch. */
  dropNotMember: number;
};

/** New zeroed counter record. Built in PORT_COUNTER_NAMES order, so every record has the same hidden class. */
export function newPortCounters(): PortCounters {
  // Object.fromEntries, not keyed stores in a loop: with this many properties the loop leaves the object in V8's
  // dictionary mode, and every `counters.x++` on the hot path becomes a hash lookup (and a double an allocation).
  return Object.fromEntries(PORT_COUNTER_NAMES.map((n) => [n, 0])) as PortCounters;
}
