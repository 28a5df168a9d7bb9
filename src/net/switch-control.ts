/**
 * The switch's control path (switch.ts holds the forwarding pipeline): port membership and ids, per-port options and
 * rules, static entries, the MAC table for display, counters and totals, reload. Switch extends this class, so the
 * pipeline reads the same plain fields (the port records, the flood and span lists, the touched set).
 */
import { VhostError } from '../util/errors.js';
import { formatMac, isMulticast, isZero, parseMac, type MacKey } from './mac.js';
import { MacTable, type MacTableOptions } from './mac-table.js';
import { NO_PORT, type Port, type PortId } from './port.js';
import { Poller } from './poller.js';
import { PORT_COUNTER_NAMES, newPortCounters, type PortCounters, type SwitchTotals } from './switch-counters.js';
import { PortRecord, portVlanSettings, type PortOptions } from './switch-ports.js';
import { NO_RULES, compileRule, type FilterRule } from './switch-rules.js';

/** Default switch MTU (IP MTU, Ethernet header not included), advertised later as VIRTIO_NET_F_MTU. */
export const DEFAULT_MTU = 1500;

/** Switch options. */
export interface SwitchOptions extends MacTableOptions {
  /** Switch MTU, 68..65535 (VIRTIO 1.2 §5.1.4.1 lower bound): ports start with it; egress frames are checked. */
  mtu?: number;
  /** Poll mode (config `poll`): the poller spins with kicks off instead of re-arming them (default false). */
  poll?: boolean;
}

/** One MAC table row for display and the control socket. */
export interface SwitchEntry {
  mac: string;
  port: string;
  portId: PortId;
  ageSec: number;
  static: boolean;
}

/** Membership and configuration of a Switch; the forwarding pipeline is Switch's (switch.ts). */
export class SwitchControl {
  readonly name: string;
  /** Switch MTU: what ports get when they (re)negotiate; reconfigure() changes it. */
  get mtu(): number {
    return this.mtuValue;
  }
  private mtuValue: number;
  /** Forwarding database; exposed for display (`entries()`), `flush()` and static entries. */
  readonly macTable: MacTable;
  /** The one poller that runs this switch's ports' TX work each event-loop turn (poller.ts). */
  readonly poller = new Poller();

  /** Port records indexed by PortId; holes where ports were removed. */
  protected recs: (PortRecord | undefined)[] = [];
  /** Attached ports, dense, in id order. Replaced (never mutated) on add/remove/configure. */
  private members: readonly PortRecord[] = [];
  /** Forwarding ports (not span), the flood list; and span ports. */
  protected fwd: readonly PortRecord[] = [];
  protected spans: readonly PortRecord[] = [];
  /** True once any port has a VLAN setting (802.1Q-aware mode). */
  protected vlanAware = false;
  /** Per-batch touched set: flag per PortId plus the list of touched ids (preallocated, grown on addPort). */
  protected touched = new Uint8Array(8);
  protected touchedIds = new Int32Array(8);
  protected touchedCount = 0;
  /** Counters of removed ports, so totals never go backwards. */
  private readonly retired: PortCounters = newPortCounters();
  /** forward() calls from a port that is not attached (e.g. a device still running after removePort). */
  protected dropNotMember = 0;
  /** Coarse clock (last tick), for entries() ages. */
  private nowSec: number | undefined;

