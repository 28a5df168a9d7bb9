/**
 * Single fetch (docs/security.md, "Switch: single fetch and hashing of guest MACs"): the switch decides on a private
 * snapshot of the header and the egress copy sends that snapshot, so a sender that rewrites its buffer after the
 * checks (another vCPU) cannot get a spoofed source, a second VLAN tag or a blocked ARP body through.
 * The rewrite is done deterministically here, from inside a receiver's deliver(), i.e. after every ingress check and
 * before the copy; test/integration/switch-single-fetch.test.ts does the same with a real concurrent writer.
 */
import { describe, expect, test } from 'vitest';
import { SgList } from '../../../src/memory/sg-list.js';
import { Frame, NO_VLAN_TAG, SNAP_HDR, SNAP_MAX, frameCopyTo, frameSnapshot } from '../../../src/net/frame.js';
import { OFFLOAD_DROP, SoftOffload, gsoHeaderEnd } from '../../../src/net/offload.js';
import { NO_PORT, type Port } from '../../../src/net/port.js';
import { parseIpv4 } from '../../../src/net/switch.js';
import { MA, MB, MC, arpPayload, bytesOf, frameFrom, macBytes, setup } from './veb-helpers.js';
import { tcpFrame } from '../../helpers/tcp-frame.js';

/** Write `bytes` at logical frame offset `pos` of the sender's buffers (what a second vCPU does). */
function scribble(frame: Frame, pos: number, bytes: number[]): void {
  let p = frame.offset + pos;
  let k = 0;
  for (let i = 0; i < frame.sg.count && k < bytes.length; i++) {
    const len = frame.sg.lens[i];
    while (p < len && k < bytes.length) frame.sg.bufs[i][frame.sg.offs[i] + p++] = bytes[k++];
    p -= len;
  }
}

/** The sender's current bytes of the frame (frame offsets 0..length). */
function senderBytes(frame: Frame): Uint8Array {
  const out = new Uint8Array(frame.length);
  let p = frame.offset;
  let k = 0;
  for (let i = 0; i < frame.sg.count; i++) {
    const len = frame.sg.lens[i];
    for (; p < len && k < out.length; p++) out[k++] = frame.sg.bufs[i][frame.sg.offs[i] + p];
    p = Math.max(0, p - len);
  }
  return out;
}

/** A receiver that rewrites the sender's frame (after every check, before its own copy), then copies it. */
class RacingPort implements Port {
  id = NO_PORT;
  mtu = 1500;
  frames: Uint8Array[] = [];
  constructor(
    readonly name: string,
    private readonly attack: (f: Frame) => void,
  ) {}
  deliver(frame: Frame): boolean {
    this.attack(frame);
    const out = new Uint8Array(frame.length);
    const sg = new SgList(1);
    sg.push(out, 0, out.length);
    frameCopyTo(frame, 0, sg, 0, frame.length);
    this.frames.push(out);
    return true;
  }
  flush(): void {}
}

const SPOOF = '02:00:00:00:00:66';
/** Snapshot of an 802.1Q-tagged frame: header, tag, inner ethertype. */
const TAGGED_SNAP = 18;

