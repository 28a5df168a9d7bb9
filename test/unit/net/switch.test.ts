/**
 * Switch forwarding with fake ports that copy delivered frames out (sgCopyOut): learning, unicast, flooding,
 * hairpin, runts, MAC moves, aging, the address cap, removePort, batch flushes and counters.
 * Reference: OpenBSD veb(4), docs/configuration.md.
 */
import { describe, expect, test } from 'vitest';
import { SgList, sgCopyOut } from '../../../src/memory/sg-list.js';
import { Frame } from '../../../src/net/frame.js';
import { BROADCAST, formatMac, macKeyAt, parseMac, type MacKey } from '../../../src/net/mac.js';
import { NO_PORT, type Port } from '../../../src/net/port.js';
import { DROP_REASONS, PORT_COUNTER_NAMES, Switch, newPortCounters } from '../../../src/net/switch.js';

/** Port that records copies of delivered frames and counts flushes. */
class FakePort implements Port {
  id = NO_PORT;
  mtu = 1500;
  frames: Uint8Array[] = [];
  flushes = 0;
  accept = true;
  constructor(readonly name: string) {}
  deliver(frame: Frame): boolean {
    if (!this.accept) return false;
    const copy = new Uint8Array(frame.length);
    expect(sgCopyOut(frame.sg, frame.offset, copy, 0, frame.length)).toBe(frame.length);
    this.frames.push(copy);
    return true;
  }
  flush(): void {
    this.flushes++;
  }
  /** Destination/source MACs of recorded frames as text, and clear the record. */
  take(): string[] {
    const out = this.frames.map((f) => `${formatMac(macKeyAt(f, 0))}<${formatMac(macKeyAt(f, 6))}`);
    this.frames = [];
    return out;
  }
}

const HDR = 12; // a virtio-net-header-sized gap before the Ethernet bytes, as NetDevice will pass

/** Frame of `len` bytes (dst, src, ethertype 0x0800, payload), optionally split into entries at `cuts`. */
function frameOf(dst: MacKey | string, src: MacKey | string, len = 64, cuts: number[] = []): Frame {
  const d = typeof dst === 'string' ? parseMac(dst) : dst;
  const s = typeof src === 'string' ? parseMac(src) : src;
  const bytes = new Uint8Array(HDR + len);
  for (let i = 0; i < 6; i++) {
    bytes[HDR + i] = Math.floor(d / 2 ** (40 - 8 * i)) % 256;
    bytes[HDR + 6 + i] = Math.floor(s / 2 ** (40 - 8 * i)) % 256;
  }
  if (len >= 14) {
    bytes[HDR + 12] = 0x08;
    for (let i = 14; i < len; i++) bytes[HDR + i] = i & 0xff;
  }
  const sg = new SgList(cuts.length + 1);
  let at = 0;
  for (const c of [...cuts.map((x) => HDR + x), bytes.length]) {
    sg.push(bytes.subarray(at, c), 0, c - at); // separate views, like guest buffers
    at = c;
  }
  const f = new Frame(sg);
  f.offset = HDR;
  f.length = len;
  return f;
}

const MA = '02:00:00:00:00:0a';
const MB = '02:00:00:00:00:0b';
const MC = '02:00:00:00:00:0c';
const BCAST = 'ff:ff:ff:ff:ff:ff';

function setup(n = 3, opts = {}) {
  const sw = new Switch('sw0', opts);
  const ports = Array.from({ length: n }, (_, i) => new FakePort(`p${i}`));
  for (const p of ports) sw.addPort(p);
  return { sw, ports };
}

