/**
 * Switch: a learning L2 switch over Ports, virtio-agnostic (never imports virtqueue/device/vhost-user code).
 * The forwarding pipeline and the per-batch flush set; port membership, options and counters are the control path's
 * (switch-control.ts, a base class over the same fields).
 * Design: forward() is a fixed pipeline of small steps in veb order (OpenBSD if_veb.c): membership → input
 * counters → header snapshot → runt → parse MACs → span-port input → reserved 01:80:c2:00:00:0X → VLAN classification
 * (double-tagged, tagged-in, untagged) → locked → span copy → blocknonip-in → svlan → rules-in → learn →
 * known unicast (hairpin, protected, tagged-out, rules-out, blocknonip-out, mtu) or flood (skipping the ingress
 * port, ports sharing a protected domain, `-discover` ports for unknown unicast, VLAN non-members; rules-out,
 * blocknonip-out, mtu per port). Per-port knobs are plain fields of PortRecord, checked in that order.
 * VLANs: a switch is VLAN-transparent (tagged frames cross unchanged, like veb before 7.9) until a port gets an
 * `untagged`/`tagged` setting; from then on it is 802.1Q-aware: every port has a PVID (default 1; 0 = none) and a
 * tagged set, and the tag is inserted/stripped by the egress copy (Frame.vlanTag/stripTag, frame.ts). The MAC
 * table is shared across VLANs (802.1Q "shared VLAN learning"): one entry per MAC, not per (VLAN, MAC).
 * Single fetch: the sender's bytes are guest memory another vCPU may rewrite during forward(). Every step reads the
 * private snapshot of the header (Frame.snap, taken once at ingress, extended once for ARP rules), never the sender's
 * buffers, and the egress copy sends the snapshot (frameCopyTo), so the header forwarded is the header checked.
 * Flow cache: each ingress port remembers, per (source, destination) MAC pair, the outcome of the table steps (locked
 * source check, learn, destination lookup) in direct-mapped slots (flow-cache.ts), valid while MacTable.version is unchanged
 * (every table change, aging rotation and port change moves it). A hit costs a few integer compares instead of the
 * keyed placements and Map reads; every step that reads the frame (VLAN, rules, blocknonip, reserved, span, hairpin,
 * protected, tagged-out, MTU) still runs per frame. See learnAndLookup() for why a hit decides exactly as a miss.
 * Egress is deliver() per frame plus flush() once per touched port in endBatch() (docs/architecture.md §4
 * step 6). Hot path: no allocation, no clock read per frame; aging and damping run from tick() on a coarse timer.
 */
import { copyBatch } from '../memory/copy-batch.js';
import { NO_VLAN_TAG, SNAP_HDR, frameSnapshot, type Frame } from './frame.js';
import { ETHER_HDR_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_RARP, ETHERTYPE_VLAN } from './ethernet.js';
import { macKeyAt } from './mac.js';
import { LEARN_DAMPED, LEARN_EVICTED, LEARN_FULL, LEARN_KNOWN, LEARN_MOVED, LEARN_NEW } from './mac-table.js';
import { NO_PORT, type Port, type PortId } from './port.js';
import { SwitchControl } from './switch-control.js';
import type { PortRecord } from './switch-ports.js';
import type { RuleRec } from './switch-rules.js';

// Re-exported: callers and tests import the switch's types and tables from here.
export { DEFAULT_MTU, type SwitchEntry, type SwitchOptions } from './switch-control.js';
export { DROP_REASONS, PORT_COUNTER_NAMES, newPortCounters, type DropCounterName, type PortCounterName, type PortCounters, type SwitchTotals } from './switch-counters.js';
export { DEFAULT_PVID, type PortOptions } from './switch-ports.js';
export { parseIpv4, type FilterRule } from './switch-rules.js';

/** Ethernet header length (re-exported: callers and tests import it from the switch). */
export { ETHER_HDR_LEN };

/** 01:80:c2:00:00:00 .. 01:80:c2:00:00:0f: IEEE 802.1 reserved group addresses, as upper half and lower halves. */
const RESERVED_HI24 = 0x01_80_c2;
const RESERVED_LO24_MAX = 0x00_00_0f;

