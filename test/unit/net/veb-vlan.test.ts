/**
 * 802.1Q on the switch (OpenBSD veb(4)): PVID/tagged sets, tag insertion and stripping by the egress copy
 * (frameCopyTo, checked byte for byte, also with frames split across sg entries), double tags, tagged-in/out,
 * untagged none, the MTU check on the length as sent, and VLAN-transparent mode when no port has VLAN settings.
 */
import { describe, expect, test } from 'vitest';
import { SgList } from '../../../src/memory/sg-list.js';
import { frameCopyTo } from '../../../src/net/frame.js';
import { BCAST, MA, MB, MC, bytesOf, frameFrom, setup } from './veb-helpers.js';

describe('frameCopyTo', () => {
  const src = bytesOf(BCAST, MA, { len: 80 });
  const tagged = bytesOf(BCAST, MA, { len: 84, tags: [0x2014] });
  test('plain, insert, strip and replace, in any pieces and with split sources', () => {
    for (const cuts of [[], [5], [12, 13, 14, 15, 16], [40]]) {
      const copy = (f: ReturnType<typeof frameFrom>, pieces: number[]): Uint8Array => {
        const out = new Uint8Array(f.length);
        const sg = new SgList(4);
        sg.push(out, 0, 7);
        sg.push(out, 7, 9);
        sg.push(out, 16, out.length - 16);
        let pos = 0;
        for (const n of [...pieces, f.length]) {
          const end = Math.min(n, f.length);
          if (end > pos) expect(frameCopyTo(f, pos, sg, pos, end - pos)).toBe(end - pos);
          pos = Math.max(pos, end);
        }
        return out;
      };
      const plain = frameFrom(src, cuts);
      expect(copy(plain, [])).toEqual(src);
      const ins = frameFrom(src, cuts);
      ins.vlanTag = 0x2014;
      ins.length = 84;
      expect(copy(ins, [3, 13, 14, 50])).toEqual(tagged);
      const strip = frameFrom(tagged, cuts);
      strip.stripTag = true;
      strip.length = 80;
      expect(copy(strip, [12, 30])).toEqual(src);
      const repl = frameFrom(tagged, cuts);
      repl.stripTag = true;
      repl.vlanTag = 0x0064;
      expect(copy(repl, [15])).toEqual(bytesOf(BCAST, MA, { len: 84, tags: [0x0064] }));
    }
  });
});

describe('802.1Q VLANs', () => {
  test('untagged PVID ↔ tagged member: the tag is inserted and stripped, PCP kept; other VLANs isolated', () => {
    const { sw, ports } = setup(4);
    const [a, t, c, d] = ports;
    sw.configurePort(a, { untagged: 10 });
    sw.configurePort(t, { untagged: 'none', tagged: [10, 20] });
    sw.configurePort(c, { untagged: 20 });
    // d keeps PVID 1: not in VLAN 10 or 20.
    const fa = bytesOf(BCAST, MA, { len: 70 });
    sw.forward(a, frameFrom(fa));
    expect(t.frames).toEqual([bytesOf(BCAST, MA, { len: 74, tags: [10] })]);
    expect(c.frames.length + d.frames.length).toBe(0);
    // Tagged VLAN 20 with PCP 5 from the trunk → untagged on c.
    const ft = bytesOf(BCAST, MB, { len: 74, tags: [0xa000 | 20] });
    sw.forward(t, frameFrom(ft, [13]));
    expect(c.frames).toEqual([bytesOf(BCAST, MB, { len: 70 })]);
    expect(a.frames.length).toBe(0);
    // Known unicast back from the trunk on VLAN 10 → a, stripped.
    sw.forward(t, frameFrom(bytesOf(MA, MB, { len: 64, tags: [10] })));
    expect(a.frames).toEqual([bytesOf(MA, MB, { len: 60 })]);
    // Unicast from c (VLAN 20) toward a (VLAN 10 only): tagged-out.
    sw.forward(c, frameFrom(bytesOf(MA, MC)));
    expect(sw.counters(a.id)!.dropTaggedOut).toBe(1);
    expect(sw.counters(a.id)!.txFrames).toBe(1);
    // Untagged PCP: an untagged frame going out tagged gets PCP 0; a tagged one keeps its PCP across trunks.
    expect(t.frames[0][14] >> 5).toBe(0);
  });

  test('tagged-in, untagged none, double tags and priority tags', () => {
    const { sw, ports } = setup(2);
    const [t, b] = ports;
    sw.configurePort(t, { untagged: 'none', tagged: [30] });
    sw.forward(t, frameFrom(bytesOf(BCAST, MA, { tags: [31] })));
    expect(sw.counters(t.id)!.dropTaggedIn).toBe(1);
    sw.forward(t, frameFrom(bytesOf(BCAST, MA)));
    expect(sw.counters(t.id)!.dropUntagged).toBe(1);
    sw.forward(t, frameFrom(bytesOf(BCAST, MA, { tags: [30, 1] })));
    expect(sw.counters(t.id)!.dropDoubleTagged).toBe(1);
    sw.forward(b, frameFrom(bytesOf(BCAST, MB, { etype: 0x88a8 })));
    expect(sw.counters(b.id)!.dropSvlan).toBe(1);
    // Priority-tagged (VID 0) on b = its PVID 1; leaves b's VLAN nowhere (t is not in VLAN 1).
    sw.configurePort(t, { tagged: [1, 30] });
    sw.forward(b, frameFrom(bytesOf(BCAST, MB, { len: 64, tags: [0x6000] })));
    expect(t.frames).toEqual([bytesOf(BCAST, MB, { len: 64, tags: [0x6001] })]);
    expect(b.frames.length).toBe(0);
  });

  test('MTU is checked on the length as sent: +4 when the egress port gets a tag', () => {
    const { sw, ports } = setup(3);
    const [a, t, c] = ports;
    t.mtu = 1000;
    c.mtu = 1000;
    sw.configurePort(a, { untagged: 5 });
    sw.configurePort(t, { untagged: 'none', tagged: [5] });
    sw.configurePort(c, { untagged: 5 });
    sw.forward(a, frameFrom(bytesOf(BCAST, MA, { len: 1014 }))); // t: 1018 tagged fits; c: 1014 fits
    sw.forward(t, frameFrom(bytesOf(BCAST, MB, { len: 1018, tags: [5] }))); // a/c get 1014 untagged: fits
    sw.forward(a, frameFrom(bytesOf(BCAST, MA, { len: 1015 }))); // over everywhere
    expect(t.frames.map((f) => f.length)).toEqual([1018]);
    expect(c.frames.map((f) => f.length)).toEqual([1014, 1014]);
    expect(sw.counters(t.id)!.dropMtu).toBe(1);
    expect(sw.counters(c.id)!.dropMtu).toBe(1);
  });

  test('without any VLAN setting the switch is transparent: tagged frames cross unchanged', () => {
    const { sw, ports } = setup(2);
    const f = bytesOf(BCAST, MA, { tags: [77] });
    sw.forward(ports[0], frameFrom(f));
    expect(ports[1].frames).toEqual([f]);
  });
});
