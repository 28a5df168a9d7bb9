/**
 * Switch: a learning L2 switch over Ports, virtio-agnostic (never imports virtqueue/device/vhost-user code).
 * Owns port membership and ids, the forwarding pipeline, per-port counters and the per-batch flush set.
 * Design: forward() is a fixed pipeline of small steps in veb order (veb-switch.md §1.11): membership → input
 * counters → runt → parse MACs → [later: reserved groups, VLAN, locked, span, blocknonip, rules] → learn →
 * unicast (hairpin check) or flood (never the ingress port). Each later veb knob becomes one more step or one
 * more per-port field in PortRecord. Egress is deliver() per frame plus flush() once per touched port in
 * endBatch() (house style §3.6 rule 3, §3.7). Hot path: no allocation, no clock read per frame; aging runs
 * from tick() on a coarse timer (MacTable main/shadow rotation).
 */
import { VhostError } from '../util/errors.js';
import type { Frame } from './frame.js';
import { sgByteAt } from '../memory/sg-list.js';
import { isMulticast, macKeyFromSg, MAC_LEN } from './mac.js';
import { LEARN_FULL, LEARN_MOVED, LEARN_NEW, MacTable } from './mac-table.js';
import { NO_PORT, type Port, type PortId } from './port.js';

/** Ethernet header: destination MAC, source MAC, ethertype. Shorter frames are runts. */
export const ETHER_HDR_LEN = 14;
/** Default switch MTU (IP MTU, Ethernet header not included), advertised later as VIRTIO_NET_F_MTU. */
export const DEFAULT_MTU = 1500;

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
] as const;

/** Name of one per-port counter. */
export type PortCounterName = (typeof PORT_COUNTER_NAMES)[number];
/** Name of a drop counter (by convention `drop<Reason>`). */
export type DropCounterName = Extract<PortCounterName, `drop${string}`>;
/** Per-port counters: plain numeric fields, one object per port, updated in place. */
export type PortCounters = { [K in PortCounterName]: number };

/**
 * Drop counter → reason label (veb kstat spelling where veb has one, veb-switch.md §1.11), for metrics such as
 * `vhostd_switch_port_drops_total{port="vm1",reason="hairpin"}`. The type forces a label for every `drop*` name.
 */
export const DROP_REASONS: Readonly<Record<DropCounterName, string>> = {
  dropRunt: 'runt',
  dropHairpin: 'hairpin',
  dropMtu: 'mtu',
  dropEgress: 'egress',
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
  const c = {} as PortCounters;
  for (const n of PORT_COUNTER_NAMES) c[n] = 0;
  return c;
}

/** Switch options. */
export interface SwitchOptions {
  /** IP MTU, 68..65535 (VIRTIO 1.2 §5.1.4.1 lower bound); stored for ports to advertise, not enforced yet. */
  mtu?: number;
  /** MAC table size (default 4096). */
  maxAddr?: number;
  /** Dynamic MAC lifetime in seconds (default 240). */
  timeoutSec?: number;
}

/**
 * Everything the switch keeps per port. Later issue (veb-switch.md §1.2, §5): flags learn/discover/blocknonip/
 * locked, protected-domain mask, pvid/tagged set, span role, rules, each as a field here read by a pipeline step.
 */
class PortRecord {
  readonly counters: PortCounters = newPortCounters();
  constructor(
    readonly port: Port,
    readonly id: PortId,
  ) {}
}

/** Learning L2 switch. */
export class Switch {
  readonly name: string;
  readonly mtu: number;
  /** Forwarding database; exposed for display (`entries()`), `flush()` and later static entries. */
  readonly macTable: MacTable;

  /** Port records indexed by PortId; holes where ports were removed. */
  private recs: (PortRecord | undefined)[] = [];
  /** Attached ports, dense, in id order: the flood list. Replaced (never mutated) on add/remove. */
  private members: readonly PortRecord[] = [];
  /** Per-batch touched set: flag per PortId plus the list of touched ids (preallocated, grown on addPort). */
  private touched = new Uint8Array(8);
  private touchedIds = new Int32Array(8);
  private touchedCount = 0;
  /** Counters of removed ports, so totals never go backwards. */
  private readonly retired: PortCounters = newPortCounters();
  /** forward() calls from a port that is not attached (e.g. a device still running after removePort). */
  private dropNotMember = 0;