function isIpEthertype(t: number): boolean {
  return t === ETHERTYPE_IPV4 || t === ETHERTYPE_IPV6 || t === ETHERTYPE_ARP || t === ETHERTYPE_RARP;
}

/** Big-endian 16-bit value at `pos` of the frame's snapshot, or -1 past it (the frame is shorter). */
function u16At(frame: Frame, pos: number): number {
  if (pos + 2 > frame.snapLen) return -1;
  const b = frame.snap;
  return (b[pos] << 8) | b[pos + 1];
}

/** Big-endian 32-bit unsigned value at `pos` of the snapshot, or -1 past it (rules only). */
function u32At(frame: Frame, pos: number): number {
  const hi = u16At(frame, pos);
  const lo = u16At(frame, pos + 2);
  return hi < 0 || lo < 0 ? -1 : hi * 0x10000 + lo;
}

/** Learning L2 switch with veb(4) semantics. */
export class Switch extends SwitchControl {
  // Per-frame classification, plain fields (no allocation): VID, whether the frame arrived 802.1Q-tagged, PCP/DEI
  // bits of its tag, its (inner) ethertype (-1 = not read yet) and the offset of its payload.
  private fVid = 0;
  private fTagged = false;
  private fPrio = false;
  private fPcp = 0;
  private fEtype = -1;
  private fL3 = 14;

  // ---------------------------------------------------------------- data path

  /**
   * Switch one frame received on `ingress`. Fills `frame.dstHi`/`dstLo`/`srcHi`/`srcLo`. Egress ports get deliver()
   * now and flush() at endBatch(). `frame` is not kept after the call.
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
    // Single fetch: every check below reads the private copy of the header, and the egress copy sends it (frame.ts).
    // A VLAN-aware switch reads a tag and the ethertype behind it on every frame: one snapshot of 18 bytes, not two.
    frame.snapLen = 0;
    if (frame.length < ETHER_HDR_LEN || frameSnapshot(frame, this.vlanAware ? ETHER_HDR_LEN + 4 : SNAP_HDR) < ETHER_HDR_LEN) {
      rc.dropRunt++;
      return;
    }
    parseMacs(frame);
    if (rp.span) {
      rc.dropSpanIn++;
      return;
    }
    // 802.1 reserved group addresses (STP, pause, LACP, 802.1X, LLDP...) are never forwarded (docs/configuration.md).
    if (frame.dstHi === RESERVED_HI24 && frame.dstLo <= RESERVED_LO24_MAX) {
      rc.dropReserved++;
      return;
    }
    this.fEtype = -1;
    this.fL3 = ETHER_HDR_LEN;
    if (this.vlanAware && !this.classify(rp, frame)) return;
    // A flow cache hit proves the source passed this check at the same table version (see learnAndLookup).
    const flows = rp.flows;
    const slot = flows.slot(frame);
    const ver = this.macTable.version;
    if (rp.locked && !flows.hit(frame, slot, ver) && this.macTable.staticPortHL(frame.srcHi, frame.srcLo) !== rp.id) {
      rc.dropLocked++;
      return;
    }
    if (this.spans.length !== 0) this.mirror(frame);
    if (rp.blockNonIp && !isIpEthertype(this.ethertype(frame))) {
      rc.dropBlockNonIpIn++;
      return;
    }
    if (this.vlanAware && this.fEtype === ETHERTYPE_QINQ) {
      rc.dropSvlan++;
      return;
    }
    if (rp.rulesIn.length !== 0 && this.ruleBlocks(rp.rulesIn, frame)) {
      rc.dropRulesIn++;
      return;
    }
    // The version read again: a port's deliver() (span copies above) is free to change the table.
    const out = flows.hit(frame, slot, this.macTable.version) ? flows.out(slot) : this.learnAndLookup(rp, frame, slot, ver);
    // I/G bit of the first octet: bit 16 of the upper 24 bits (small-integer math, see Frame.dstHi).
    if ((frame.dstHi & 0x10000) === 0) {
      if (out !== NO_PORT) {
        this.unicast(rp, out, frame);
        return;
      }
      this.flood(rp, frame, true);
      return;
    }
    this.flood(rp, frame, false);
  }

  /**
   * Pipeline steps learn and destination lookup (flow cache miss), then the result into the cache. What a hit skips
   * is exactly what this does: the locked source check and learning (their outcome cannot change while the table's
   * version stands, and after a learn that leaves the source known on this port, learning it again is a no-op
   * shadow hit) and the destination lookup (an answer of the table at that version). Learn outcomes that count per
   * frame (table full, move damped) are not cached, and nothing is when the version moved since `ver` (read before
   * the locked check): by this frame's own learn (a new flow is cached from its second frame) or by anything a
   * port did during the frame. Aging stays exact: a rotation changes the version, so the next frame of every flow
   * misses once and refreshes its source. Everything else reads the frame and runs per frame.
   */
  private learnAndLookup(rp: PortRecord, frame: Frame, slot: number, ver: number): number {
    let cacheable = true;
    if (rp.learn) cacheable = this.learnSource(rp, frame);
    const out = (frame.dstHi & 0x10000) === 0 ? this.macTable.lookupHL(frame.dstHi, frame.dstLo) : NO_PORT;
    if (cacheable && this.macTable.version === ver) rp.flows.store(frame, slot, ver, out);
    return out;
  }