  constructor(name: string, opts: SwitchOptions = {}) {
    const mtu = opts.mtu ?? DEFAULT_MTU;
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
      throw new VhostError('ERR_CONFIG', `switch ${name}: mtu must be an integer in 68..65535, got ${mtu}`);
    }
    this.name = name;
    this.mtuValue = mtu;
    this.poller.spin = opts.poll ?? false;
    try {
      this.macTable = new MacTable({
        maxAddr: opts.maxAddr,
        timeoutSec: opts.timeoutSec,
        portMaxAddr: opts.portMaxAddr,
        evict: opts.evict,
        moveDampCount: opts.moveDampCount,
        moveDampSec: opts.moveDampSec,
      });
    } catch (err) {
      throw new VhostError('ERR_CONFIG', `switch ${name}: ${(err as Error).message}`, { cause: err });
    }
  }

  // ---------------------------------------------------------------- control path

  /**
   * Configuration reload: a new MTU (ports keep theirs until the guest renegotiates: NetDevice.reset/setFeatures
   * read it), MAC table size and timeout. Throws VhostError ERR_CONFIG on bad values, before changing anything.
   */
  reconfigure(opts: { mtu?: number; maxAddr?: number; timeoutSec?: number; poll?: boolean }): void {
    const mtu = opts.mtu ?? this.mtuValue;
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
      throw new VhostError('ERR_CONFIG', `switch ${this.name}: mtu must be an integer in 68..65535, got ${mtu}`);
    }
    try {
      this.macTable.setLimits({ maxAddr: opts.maxAddr, timeoutSec: opts.timeoutSec });
    } catch (err) {
      throw new VhostError('ERR_CONFIG', `switch ${this.name}: ${(err as Error).message}`, { cause: err });
    }
    this.mtuValue = mtu;
    // Poll mode on: ports now asleep join at their next kick. Off: polling ports re-arm after their idle polls.
    if (opts.poll !== undefined) this.poller.spin = opts.poll;
  }

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
    this.macTable.setPortLimit(id);
    this.members = [...this.members, rec].sort((a, b) => a.id - b.id);
    this.rebuildLists();
    this.macTable.bump(); // flow caches: the port set changed
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
    this.rebuildLists();
    this.macTable.remove(id);
    if (this.touched[id] !== 0) {
      this.touched[id] = 0;
      let j = 0;
      for (let i = 0; i < this.touchedCount; i++) if (this.touchedIds[i] !== id) this.touchedIds[j++] = this.touchedIds[i];
      this.touchedCount = j;
    }
    for (const n of PORT_COUNTER_NAMES) this.retired[n] += rec.counters[n];
    (port as { id: PortId }).id = NO_PORT;
    this.macTable.bump(); // flow caches: the port set changed (remove() above changed the version too)
    return true;
  }

  /** Attached ports in id order. */
  ports(): Port[] {
    return this.members.map((r) => r.port);
  }

  /** The attached port called `name`, or undefined. */
  portByName(name: string): Port | undefined {
    return this.members.find((r) => r.port.name === name)?.port;
  }

  /** Apply per-port options (veb knobs, ifconfig(8)). Throws VhostError ERR_CONFIG on bad values. Control path. */
  configurePort(port: Port | string, opts: PortOptions): void {
    const rec = this.rec(port);
    const where = `switch ${this.name}: port ${rec.port.name}`;
    const { protMask, pvid, tagged } = portVlanSettings(rec, opts, where);
    if (opts.maxAddr !== undefined) {
      try {
        this.macTable.setPortLimit(rec.id, opts.maxAddr);
      } catch (err) {
        throw new VhostError('ERR_CONFIG', `${where}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (opts.learn !== undefined) rec.learn = opts.learn;
    if (opts.discover !== undefined) rec.discover = opts.discover;
    if (opts.blockNonIp !== undefined) rec.blockNonIp = opts.blockNonIp;
    if (opts.locked !== undefined) rec.locked = opts.locked;
    rec.protMask = protMask;
    rec.pvid = pvid;
    rec.tagged = tagged;
    if (opts.untagged !== undefined || opts.tagged !== undefined) this.vlanAware = true;
    if (opts.span !== undefined && opts.span !== rec.span) {
      rec.span = opts.span;
      if (rec.span) this.macTable.remove(rec.id, true);
      this.rebuildLists();
    }
    this.macTable.bump(); // flow caches: a knob they depend on (locked, learn) may have changed
  }

  /** Append a filter rule to `port` (evaluated in insertion order, first match wins). Control path. */
  addRule(port: Port | string, rule: FilterRule): void {
    const rec = this.rec(port);
    const r = compileRule(rule);
    const dir = rule.dir ?? 'in/out';
    if (dir !== 'out') rec.rulesIn = [...rec.rulesIn, r];
    if (dir !== 'in') rec.rulesOut = [...rec.rulesOut, r];
  }

  /** Remove every rule of `port` (veb `flushrule`). */
  flushRules(port: Port | string): void {
    const rec = this.rec(port);
    rec.rulesIn = NO_RULES;
    rec.rulesOut = NO_RULES;
  }

  /** Drop all dynamic MAC entries (veb `flush`); static entries stay. Control socket. */
  flushDynamic(): void {
    this.macTable.flush();
  }

  /**
   * Add a static entry `mac` → `port` (veb `static`); replaces a dynamic entry or re-points a static one. Throws
   * VhostError ERR_CONFIG for an unknown port, a multicast/zero MAC, or a table full of static entries.
   */
  addStatic(mac: MacKey | string, port: Port | PortId | string): void {
    const key = typeof mac === 'string' ? parseMac(mac) : mac;
    const rec = typeof port === 'number' ? this.recs[port] : this.rec(port);
    if (rec === undefined) throw new VhostError('ERR_CONFIG', `switch ${this.name}: no port ${String(port)}`);
    if (isMulticast(key) || isZero(key)) throw new VhostError('ERR_CONFIG', `switch ${this.name}: static entry ${formatMac(key)} must be a unicast address`);
    if (!this.macTable.addStatic(key, rec.id)) {
      throw new VhostError('ERR_CONFIG', `switch ${this.name}: MAC table full of static entries (maxaddr ${this.macTable.maxAddr})`);
    }
  }

  /** Delete the entry for `mac`, static or dynamic (veb `deladdr`). Returns false if there was none. */
  delAddr(mac: MacKey | string): boolean {
    return this.macTable.delete(typeof mac === 'string' ? parseMac(mac) : mac);
  }

  /** The MAC table for display (veb `addr`): static entries first, ports by name. Control path. */
  entries(): SwitchEntry[] {
    return this.macTable.entries(this.nowSec).map((e) => ({
      mac: formatMac(e.mac),
      port: this.recs[e.port]?.port.name ?? `#${e.port}`,
      portId: e.port,
      ageSec: e.ageSec,
      static: e.static,
    }));
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

  /** Aging and move damping, from a coarse timer (util clock), never per frame. `nowSec` is monotonic seconds. */
  tick(nowSec: number): void {
    this.nowSec = nowSec;
    this.macTable.tick(nowSec);
  }

  private rec(port: Port | string): PortRecord {
    const rec = typeof port === 'string' ? this.members.find((r) => r.port.name === port) : port.id >= 0 ? this.recs[port.id] : undefined;
    if (rec === undefined || (typeof port !== 'string' && rec.port !== port)) {
      throw new VhostError('ERR_CONFIG', `switch ${this.name}: no port ${typeof port === 'string' ? JSON.stringify(port) : port.name}`);
    }
    return rec;
  }

  private rebuildLists(): void {
    this.fwd = this.members.filter((r) => !r.span);
    this.spans = this.members.filter((r) => r.span);
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