describe('frameCopyTo sends the snapshot', () => {
  /** Reference: the frame as sent, built from `orig` (the snapshot's source) and `now` (the sender's bytes now). */
  function expected(orig: Uint8Array, now: Uint8Array, snapLen: number, strip: boolean, tag: number): number[] {
    const src = [...orig.subarray(0, snapLen), ...now.subarray(snapLen)];
    const head = src.slice(0, 12);
    const rest = src.slice(strip ? 16 : 12);
    const ins = tag === NO_VLAN_TAG ? [] : [0x81, 0x00, tag >> 8, tag & 0xff];
    return [...head, ...ins, ...rest];
  }

  for (const [strip, tag] of [
    [false, NO_VLAN_TAG],
    [true, NO_VLAN_TAG],
    [false, 0x2007],
    [true, 0x000a],
  ] as const) {
    test(`header bytes come from the snapshot, the rest from the sender (strip=${strip}, insert=${tag !== NO_VLAN_TAG})`, () => {
      const orig = bytesOf(MB, MA, { tags: [10], etype: 0x0806, len: 90 });
      // A tagged frame's snapshot (18 bytes); sender entries cut inside it, at its end and after it; the
      // receiver's in 7-byte pieces.
      const frame = frameFrom(orig, [3, 13, TAGGED_SNAP, 40]);
      expect(frameSnapshot(frame, SNAP_HDR)).toBe(SNAP_HDR);
      expect(frameSnapshot(frame, TAGGED_SNAP)).toBe(TAGGED_SNAP);
      const now = orig.map((b) => b ^ 0xff);
      scribble(frame, 0, [...now]);
      frame.stripTag = strip;
      frame.vlanTag = tag;
      frame.length = orig.length + (tag === NO_VLAN_TAG ? 0 : 4) - (strip ? 4 : 0);
      const want = expected(orig, now, TAGGED_SNAP, strip, tag);
      expect(want.length).toBe(frame.length);
      // Whole copy into a receiver list of small entries.
      const dst = new Uint8Array(frame.length + 5);
      const dsg = new SgList(32);
      for (let at = 0; at < dst.length; at += 7) dsg.push(dst, at, Math.min(7, dst.length - at));
      expect(frameCopyTo(frame, 0, dsg, 5, frame.length)).toBe(frame.length);
      expect([...dst.subarray(5)]).toEqual(want);
      // Piecewise copies (as MRG_RXBUF fills several chains) give the same bytes.
      const pieces = new Uint8Array(frame.length);
      for (let pos = 0; pos < frame.length; pos += 5) {
        const psg = new SgList(1);
        const n = Math.min(5, frame.length - pos);
        psg.push(pieces, pos, n);
        expect(frameCopyTo(frame, pos, psg, 0, n)).toBe(n);
      }
      expect([...pieces]).toEqual(want);
    });
  }

  test('the snapshot grows once and never changes; it stops at the frame end and at SNAP_MAX', () => {
    const orig = bytesOf(MB, MA, { len: 100 });
    const frame = frameFrom(orig, [20]);
    expect(frameSnapshot(frame, 14)).toBe(14);
    scribble(frame, 0, new Array(100).fill(0xee));
    expect(frameSnapshot(frame, 40)).toBe(40);
    expect([...frame.snap.subarray(0, 14)]).toEqual([...orig.subarray(0, 14)]); // not fetched again
    expect([...frame.snap.subarray(14, 40)]).toEqual(new Array(26).fill(0xee));
    expect(frameSnapshot(frame, 1000)).toBe(SNAP_MAX);
    const short = frameFrom(bytesOf(MB, MA, { len: 16 }));
    expect(frameSnapshot(short, SNAP_HDR)).toBe(SNAP_HDR);
    expect(frameSnapshot(short, 40)).toBe(16);
  });

  test('a frame without a snapshot (snapLen 0) is copied from the sender as is', () => {
    const orig = bytesOf(MB, MA, { len: 64 });
    const frame = frameFrom(orig, [7]);
    const dst = new Uint8Array(64);
    const dsg = new SgList(1);
    dsg.push(dst, 0, 64);
    expect(frameCopyTo(frame, 0, dsg, 0, 64)).toBe(64);
    expect(dst).toEqual(orig);
  });
});