  constructor(name: string, opts: SwitchOptions = {}) {
    const mtu = opts.mtu ?? DEFAULT_MTU;
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
      throw new VhostError('ERR_CONFIG', `switch ${name}: mtu must be an integer in 68..65535, got ${mtu}`);
    }
    this.name = name;
    this.mtu = mtu;
    try {
      this.macTable = new MacTable({ maxAddr: opts.maxAddr, timeoutSec: opts.timeoutSec });
    } catch (err) {
      throw new VhostError('ERR_CONFIG', `switch ${name}: ${(err as Error).message}`, { cause: err });
    }
  }

  // ---------------------------------------------------------------- control path

  /** Attach `port`; assigns and returns the smallest free PortId. Throws if the port is attached anywhere. */
  addPort(port: Port): PortId {
    if (port.id !== NO_PORT) {
      throw new VhostError('ERR_CONFIG', `switch ${this.name}: port ${port.name} is already attached (id ${port.id})`);
    }
    let id = 0;
    while (id < this.recs.length && this.recs[id] !== undefined) id++;
    if (id >= this.touched.length) this.growTouched(Math.max(id + 1, this.touched.length * 2));
    const rec = new PortRecord(port, id);
    this.recs[id] = rec;
    (port as { id: PortId }).id = id; // the one place Port.id is written (port.ts)
    this.members = [...this.members, rec].sort((a, b) => a.id - b.id);
    return id;
  }

  /**
   * Detach `port`: forget its MACs, stop flooding to it, drop it from the pending flush set (the caller tears the
   * port down). Its counters are folded into the totals. Returns false if it was not attached here.
   */
  removePort(port: Port): boolean {
    const id = port.id;
    const rec = id >= 0 ? this.recs[id] : undefined;
    if (rec === undefined || rec.port !== port) return false;
    this.recs[id] = undefined;
    while (this.recs.length > 0 && this.recs[this.recs.length - 1] === undefined) this.recs.length--;
    this.members = this.members.filter((r) => r !== rec);
    this.macTable.remove(id);
    if (this.touched[id] !== 0) {
      this.touched[id] = 0;
      let j = 0;
      for (let i = 0; i < this.touchedCount; i++) if (this.touchedIds[i] !== id) this.touchedIds[j++] = this.touchedIds[i];
      this.touchedCount = j;
    }
    for (const n of PORT_COUNTER_NAMES) this.retired[n] += rec.counters[n];
    (port as { id: PortId }).id = NO_PORT;
    return true;
  }

  /** Attached ports in id order. */
  ports(): Port[] {
    return this.members.map((r) => r.port);
  }

  /** Live counters of one port (read-only view, updated in place; spread it for a snapshot), or undefined. */
  counters(portId: PortId): Readonly<PortCounters> | undefined {
    return portId >= 0 ? this.recs[portId]?.counters : undefined;
  }

  /** Switch-wide totals (a fresh object). Control path. */
  totals(): Readonly<SwitchTotals> {
    const t = { ...this.retired } as SwitchTotals;
    for (const r of this.members) for (const n of PORT_COUNTER_NAMES) t[n] += r.counters[n];
    t.ports = this.members.length;
    t.macEntries = this.macTable.size;
    t.macRotations = this.macTable.rotations;
    t.dropNotMember = this.dropNotMember;
    return t;
  }

  /** Aging, from a coarse timer (util clock), never per frame. `nowSec` is monotonic seconds. */
  tick(nowSec: number): void {
    this.macTable.tick(nowSec);
  }

  // ---------------------------------------------------------------- data path

  /**
   * Switch one frame received on `ingress`. Fills `frame.dst`/`frame.src`. Egress ports get deliver() now and
   * flush() at endBatch(). `frame` is not kept after the call.
   */
  forward(ingress: Port, frame: Frame): void {
    const rp = ingress.id >= 0 ? this.recs[ingress.id] : undefined;
    if (rp === undefined || rp.port !== ingress) {
      this.dropNotMember++;
      return;
    }
    const rc = rp.counters;
    rc.rxFrames++;
    rc.rxBytes += frame.length;
    if (frame.length < ETHER_HDR_LEN || !parseMacs(frame)) {
      rc.dropRunt++;
      return;
    }
    // Later issue, in this order (veb-switch.md §1.11): reserved 01:80:c2:00:00:0X, VLAN classification,
    // locked, span copy, blocknonip-in, svlan, rules-in.
    this.learnSource(rp, frame);
    const dst = frame.dst;
    if (!isMulticast(dst)) {
      const out = this.macTable.lookup(dst);
      if (out !== NO_PORT) {
        this.unicast(rp, out, frame);
        return;
      }
    }
    this.flood(rp, frame);
  }

  /** End of an ingress batch: flush() each port that forward() touched, exactly once. Port.flush must not throw. */
  endBatch(): void {
    const n = this.touchedCount;
    const ids = this.touchedIds;
    const flags = this.touched;
    this.touchedCount = 0;
    for (let i = 0; i < n; i++) {
      const id = ids[i];
      flags[id] = 0;
      const r = this.recs[id];
      if (r !== undefined) r.port.flush();
    }
  }

  /** Pipeline step: learn the source MAC on the ingress port (table refuses multicast/zero; later: `learn` flag). */
  private learnSource(rp: PortRecord, frame: Frame): void {
    const res = this.macTable.learn(frame.src, rp.id);
    if (res === LEARN_NEW) rp.counters.macLearned++;
    else if (res === LEARN_MOVED) rp.counters.macMoves++;
    else if (res === LEARN_FULL) rp.counters.learnTableFull++;
  }

  /** Pipeline step: known unicast. Later: protected domains, PVLAN, tagged-out, rules-out, blocknonip-out, mtu. */
  private unicast(rp: PortRecord, out: PortId, frame: Frame): void {
    if (out === rp.id) {
      rp.counters.dropHairpin++;
      return;
    }
    const tp = this.recs[out];
    if (tp === undefined) {
      // Cannot happen (removePort purges the table); flooding is the safe answer to a stale entry.
      this.flood(rp, frame);
      return;
    }
    this.transmit(tp, frame);
  }

  /**
   * Pipeline step: broadcast, multicast and unknown unicast go to every other attached port. Later: skip ports
   * sharing a protected domain, `-discover` ports for unknown unicast, span ports, VLAN non-members.
   */
  private flood(rp: PortRecord, frame: Frame): void {
    rp.counters.floodFrames++;
    const ms = this.members;
    for (let i = 0; i < ms.length; i++) {
      const tp = ms[i];
      if (tp !== rp) this.transmit(tp, frame);
    }
  }

  /** Egress to one port: deliver, count, and mark it for flush at endBatch(). */
  private transmit(tp: PortRecord, frame: Frame): void {
    const tc = tp.counters;
    if (frame.length > tp.port.mtu + ETHER_HDR_LEN && frame.length > tp.port.mtu + ETHER_HDR_LEN + vlanTagLen(frame)) {
      tc.dropMtu++; // issue 3 §1: dropped and counted, never truncated
      return;
    }
    if (tp.port.deliver(frame)) {
      tc.txFrames++;
      tc.txBytes += frame.length;
    } else {
      tc.dropEgress++;
    }
    const id = tp.id;
    if (this.touched[id] === 0) {
      this.touched[id] = 1;
      this.touchedIds[this.touchedCount++] = id;
    }
  }

  /** Grow the touched-set arrays (control path, addPort). */
  private growTouched(cap: number): void {
    const flags = new Uint8Array(cap);
    flags.set(this.touched);
    const ids = new Int32Array(cap);
    ids.set(this.touchedIds);
    this.touched = flags;
    this.touchedIds = ids;
  }
}

/** Read destination and source MACs into the frame; false if the sg list is shorter than the header. */
/** 802.1Q TPID: a tagged frame may be 4 bytes longer than MTU + header. */
const ETHERTYPE_VLAN = 0x8100;

/** 4 if the frame carries an 802.1Q tag, else 0 (slow path: only for frames over MTU + header). */
function vlanTagLen(frame: Frame): number {
  const hi = sgByteAt(frame.sg, frame.offset + 12);
  const lo = sgByteAt(frame.sg, frame.offset + 13);
  return ((hi << 8) | lo) === ETHERTYPE_VLAN ? 4 : 0;
}

function parseMacs(frame: Frame): boolean {
  const dst = macKeyFromSg(frame.sg, frame.offset);
  const src = macKeyFromSg(frame.sg, frame.offset + MAC_LEN);
  if (dst < 0 || src < 0) return false;
  frame.dst = dst;
  frame.src = src;
  return true;
}
