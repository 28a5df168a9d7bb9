/**
 * Software offloads (src/net/offload.ts): checksum completion and TCP segmentation, checked against a
 * reference checksum written here independently (a plain sum of 16-bit words over a number[]).
 */
import { describe, expect, test } from 'vitest';
import { SgList } from '../../../src/memory/sg-list.js';
import { Frame } from '../../../src/net/frame.js';
import { OFFLOAD_DROP, SoftOffload, TsoPlan, completeChecksum, tsoParse, tsoSegment } from '../../../src/net/offload.js';
import { type Built, pseudo, refCsum, refSum, tcpFrame, tcpVerifies, u16, u32 } from '../../helpers/tcp-frame.js';

const NEEDS_CSUM = 1;
const GSO_TCPV4 = 1;
const GSO_TCPV6 = 4;
const FIN = 0x01;
const PSH = 0x08;

const CWR = 0x80;
const ACK = 0x10;

function frameOf(bytes: Uint8Array, hdr: { flags?: number; gsoType?: number; gsoSize?: number; hdrLen?: number; csumStart?: number; csumOffset?: number }): Frame {
  const sg = new SgList(2);
  // Split the bytes across two entries to exercise the copy out of a scatter-gather list.
  const cut = Math.min(40, bytes.length);
  sg.push(bytes, 0, cut);
  sg.push(bytes, cut, bytes.length - cut);
  const f = new Frame(sg);
  f.length = bytes.length;
  f.vnetFlags = hdr.flags ?? 0;
  f.gsoType = hdr.gsoType ?? 0;
  f.gsoSize = hdr.gsoSize ?? 0;
  f.hdrLen = hdr.hdrLen ?? 0;
  f.csumStart = hdr.csumStart ?? 0;
  f.csumOffset = hdr.csumOffset ?? 0;
  return f;
}

function segmentAll(b: Built, v6: boolean, mss: number, hdrLen = b.hdrs): Uint8Array[] {
  const soft = new SoftOffload();
  const n = soft.prepare(frameOf(b.frame, { flags: NEEDS_CSUM, gsoType: v6 ? GSO_TCPV6 : GSO_TCPV4, gsoSize: mss, hdrLen, csumStart: b.csumStart, csumOffset: 16 }));
  expect(n).toBeGreaterThan(0);
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const len = soft.output(i);
    out.push(soft.out.slice(0, len));
  }
  return out;
}

describe('checksum completion', () => {
  for (const v6 of [false, true]) {
    for (const payload of [0, 1, 100, 1001, 1448]) {
      test(`${v6 ? 'IPv6' : 'IPv4'} TCP, ${payload}-byte payload: the completed checksum equals the reference`, () => {
        const b = tcpFrame(v6, payload, { flags: ACK | PSH });
        const f = b.frame.slice();
        expect(completeChecksum(f, f.length, b.csumStart, 16)).toBe(true);
        // Reference: checksum field zero, pseudo-header + segment, computed here from scratch.
        const z = b.frame.slice();
        z[b.l4 + 16] = z[b.l4 + 17] = 0;
        const want = refCsum([...pseudo(z, v6, b.l3, z.length - b.l4), ...z.subarray(b.l4)]);
        expect(u16(f, b.l4 + 16)).toBe(want);
        expect(tcpVerifies(f, v6, b.l3, b.l4)).toBe(true);
        // Nothing else changed.
        f[b.l4 + 16] = b.frame[b.l4 + 16];
        f[b.l4 + 17] = b.frame[b.l4 + 17];
        expect(f).toEqual(b.frame);
      });
    }
  }

  test('UDP-style offset (csum_offset 6) and odd lengths', () => {
    const f = new Uint8Array(14 + 20 + 8 + 33);
    for (let i = 0; i < f.length; i++) f[i] = (i * 13) & 0xff;
    f[34 + 6] = 0;
    f[34 + 7] = 0;
    const ref = refCsum(f.subarray(34));
    expect(completeChecksum(f, f.length, 34, 6)).toBe(true);
    expect(u16(f, 40)).toBe(ref);
  });

  test('offsets outside the frame are refused and leave it unchanged', () => {
    const f = new Uint8Array(60).fill(7);
    expect(completeChecksum(f, 60, 60, 0)).toBe(false);
    expect(completeChecksum(f, 60, 50, 9)).toBe(false);
    expect(f.every((x) => x === 7)).toBe(true);
  });

  test('SoftOffload completes the checksum of a NEEDS_CSUM frame copied out of a scatter-gather list', () => {
    const b = tcpFrame(false, 700);
    const soft = new SoftOffload();
    expect(soft.prepare(frameOf(b.frame, { flags: NEEDS_CSUM, csumStart: b.csumStart, csumOffset: 16 }))).toBe(1);
    const len = soft.output(0);
    expect(len).toBe(b.frame.length);
    expect(tcpVerifies(soft.out.subarray(0, len), false, b.l3, b.l4)).toBe(true);
    expect(b.frame[b.l4 + 16] | b.frame[b.l4 + 17]).not.toBe(0); // the sender's bytes are untouched
    expect(u16(b.frame, b.l4 + 16)).toBe(refSum(pseudo(b.frame, false, b.l3, b.frame.length - b.l4)));
  });
});