describe('the switch forwards the header it checked, whatever the sender writes after the checks', () => {
  test('locked port: a source rewritten to a spoofed MAC after the check leaves with the checked source', () => {
    const { sw, ports } = setup(2);
    const [a, b] = ports;
    const racer = new RacingPort('racer', (f) => scribble(f, 6, macBytes(SPOOF)));
    sw.addPort(racer);
    sw.configurePort(a, { locked: true, learn: false, discover: false });
    sw.addStatic(MA, a);
    const frame = frameFrom(bytesOf('ff:ff:ff:ff:ff:ff', MA, { len: 64 }));
    sw.forward(a, frame);
    sw.endBatch();
    // Flood order: b, then racer (which rewrites, then copies); b copied before the rewrite.
    expect(senderBytes(frame).subarray(6, 12)).toEqual(new Uint8Array(macBytes(SPOOF)));
    for (const got of [b.frames[0], racer.frames[0]]) expect([...got.subarray(6, 12)]).toEqual(macBytes(MA));
  });

  test('access port: a second 802.1Q tag written after the double-tagged check never reaches it', () => {
    const { sw, ports } = setup(3);
    const [a, access, trunk] = ports;
    sw.configurePort(a, { tagged: [10], untagged: 'none' });
    sw.configurePort(access, { untagged: 10 });
    sw.configurePort(trunk, { tagged: [10], untagged: 'none' });
    const racer = new RacingPort('racer', (f) => scribble(f, 16, [0x81, 0x00, 0x00, 0x14])); // inner tag, VID 20
    sw.addPort(racer);
    sw.configurePort(racer, { untagged: 10 });
    const frame = frameFrom(bytesOf('ff:ff:ff:ff:ff:ff', MA, { tags: [10], etype: 0x0800, len: 64 }));
    sw.forward(a, frame);
    sw.endBatch();
    expect(access.frames).toHaveLength(1);
    expect(trunk.frames).toHaveLength(1);
    expect(racer.frames).toHaveLength(1);
    // Access ports get the frame untagged with the checked ethertype; the trunk tagged once.
    for (const got of [access.frames[0], racer.frames[0]]) expect([got[12], got[13]]).toEqual([0x08, 0x00]);
    expect([...trunk.frames[0].subarray(12, 18)]).toEqual([0x81, 0x00, 0x00, 0x0a, 0x08, 0x00]);
    expect(sw.counters(a.id)!.dropDoubleTagged).toBe(0);
  });

  test('rules: an ARP target rewritten to a blocked address after the rule matched leaves as matched', () => {
    const { sw, ports } = setup(2);
    const [a, b] = ports;
    sw.addRule(a, { action: 'block', dir: 'in', arp: { tpa: parseIpv4('10.0.0.9') } });
    const racer = new RacingPort('racer', (f) => scribble(f, 14 + 24, [10, 0, 0, 9]));
    sw.addPort(racer);
    const arp = bytesOf('ff:ff:ff:ff:ff:ff', MA, { etype: 0x0806, payload: arpPayload(1, MA, '10.0.0.1', '00:00:00:00:00:00', '10.0.0.1'), len: 60 });
    const frame = frameFrom(arp, [30]);
    sw.forward(a, frame);
    sw.endBatch();
    expect(sw.counters(a.id)!.dropRulesIn).toBe(0);
    for (const got of [b.frames[0], racer.frames[0]]) expect([...got.subarray(38, 42)]).toEqual([10, 0, 0, 1]);
    // And the same frame sent with the blocked target is dropped by the rule.
    const blocked = frameFrom(bytesOf('ff:ff:ff:ff:ff:ff', MA, { etype: 0x0806, payload: arpPayload(1, MA, '10.0.0.1', '00:00:00:00:00:00', '10.0.0.9'), len: 60 }));
    sw.forward(a, blocked);
    expect(sw.counters(a.id)!.dropRulesIn).toBe(1);
  });

  test('a reused Frame gets a fresh snapshot per forward()', () => {
    const { sw, ports } = setup(2);
    const [a, b] = ports;
    const frame = frameFrom(bytesOf(MB, MA, { len: 64 }));
    sw.forward(a, frame);
    scribble(frame, 0, macBytes(MC));
    sw.forward(a, frame);
    sw.endBatch();
    expect(b.take()).toEqual([`${MB}<${MA}`, `${MC}<${MA}`]);
  });
});

describe('software TSO segments the headers the switch checked', () => {
  function tsoFrame(): { frame: Frame; l4: number; hdrs: number } {
    const b = tcpFrame(false, 4000);
    const frame = frameFrom(b.frame, [20]);
    frame.vnetFlags = 1; // NEEDS_CSUM
    frame.gsoType = 1; // TCPV4
    frame.gsoSize = 1000;
    frame.csumStart = b.csumStart;
    frame.csumOffset = 16;
    frame.gsoHdrEnd = gsoHeaderEnd(frame.sg, frame.offset, frame.csumStart); // as NetDevice reads it on TX
    return { frame, l4: b.l4, hdrs: b.hdrs };
  }

  test('a TCP data offset rewritten after ingress (bigger segments than the MTU check saw) is dropped', () => {
    const { frame, l4, hdrs } = tsoFrame();
    expect(frame.gsoHdrEnd).toBe(hdrs);
    const soft = new SoftOffload();
    expect(soft.prepare(frame)).toBe(4);
    scribble(frame, l4 + 12, [0xf0]); // data offset 15 words: 28 bytes more header in every segment
    expect(soft.prepare(frame)).toBe(OFFLOAD_DROP);
  });
});
