/**
 * Filter rules of the switch (veb `rule`, ifconfig(8)): the configuration form, its compiled form read per frame by
 * the pipeline (Switch.ruleBlocks), and the IPv4 address parser of the config. Control path only.
 */
import { VhostError } from '../util/errors.js';
import { ETHERTYPE_ARP, ETHERTYPE_RARP } from './ethernet.js';
import type { MacKey } from './mac.js';
import { HALF as MAC_HALF } from './mac-map.js';

/** A filter rule (veb `rule`, ifconfig(8)). Unset fields match anything. */
export interface FilterRule {
  action: 'block' | 'pass';
  /** Direction; default both. */
  dir?: 'in' | 'out' | 'in/out';
  src?: MacKey;
  dst?: MacKey;
  /** ARP (0x0806) or RARP (0x8035) match: Ethernet/IPv4 only; IPv4 addresses as 32-bit unsigned numbers. */
  arp?: { rarp?: boolean; op?: 'request' | 'reply'; sha?: MacKey; spa?: number; tha?: MacKey; tpa?: number };
}

/** `a.b.c.d` → 32-bit unsigned number; throws VhostError ERR_CONFIG on bad syntax. */
export function parseIpv4(text: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (m === null || m.slice(1).some((o) => Number(o) > 255)) throw new VhostError('ERR_CONFIG', `invalid IPv4 address ${JSON.stringify(text)}`);
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

/** Compiled rule: numbers only, -1 = any. Source and destination MACs as 24-bit halves, as Frame keeps them. */
export class RuleRec {
  constructor(
    readonly block: boolean,
    readonly srcHi: number,
    readonly srcLo: number,
    readonly dstHi: number,
    readonly dstLo: number,
    /** 0 (no ARP match), ETHERTYPE_ARP or ETHERTYPE_RARP. */
    readonly arpType: number,
    /** 0 any, 1 request, 2 reply (ARP op; RARP 3/4 matched as request/reply). */
    readonly op: number,
    readonly sha: number,
    readonly spa: number,
    readonly tha: number,
    readonly tpa: number,
  ) {}
}

export const NO_RULES: readonly RuleRec[] = [];

/** Compile `rule` (control path): MACs split into 24-bit halves, unset fields -1. */
export function compileRule(rule: FilterRule): RuleRec {
  const any = (v: number | undefined): number => (v === undefined ? -1 : v);
  const a = rule.arp;
  const op = a?.op === 'request' ? 1 : a?.op === 'reply' ? 2 : 0;
  return new RuleRec(
    rule.action === 'block',
    rule.src === undefined ? -1 : Math.floor(rule.src / MAC_HALF),
    rule.src === undefined ? -1 : rule.src % MAC_HALF,
    rule.dst === undefined ? -1 : Math.floor(rule.dst / MAC_HALF),
    rule.dst === undefined ? -1 : rule.dst % MAC_HALF,
    a === undefined ? 0 : a.rarp ? ETHERTYPE_RARP : ETHERTYPE_ARP,
    op,
    any(a?.sha),
    any(a?.spa),
    any(a?.tha),
    any(a?.tpa),
  );
}
