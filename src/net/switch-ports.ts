/**
 * Per-port state of the switch (switch.ts): the options of the configuration (veb knobs, ifconfig(8)), their
 * validation, and PortRecord, the plain fields the forwarding pipeline reads per frame.
 */
import { VhostError } from '../util/errors.js';
import { FlowCache } from './flow-cache.js';
import type { Port, PortId } from './port.js';
import { newPortCounters, type PortCounters } from './switch-counters.js';
import { NO_RULES, type RuleRec } from './switch-rules.js';

/** Default PVID (veb `vnetid` default). */
export const DEFAULT_PVID = 1;

/** Per-port options (veb knobs, ifconfig(8)). Omitted fields keep their current value. */
export interface PortOptions {
  /** Learn source MACs (default true). */
  learn?: boolean;
  /** Receive floods of unknown unicast (default true). */
  discover?: boolean;
  /** Only IPv4, IPv6, ARP and RARP in and out (default false). */
  blockNonIp?: boolean;
  /** Source MAC must be a static entry of this port (default false). */
  locked?: boolean;
  /** Protected domain ids, 1..31 (default none). */
  protected?: readonly number[];
  /** PVID of untagged frames, 1..4094, or 'none' (drop untagged). Makes the switch VLAN-aware. Default 1. */
  untagged?: number | 'none';
  /** VIDs accepted and sent tagged, 1..4094 (replaces the set). Makes the switch VLAN-aware. Default none. */
  tagged?: readonly number[];
  /** Span port: receives a copy of every frame accepted on any port's ingress, sends nothing (default false). */
  span?: boolean;
  /** Learn limit of this port (default: the switch's portMaxAddr). */
  maxAddr?: number;
}

/** Everything the switch keeps per port: flags and settings as plain fields read by the pipeline steps. */
export class PortRecord {
  readonly counters: PortCounters = newPortCounters();
  learn = true;
  discover = true;
  blockNonIp = false;
  locked = false;
  span = false;
  /** Protected domains as a bit mask (bit N = domain N). */
  protMask = 0;
  /** PVID (0 = untagged frames dropped). */
  pvid = DEFAULT_PVID;
  /** Tagged VLAN membership, indexed by VID (null = none). */
  tagged: Uint8Array | null = null;
  rulesIn: readonly RuleRec[] = NO_RULES;
  rulesOut: readonly RuleRec[] = NO_RULES;
  /** Flow cache of this ingress port: destination lookups (NO_PORT for unknown or group addresses) per MAC pair. */
  readonly flows = new FlowCache();
  constructor(
    readonly port: Port,
    readonly id: PortId,
  ) {}
}

/** Protected mask, PVID and tagged set that `opts` gives `rec`, validated; throws VhostError ERR_CONFIG (`where`: the message prefix). */
export function portVlanSettings(rec: PortRecord, opts: PortOptions, where: string): { protMask: number; pvid: number; tagged: Uint8Array | null } {
  const vidOk = (v: number): boolean => Number.isInteger(v) && v >= 1 && v <= 4094;
  let mask = rec.protMask;
  if (opts.protected !== undefined) {
    mask = 0;
    for (const d of opts.protected) {
      if (!Number.isInteger(d) || d < 1 || d > 31) throw new VhostError('ERR_CONFIG', `${where}: protected domain must be 1..31, got ${d}`);
      mask |= 1 << d;
    }
  }
  let pvid = rec.pvid;
  if (opts.untagged !== undefined) {
    if (opts.untagged === 'none') pvid = 0;
    else if (vidOk(opts.untagged)) pvid = opts.untagged;
    else throw new VhostError('ERR_CONFIG', `${where}: untagged VID must be 1..4094 or none, got ${opts.untagged}`);
  }
  let tagged = rec.tagged;
  if (opts.tagged !== undefined) {
    tagged = null;
    for (const v of opts.tagged) {
      if (!vidOk(v)) throw new VhostError('ERR_CONFIG', `${where}: tagged VID must be 1..4094, got ${v}`);
      tagged ??= new Uint8Array(4096);
      tagged[v] = 1;
    }
  }
  return { protMask: mask, pvid, tagged };
}