describe('TCP segmentation', () => {
  for (const v6 of [false, true]) {
    for (const vlan of [false, true]) {
      test(`${v6 ? 'IPv6' : 'IPv4'}${vlan ? ' with an 802.1Q tag' : ''}: checksums verify, seq advances, payload concatenates, flags placed, last segment shorter`, () => {
        const mss = 1448;
        const payload = 5 * mss + 321;
        const b = tcpFrame(v6, payload, { seq: 0xfffff000, flags: ACK | PSH | FIN | CWR, id: 0xfffe, vlan });
        const segs = segmentAll(b, v6, mss);
        expect(segs).toHaveLength(6);
        const data: number[] = [];
        segs.forEach((s, i) => {
          const last = i === segs.length - 1;
          expect(s.length).toBe(b.hdrs + (last ? 321 : mss));
          expect(s.subarray(0, b.l3)).toEqual(b.frame.subarray(0, b.l3)); // L2 untouched
          if (!v6) {
            expect(refSum(s.subarray(b.l3, b.l3 + 20))).toBe(0xffff); // IP header checksum verifies
            expect(u16(s, b.l3 + 2)).toBe(s.length - b.l3);
            expect(u16(s, b.l3 + 4)).toBe((0xfffe + i) & 0xffff);
          } else {
            expect(u16(s, b.l3 + 4)).toBe(s.length - b.l3 - 40);
          }
          expect(tcpVerifies(s, v6, b.l3, b.l4)).toBe(true);
          expect(u32(s, b.l4 + 4)).toBe((0xfffff000 + i * mss) >>> 0);
          const fl = s[b.l4 + 13];
          expect((fl & (FIN | PSH)) !== 0).toBe(last);
          expect((fl & FIN) !== 0).toBe(last);
          expect((fl & CWR) !== 0).toBe(i === 0);
          expect(fl & ACK).toBe(ACK);
          expect(s.subarray(b.l4 + 20, b.hdrs)).toEqual(b.frame.subarray(b.l4 + 20, b.hdrs)); // options copied
          data.push(...s.subarray(b.hdrs));
        });
        expect(Uint8Array.from(data)).toEqual(b.frame.subarray(b.hdrs));
      });
    }
  }

  test('gso_size larger than the payload: one frame, complete checksums', () => {
    const b = tcpFrame(false, 1000);
    const segs = segmentAll(b, false, 1448);
    expect(segs).toHaveLength(1);
    expect(segs[0].length).toBe(b.frame.length);
    expect(tcpVerifies(segs[0], false, b.l3, b.l4)).toBe(true);
    expect(refSum(segs[0].subarray(b.l3, b.l3 + 20))).toBe(0xffff);
  });

  test('payload an exact multiple of gso_size: all segments full', () => {
    const b = tcpFrame(true, 4 * 1000);
    const segs = segmentAll(b, true, 1000);
    expect(segs.map((s) => s.length)).toEqual([1, 2, 3, 4].map(() => b.hdrs + 1000));
  });

  test('hdr_len lying (0, too short, too long): headers are parsed from the frame, same result', () => {
    const b = tcpFrame(false, 3000);
    const good = segmentAll(b, false, 1000, b.hdrs);
    for (const lie of [0, 20, b.hdrs + 500, 65535]) expect(segmentAll(b, false, 1000, lie)).toEqual(good);
  });

  test('tsoParse/tsoSegment on their own', () => {
    const b = tcpFrame(true, 2500);
    const plan = new TsoPlan();
    expect(tsoParse(b.frame, b.frame.length, GSO_TCPV6, 1200, b.csumStart, plan)).toBe(true);
    expect(plan).toMatchObject({ v6: true, l3: 14, l4: 54, hdrs: 86, payload: 2500, count: 3 });
    const out = new Uint8Array(2000);
    expect(tsoSegment(b.frame, plan, 2, out)).toBe(86 + 100);
  });

  test('malformed frames are refused (OFFLOAD_DROP), never a crash', () => {
    const soft = new SoftOffload();
    const v4 = tcpFrame(false, 3000);
    const v6 = tcpFrame(true, 3000);
    const gso = (bytes: Uint8Array, o: Partial<{ gsoType: number; gsoSize: number; csumStart: number; csumOffset: number; flags: number }> = {}) =>
      soft.prepare(frameOf(bytes, { flags: NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1000, csumStart: 34, csumOffset: 16, ...o }));
    const mutate = (src: Uint8Array, at: number, v: number) => {
      const c = src.slice();
      c[at] = v;
      return c;
    };
    expect(gso(v4.frame)).toBe(3); // the baseline is fine
    expect(gso(v4.frame, { gsoSize: 0 })).toBe(OFFLOAD_DROP);
    expect(gso(v4.frame, { gsoSize: 1 })).toBe(OFFLOAD_DROP); // 3000 segments: more than MAX_SEGMENTS
    expect(gso(v4.frame, { gsoType: 3 })).toBe(OFFLOAD_DROP); // UDP fragmentation offload: not offered
    expect(gso(v4.frame, { gsoType: GSO_TCPV6 })).toBe(OFFLOAD_DROP); // IPv4 frame announced as TCPv6
    expect(gso(v6.frame, { gsoType: GSO_TCPV4 })).toBe(OFFLOAD_DROP);
    expect(gso(mutate(v4.frame, 12, 0x88))).toBe(OFFLOAD_DROP); // not IP
    expect(gso(mutate(v4.frame, 14, 0x44))).toBe(OFFLOAD_DROP); // IHL 4
    expect(gso(mutate(v4.frame, 14, 0x65))).toBe(OFFLOAD_DROP); // version 6 in an IPv4 ethertype
    expect(gso(mutate(v4.frame, 23, 17))).toBe(OFFLOAD_DROP); // UDP, not TCP
    expect(gso(mutate(v4.frame, 14 + 20 + 12, 0x40))).toBe(OFFLOAD_DROP); // TCP data offset 4
    expect(() => gso(mutate(v4.frame, 14, 0x4f))).not.toThrow(); // IHL 15: TCP header read from inside the options
    expect(gso(mutate(v6.frame, 20, 17), { gsoType: GSO_TCPV6, csumStart: 0 })).toBe(OFFLOAD_DROP); // IPv6 next header UDP
    for (let cut = 0; cut < 14 + 20 + 32; cut += 5) expect(gso(v4.frame.subarray(0, cut))).toBe(OFFLOAD_DROP); // truncated headers
    // Checksum only: csum_start/offset beyond the frame.
    expect(soft.prepare(frameOf(v4.frame, { flags: NEEDS_CSUM, csumStart: 4000, csumOffset: 16 }))).toBe(OFFLOAD_DROP);
    expect(soft.prepare(frameOf(v4.frame, { flags: NEEDS_CSUM, csumStart: 34, csumOffset: 60000 }))).toBe(OFFLOAD_DROP);
    // Random garbage under every GSO type: no exception.
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >> 8) & 0xff;
    for (let k = 0; k < 300; k++) {
      const g = new Uint8Array(20 + (k % 200));
      for (let i = 0; i < g.length; i++) g[i] = rnd();
      if (k % 2) g.set([0x08, 0x00, 0x45], 12);
      for (const t of [0, 1, 4, 0x81]) expect(() => gso(g, { gsoType: t, gsoSize: 1 + rnd(), csumStart: rnd(), csumOffset: rnd() % 32 })).not.toThrow();
    }
  });
});