describe('Switch', () => {
  test('addPort assigns small ids, reuses freed ones, and refuses a port attached twice', () => {
    const { sw, ports } = setup(3);
    expect(ports.map((p) => p.id)).toEqual([0, 1, 2]);
    expect(sw.removePort(ports[1])).toBe(true);
    expect(ports[1].id).toBe(NO_PORT);
    expect(sw.removePort(ports[1])).toBe(false);
    const q = new FakePort('q');
    expect(sw.addPort(q)).toBe(1);
    expect(() => sw.addPort(q)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }));
    expect(sw.ports().map((p) => p.name)).toEqual(['p0', 'q', 'p2']);
  });

  test('unknown unicast floods to every other port, then learning makes the reply unicast', () => {
    const { sw, ports } = setup(3);
    const [a, b, c] = ports;
    sw.forward(a, frameOf(MB, MA));
    expect(a.take()).toEqual([]);
    expect(b.take()).toEqual([`${MB}<${MA}`]);
    expect(c.take()).toEqual([`${MB}<${MA}`]);
    expect(sw.macTable.lookup(parseMac(MA))).toBe(a.id);
    sw.forward(b, frameOf(MA, MB)); // MA known on a
    expect(a.take()).toEqual([`${MA}<${MB}`]);
    expect(c.take()).toEqual([]);
    sw.forward(a, frameOf(MB, MA)); // MB now known on b
    expect(b.take()).toEqual([`${MB}<${MA}`]);
    expect(c.take()).toEqual([]);
  });

  test('delivered bytes equal the sent frame, also when the header is split across entries', () => {
    const { sw, ports } = setup(2);
    const f = frameOf(BCAST, MA, 100, [3, 8, 13]);
    const want = new Uint8Array(100);
    sgCopyOut(f.sg, HDR, want, 0, 100);
    sw.forward(ports[0], f);
    expect(ports[1].frames).toEqual([want]);
    expect(f.dst).toBe(BROADCAST);
    expect(formatMac(f.src)).toBe(MA);
  });

  test('broadcast, multicast and unknown unicast reach every other port and never the ingress port', () => {
    const { sw, ports } = setup(4);
    sw.forward(ports[3], frameOf(MA, MC)); // MA unknown
    sw.forward(ports[3], frameOf(BCAST, MC));
    sw.forward(ports[3], frameOf('01:00:5e:00:00:fb', MC));
    sw.forward(ports[3], frameOf('33:33:00:00:00:01', MC));
    for (const p of ports.slice(0, 3)) expect(p.frames.length).toBe(4);
    expect(ports[3].frames.length).toBe(0);
    expect(sw.counters(ports[3].id)!.floodFrames).toBe(4);
  });

  test('a multicast destination floods even if that address was somehow in the table', () => {
    const { sw, ports } = setup(3);
    // The table refuses to learn it, so a multicast frame can never be narrowed to one port.
    sw.forward(ports[0], frameOf(BCAST, '01:00:5e:00:00:01'));
    sw.forward(ports[1], frameOf('01:00:5e:00:00:01', MB));
    expect(ports[0].frames.length).toBe(1);
    expect(ports[2].frames.length).toBe(2);
  });

  test('multicast and all-zero source addresses are never learned', () => {
    const { sw, ports } = setup(3);
    sw.forward(ports[0], frameOf(BCAST, '01:00:5e:00:00:01'));
    sw.forward(ports[0], frameOf(BCAST, '00:00:00:00:00:00'));
    sw.forward(ports[0], frameOf(BCAST, BCAST));
    expect(sw.macTable.size).toBe(0);
    expect(sw.counters(ports[0].id)!.macLearned).toBe(0);
  });

  test('a MAC seen on another port moves there and the move is counted on the new port', () => {
    const { sw, ports } = setup(3);
    const [a, b, c] = ports;
    sw.forward(a, frameOf(BCAST, MA));
    sw.forward(b, frameOf(BCAST, MA)); // MA moved (e.g. migration)
    expect(sw.macTable.lookup(parseMac(MA))).toBe(b.id);
    expect(sw.counters(b.id)!.macMoves).toBe(1);
    expect(sw.counters(a.id)!.macLearned).toBe(1);
    for (const p of ports) p.take();
    sw.forward(c, frameOf(MA, MC));
    expect(b.take()).toEqual([`${MA}<${MC}`]);
    expect(a.take()).toEqual([]);
  });

  test('a known unicast destination on the ingress port is dropped (hairpin) and counted', () => {
    const { sw, ports } = setup(3);
    const [a, b, c] = ports;
    sw.forward(a, frameOf(BCAST, MA));
    sw.forward(a, frameOf(BCAST, MB)); // both behind port a
    for (const p of ports) p.take();
    sw.forward(a, frameOf(MB, MA));
    expect([a.frames.length, b.frames.length, c.frames.length]).toEqual([0, 0, 0]);
    expect(sw.counters(a.id)!.dropHairpin).toBe(1);
    expect(sw.totals().dropHairpin).toBe(1);
  });

  test('frames shorter than 14 bytes are dropped as runts, neither learned nor forwarded', () => {
    const { sw, ports } = setup(2);
    sw.forward(ports[0], frameOf(BCAST, MA, 13));
    sw.forward(ports[0], frameOf(BCAST, MA, 0));
    const shortSg = frameOf(BCAST, MA, 64);
    shortSg.sg.lens[0] = HDR + 10; // list shorter than the header although length claims 64
    shortSg.sg.count = 1;
    sw.forward(ports[0], shortSg);
    expect(ports[1].frames.length).toBe(0);
    expect(sw.macTable.size).toBe(0);
    const c = sw.counters(ports[0].id)!;
    expect(c.dropRunt).toBe(3);
    expect(c.rxFrames).toBe(3);
    sw.forward(ports[0], frameOf(BCAST, MA, 14)); // exactly a header is fine
    expect(ports[1].frames.length).toBe(1);
  });

  test('entries age out after two rotations driven by tick()', () => {
    const { sw, ports } = setup(3, { timeoutSec: 60 }); // rotation every 30 s
    const [a, b, c] = ports;
    sw.tick(1000);
    sw.forward(a, frameOf(BCAST, MA));
    sw.tick(1030); // first rotation: still known
    for (const p of ports) p.take();
    sw.forward(c, frameOf(MA, MC));
    expect(b.take()).toEqual([]);
    expect(a.frames.length).toBe(1);
    sw.tick(1060); // second rotation: MA gone (MC was refreshed at 1030+, survives)
    for (const p of ports) p.take();
    sw.forward(c, frameOf(MA, MC));
    expect(a.frames.length).toBe(1);
    expect(b.frames.length).toBe(1); // flooded again
    expect(sw.macTable.lookup(parseMac(MC))).toBe(c.id);
    expect(sw.totals().macRotations).toBe(2);
  });

  test('with the table full, new sources are not learned, counted, and their frames still flood', () => {
    const { sw, ports } = setup(3, { maxAddr: 2 });
    const [a, b, c] = ports;
    sw.forward(a, frameOf(BCAST, MA));
    sw.forward(b, frameOf(BCAST, MB));
    sw.forward(c, frameOf(BCAST, MC));
    expect(sw.macTable.size).toBe(2);
    expect(sw.counters(c.id)!.learnTableFull).toBe(1);
    for (const p of ports) p.take();
    sw.forward(a, frameOf(MC, MA)); // MC unknown → flood
    expect(b.frames.length).toBe(1);
    expect(c.frames.length).toBe(1);
  });

  test('removePort forgets its MACs and is no longer flooded to', () => {
    const { sw, ports } = setup(3);
    const [a, b, c] = ports;
    sw.forward(b, frameOf(BCAST, MB));
    sw.forward(b, frameOf(BCAST, MC));
    expect(sw.macTable.size).toBe(2);
    sw.removePort(b);
    expect(sw.macTable.size).toBe(0);
    for (const p of ports) p.take();
    sw.forward(a, frameOf(MB, MA));
    sw.forward(a, frameOf(BCAST, MA));
    expect(b.frames.length).toBe(0);
    expect(c.frames.length).toBe(2);
    sw.forward(b, frameOf(BCAST, MB)); // a detached port cannot inject
    expect(c.frames.length).toBe(2);
    expect(sw.totals().dropNotMember).toBe(1);
  });

  test('endBatch flushes each touched port exactly once and untouched ports not at all', () => {
    const { sw, ports } = setup(4);
    const [a, b, c, d] = ports;
    sw.forward(a, frameOf(BCAST, MA)); // touches b, c, d
    sw.forward(b, frameOf(MA, MB)); // touches a
    sw.forward(c, frameOf(MA, MC)); // touches a again
    sw.forward(a, frameOf(MB, MA)); // touches b again
    expect(ports.map((p) => p.flushes)).toEqual([0, 0, 0, 0]);
    sw.endBatch();
    expect(ports.map((p) => p.flushes)).toEqual([1, 1, 1, 1]);
    sw.forward(c, frameOf(MA, MC));
    sw.forward(c, frameOf(MA, MC));
    sw.endBatch();
    sw.endBatch(); // empty batch flushes nothing
    expect([a.flushes, b.flushes, c.flushes, d.flushes]).toEqual([2, 1, 1, 1]);
  });

  test('a port removed mid-batch is not flushed; one added in its place is flushed once', () => {
    const { sw, ports } = setup(3);
    const [a, b] = ports;
    sw.forward(a, frameOf(BCAST, MA)); // touches b, c
    sw.removePort(b);
    const q = new FakePort('q'); // takes b's id
    sw.addPort(q);
    sw.forward(a, frameOf(BCAST, MA)); // touches q, c
    sw.endBatch();
    expect(b.flushes).toBe(0);
    expect(q.flushes).toBe(1);
    expect(ports[2].flushes).toBe(1);
  });

  test('counters: rx/tx frames and bytes, floods, learning and egress drops per port, plus totals', () => {
    const { sw, ports } = setup(3);
    const [a, b, c] = ports;
    c.accept = false;
    sw.forward(a, frameOf(BCAST, MA, 100)); // flood to b (ok) and c (dropped)
    sw.forward(b, frameOf(MA, MB, 60)); // unicast to a
    sw.forward(a, frameOf(BCAST, MA, 10)); // runt
    expect({ ...sw.counters(a.id) }).toEqual({
      ...newPortCounters(), // every other counter (veb drop reasons, damping, eviction) stays 0
      rxFrames: 2, rxBytes: 110, txFrames: 1, txBytes: 60, floodFrames: 1,
      macLearned: 1, macMoves: 0, learnTableFull: 0, dropRunt: 1, dropHairpin: 0, dropMtu: 0, dropEgress: 0,
    });
    expect(sw.counters(b.id)).toMatchObject({ rxFrames: 1, rxBytes: 60, txFrames: 1, txBytes: 100, macLearned: 1 });
    expect(sw.counters(c.id)).toMatchObject({ rxFrames: 0, txFrames: 0, dropEgress: 1 });
    expect(sw.counters(99)).toBeUndefined();
    const before = sw.totals();
    expect(before).toMatchObject({ rxFrames: 3, txFrames: 2, dropEgress: 1, dropRunt: 1, ports: 3, macEntries: 2 });
    sw.removePort(c); // removed ports' counters stay in the totals
    expect(sw.totals()).toMatchObject({ rxFrames: 3, txFrames: 2, dropEgress: 1, ports: 2 });
    // Every counter name has a field; every drop counter has a reason label.
    expect(Object.keys(sw.counters(a.id)!)).toEqual([...PORT_COUNTER_NAMES]);
    for (const n of PORT_COUNTER_NAMES) if (n.startsWith('drop')) expect(DROP_REASONS).toHaveProperty(n);
  });

  test('egress MTU: a frame longer than MTU + 14 is dropped and counted, never truncated; a VLAN tag adds 4', () => {
    const sw = new Switch('s');
    const a = new FakePort('a');
    const b = new FakePort('b');
    b.mtu = 1000;
    sw.addPort(a);
    sw.addPort(b);
    sw.forward(a, frameOf(BCAST, MA, 1014)); // exactly MTU + header: delivered
    sw.forward(a, frameOf(BCAST, MA, 1015)); // one byte over: dropped
    const tagged = frameOf(BCAST, MA, 1018);
    const tagBytes = new Uint8Array(tagged.sg.bufs[0].buffer);
    tagBytes[tagged.sg.offs[0] + tagged.offset + 12] = 0x81; // ethertype 0x8100: 802.1Q
    tagBytes[tagged.sg.offs[0] + tagged.offset + 13] = 0x00;
    sw.forward(a, tagged); // MTU + header + tag: delivered
    sw.forward(a, frameOf(BCAST, MA, 1018)); // same length untagged: dropped
    expect(b.frames.map((f) => f.length)).toEqual([1014, 1018]);
    expect(sw.counters(b.id)).toMatchObject({ txFrames: 2, dropMtu: 2, dropEgress: 0 });
    expect(DROP_REASONS.dropMtu).toBe('mtu');
  });

  test('constructor validates mtu, maxAddr and timeout', () => {
    expect(new Switch('s').mtu).toBe(1500);
    expect(() => new Switch('s', { mtu: 67 })).toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }));
    expect(() => new Switch('s', { maxAddr: 0 })).toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }));
    expect(() => new Switch('s', { timeoutSec: 0 })).toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }));
  });
});