  /** End of an ingress batch: flush() each port that forward() touched, exactly once. Port.flush must not throw. */
  endBatch(): void {
    copyBatch.run(); // the burst's queued frame copies land before any port publishes (memory/copy-batch.ts)
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

  /** Pipeline step (VLAN-aware switch): classify into fVid/fTagged; false (counted) if dropped. */
  private classify(rp: PortRecord, frame: Frame): boolean {
    const et = u16At(frame, 12);
    this.fTagged = false;
    this.fPrio = false;
    this.fPcp = 0;
    if (et === ETHERTYPE_VLAN) {
      frameSnapshot(frame, ETHER_HDR_LEN + 4); // the tag and the ethertype behind it join the snapshot
      const tci = u16At(frame, 14);
      const inner = u16At(frame, 16);
      if (tci < 0 || inner < 0) {
        rp.counters.dropRunt++;
        return false;
      }
      if (inner === ETHERTYPE_VLAN) {
        rp.counters.dropDoubleTagged++;
        return false;
      }
      this.fTagged = true;
      this.fPcp = tci & 0xf000;
      this.fEtype = inner;
      this.fL3 = ETHER_HDR_LEN + 4;
      const vid = tci & 0xfff;
      if (vid !== 0) {
        if (rp.tagged === null || rp.tagged[vid] === 0) {
          rp.counters.dropTaggedIn++;
          return false;
        }
        this.fVid = vid;
        return true;
      }
      this.fPrio = true; // priority tag: treated as untagged
    } else {
      this.fEtype = et;
    }
    if (rp.pvid === 0) {
      rp.counters.dropUntagged++;
      return false;
    }
    this.fVid = rp.pvid;
    return true;
  }

  /** Ethertype after any 802.1Q tag on a VLAN-aware switch, else the outer one (read once per frame). */
  private ethertype(frame: Frame): number {
    if (this.fEtype < 0) this.fEtype = u16At(frame, 12);
    return this.fEtype;
  }

  /** Pipeline step: span copy of the frame as received, to every span port. */
  private mirror(frame: Frame): void {
    const ss = this.spans;
    for (let i = 0; i < ss.length; i++) {
      const tp = ss[i];
      const limit = tp.port.mtu + ETHER_HDR_LEN + 4;
      if (frame.length > tp.port.mtu + ETHER_HDR_LEN && overMtu(frame, frame.length, limit - 4 + vlanTagLen(frame))) {
        tp.counters.dropMtu++;
        continue;
      }
      this.send(tp, frame, frame.length);
    }
  }

  /** Evaluate rules in order; the first match decides (true = block). No match passes. */
  private ruleBlocks(rules: readonly RuleRec[], frame: Frame): boolean {
    for (let i = 0; i < rules.length; i++) {
      const r = rules[i];
      if (r.srcHi !== -1 && (r.srcHi !== frame.srcHi || r.srcLo !== frame.srcLo)) continue;
      if (r.dstHi !== -1 && (r.dstHi !== frame.dstHi || r.dstLo !== frame.dstLo)) continue;
      if (r.arpType !== 0 && !this.arpMatches(r, frame)) continue;
      return r.block;
    }
    return false;
  }

  /** ARP/RARP part of a rule: Ethernet/IPv4 (htype 1, ptype 0x0800, hln 6, pln 4), op, sha/spa/tha/tpa. */
  private arpMatches(r: RuleRec, frame: Frame): boolean {
    if (this.ethertype(frame) !== r.arpType) return false;
    const a = this.fL3;
    // The ARP body joins the snapshot (once per frame): the bytes matched are the bytes sent.
    if (frame.length < a + 28 || frameSnapshot(frame, a + 28) < a + 28) return false;
    if (u16At(frame, a) !== 1 || u16At(frame, a + 2) !== ETHERTYPE_IPV4 || u16At(frame, a + 4) !== 0x0604) return false;
    if (r.op !== 0) {
      const op = u16At(frame, a + 6);
      // ARP request 1 / reply 2; RARP request 3 / reply 4.
      if ((r.arpType === ETHERTYPE_RARP ? op - 2 : op) !== r.op) return false;
    }
    if (r.sha !== -1 && macKeyAt(frame.snap, a + 8) !== r.sha) return false;
    if (r.spa !== -1 && u32At(frame, a + 14) !== r.spa) return false;
    if (r.tha !== -1 && macKeyAt(frame.snap, a + 18) !== r.tha) return false;
    if (r.tpa !== -1 && u32At(frame, a + 24) !== r.tpa) return false;
    return true;
  }

  /**
   * Pipeline step: learn the source MAC on the ingress port (the table refuses multicast/zero/static). Returns
   * false when learning the same source again would count again (table full, move damped): not for the flow cache.
   */
  private learnSource(rp: PortRecord, frame: Frame): boolean {
    const res = this.macTable.learnHL(frame.srcHi, frame.srcLo, rp.id);
    if (res === LEARN_KNOWN) return true;
    if (res === LEARN_NEW) rp.counters.macLearned++;
    else if (res === LEARN_MOVED) rp.counters.macMoves++;
    else if (res === LEARN_FULL) {
      rp.counters.learnTableFull++;
      return false;
    } else if (res === LEARN_DAMPED) {
      rp.counters.macMoveDamped++;
      return false;
    } else if (res === LEARN_EVICTED) {
      rp.counters.macLearned++;
      const v = this.recs[this.macTable.lastEvictedPort];
      if (v !== undefined) v.counters.macEvicted++;
    }
    return true;
  }

  /** Pipeline step: known unicast: hairpin, protected, VLAN membership (tagged-out), then egress filters. */
  private unicast(rp: PortRecord, out: PortId, frame: Frame): void {
    if (out === rp.id) {
      rp.counters.dropHairpin++;
      return;
    }
    const tp = this.recs[out];
    if (tp === undefined || tp.span) {
      // Cannot happen (removePort purges the table); flooding is the safe answer to a stale entry.
      this.flood(rp, frame, true);
      return;
    }
    if ((rp.protMask & tp.protMask) !== 0) {
      rp.counters.dropProtected++;
      return;
    }
    if (this.vlanAware && tp.pvid !== this.fVid && (tp.tagged === null || tp.tagged[this.fVid] === 0)) {
      tp.counters.dropTaggedOut++;
      return;
    }
    this.egress(tp, frame);
  }

  /**
   * Pipeline step: broadcast, multicast and unknown unicast go to every other forwarding port, except ports sharing
   * a protected domain with the ingress port, `-discover` ports (unknown unicast only) and VLAN non-members.
   */
  private flood(rp: PortRecord, frame: Frame, unknown: boolean): void {
    rp.counters.floodFrames++;
    const ms = this.fwd;
    const prot = rp.protMask;
    const aware = this.vlanAware;
    const vid = this.fVid;
    for (let i = 0; i < ms.length; i++) {
      const tp = ms[i];
      if (tp === rp || (tp.protMask & prot) !== 0 || (unknown && !tp.discover)) continue;
      if (aware && tp.pvid !== vid && (tp.tagged === null || tp.tagged[vid] === 0)) continue;
      this.egress(tp, frame);
    }
  }

  /** Egress filters of one port (rules-out, blocknonip-out), then the VLAN rewrite, MTU check and delivery. */
  private egress(tp: PortRecord, frame: Frame): void {
    if (tp.rulesOut.length !== 0 && this.ruleBlocks(tp.rulesOut, frame)) {
      tp.counters.dropRulesOut++;
      return;
    }
    if (tp.blockNonIp && !isIpEthertype(this.ethertype(frame))) {
      tp.counters.dropBlockNonIpOut++;
      return;
    }
    if (!this.vlanAware) {
      if (frame.length > tp.port.mtu + ETHER_HDR_LEN && overMtu(frame, frame.length, tp.port.mtu + ETHER_HDR_LEN + vlanTagLen(frame))) {
        tp.counters.dropMtu++; // dropped and counted, never truncated (docs/configuration.md `mtu`)
        return;
      }
      this.send(tp, frame, frame.length);
      return;
    }
    // 802.1Q: leaves untagged on the port's PVID, tagged otherwise; the egress copy rewrites.
    const outTagged = tp.pvid !== this.fVid;
    let len = frame.length;
    if (this.fTagged) {
      if (!outTagged) {
        frame.stripTag = true;
        len -= 4;
      } else if (this.fPrio) {
        frame.stripTag = true; // priority tag (VID 0) replaced by a tag with the VID
        frame.vlanTag = this.fPcp | this.fVid;
      }
    } else if (outTagged) {
      frame.vlanTag = this.fPcp | this.fVid;
      len += 4;
    }
    if (overMtu(frame, len, tp.port.mtu + ETHER_HDR_LEN + (outTagged ? 4 : 0))) {
      tp.counters.dropMtu++;
    } else {
      this.send(tp, frame, len);
    }
    frame.stripTag = false;
    frame.vlanTag = NO_VLAN_TAG;
  }

  /** deliver() with `frame.length` set to the length as sent; count; mark the port for flush at endBatch(). */
  private send(tp: PortRecord, frame: Frame, len: number): void {
    const tc = tp.counters;
    const saved = frame.length;
    frame.length = len;
    const ok = tp.port.deliver(frame);
    frame.length = saved;
    if (ok) {
      tc.txFrames++;
      tc.txBytes += len;
    } else {
      tc.dropEgress++;
    }
    const id = tp.id;
    if (this.touched[id] === 0) {
      this.touched[id] = 1;
      this.touchedIds[this.touchedCount++] = id;
    }
  }
}

/** 4 if the frame carries an 802.1Q tag, else 0 (slow path: only for frames over MTU + header). */
function vlanTagLen(frame: Frame): number {
  return u16At(frame, 12) === ETHERTYPE_VLAN ? 4 : 0;
}

/**
 * Egress MTU check: true when the frame, `len` bytes as sent, is too long for `limit`. A TCP GSO
 * frame is checked by its largest segment (headers + gso_size): the egress port takes it whole (GSO negotiated)
 * or segments it in software into frames of that size.
 */
function overMtu(frame: Frame, len: number, limit: number): boolean {
  if (len <= limit) return false;
  if (frame.gsoHdrEnd === 0) return true;
  return frame.gsoHdrEnd + (len - frame.length) + frame.gsoSize > limit;
}

/**
 * Destination and source MACs from the snapshot (at least 14 bytes) into the frame, as 24-bit halves straight from
 * the bytes as int32s, so no 48-bit number crosses a call (a returned double that V8 does not inline is boxed: an
 * allocation per frame) or is stored per frame (Frame.dst/src compute the 48-bit keys when asked).
 */
function parseMacs(frame: Frame): void {
  const u8 = frame.snap;
  const dHi = (u8[0] << 16) | (u8[1] << 8) | u8[2];
  const dLo = (u8[3] << 16) | (u8[4] << 8) | u8[5];
  const sHi = (u8[6] << 16) | (u8[7] << 8) | u8[8];
  const sLo = (u8[9] << 16) | (u8[10] << 8) | u8[11];
  frame.dstHi = dHi;
  frame.dstLo = dLo;
  frame.srcHi = sHi;
  frame.srcLo = sLo;
}
