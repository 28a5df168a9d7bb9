/**
 * Offloads through the real vhost-user path, with the driver-side client: A sends with every offload,
 * B takes every offload, C none, D checksums only (GUEST_CSUM without GUEST_TSO). A 60 KB TSO frame crosses to B
 * as one frame with the sender's header; C and D get valid MTU-sized segments (D's marked DATA_VALID); a NEEDS_CSUM
 * frame reaches B as sent and C with its checksum completed.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import {
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  bit,
} from '../../src/vhost-user/features.js';
import { FakeNetDriver, type FakeNetDriverOptions } from '../helpers/fake-net-driver.js';
import { NetBackendFixture } from '../helpers/backend-fixture.js';
import { refSum, tcpFrame, tcpVerifies, u16, u32 } from '../helpers/tcp-frame.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);

const ALL =
  bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) |
  bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6);
const NEEDS_CSUM = 1;
const DATA_VALID = 2;
const GSO_TCPV4 = 1;
const GSO_TCPV6 = 4;

describe.skipIf(!native.ok)('offloads between ports', () => {
  let fx: NetBackendFixture | null = null;
  const drivers: FakeNetDriver[] = [];
  afterEach(() => {
    for (const d of drivers.splice(0)) d.close();
    fx?.close();
    fx = null;
  });

  async function ports(): Promise<FakeNetDriver[]> {
    fx = new NetBackendFixture(4);
    const opts: Partial<FakeNetDriverOptions>[] = [
      { features: ALL, maxFrame: 65600, queueSize: 64 },
      { features: ALL },
      {},
      { features: bit(VIRTIO_NET_F_GUEST_CSUM) },
    ];
    const ds = opts.map((o, i) => new FakeNetDriver({ socket: fx!.socket(i), seed: 30 + i, ...o }));
    drivers.push(...ds);
    for (const d of ds) await d.start();
    return ds;
  }

  for (const v6 of [false, true]) {
    test(`a 60 KB TCP${v6 ? 'v6' : 'v4'} TSO frame: whole with its header to a GSO port, valid MTU-sized segments to the others`, async () => {
      const [a, b, c, d] = await ports();
      expect(fx!.devices[0].acked & ALL).toBe(ALL);
      expect(fx!.devices[2].acked & ALL).toBe(0n);
      const t = tcpFrame(v6, 60_000, { seq: 77, flags: 0x18 });
      const mss = 1514 - t.hdrs; // 1448 for IPv4, 1428 for IPv6 (with 12 bytes of TCP options)
      t.frame.fill(0xff, 0, 6); // broadcast: one send reaches all three
      const hdr = { flags: NEEDS_CSUM, gsoType: v6 ? GSO_TCPV6 : GSO_TCPV4, gsoSize: mss, hdrLen: t.hdrs, csumStart: t.csumStart, csumOffset: 16 };
      expect(a.send(t.frame, { hdr })).toBe(true);
      // B: one frame, exactly as sent, with the sender's header.
      const [fb] = await b.waitRx(1);
      expect(fb).toEqual(t.frame);
      expect(b.header(fb)).toEqual(hdr);
      // C and D: ceil(60000 / mss) = 42 or 43 segments of at most MTU + 14 bytes, reassembling to the payload.
      const n = Math.ceil(60_000 / mss);
      for (const [drv, flags] of [[c, 0], [d, DATA_VALID]] as const) {
        const segs = await drv.waitRx(n);
        const payload: number[] = [];
        segs.forEach((s, i) => {
          expect(s.length).toBeLessThanOrEqual(1514);
          expect(drv.header(s)).toEqual({ flags, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 });
          expect(tcpVerifies(s, v6, t.l3, t.l4)).toBe(true);
          if (!v6) expect(refSum(s.subarray(t.l3, t.l3 + 20))).toBe(0xffff);
          expect(u32(s, t.l4 + 4)).toBe(77 + i * mss);
          expect((s[t.l4 + 13] & 0x08) !== 0).toBe(i === n - 1); // PSH on the last only
          payload.push(...s.subarray(t.hdrs));
        });
        expect(Uint8Array.from(payload)).toEqual(t.frame.subarray(t.hdrs));
        expect(drv.received).toHaveLength(0);
      }
      expect(fx!.devices[2].counters.rxSoftOffload).toBe(1);
      expect(fx!.devices[1].counters.rxSoftOffload).toBe(0);
      expect(fx!.sw.counters(fx!.devices[2].id)!.dropMtu).toBe(0);
    });
  }

  test('a NEEDS_CSUM frame: as sent (partial checksum, header kept) to GUEST_CSUM ports, completed for the others', async () => {
    const [a, b, c] = await ports();
    const t = tcpFrame(false, 999);
    t.frame.fill(0xff, 0, 6);
    const hdr = { flags: NEEDS_CSUM, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: t.csumStart, csumOffset: 16 };
    a.send(t.frame, { hdr });
    const [fb] = await b.waitRx(1);
    expect(fb).toEqual(t.frame);
    expect(b.header(fb)).toEqual(hdr);
    const [fc] = await c.waitRx(1);
    expect(c.header(fc).flags).toBe(0);
    expect(fc.length).toBe(t.frame.length);
    expect(tcpVerifies(fc, false, t.l3, t.l4)).toBe(true);
    expect(tcpVerifies(t.frame, false, t.l3, t.l4)).toBe(false); // it really was partial
    expect(fc.subarray(0, t.l4 + 16)).toEqual(t.frame.subarray(0, t.l4 + 16));
    expect(fc.subarray(t.l4 + 18)).toEqual(t.frame.subarray(t.l4 + 18));
    expect(u16(fc, t.l4 + 16)).not.toBe(u16(t.frame, t.l4 + 16));
  });

  test('a TSO frame whose segments exceed the MTU is dropped (mtu), a malformed one is dropped and counted', async () => {
    const [a, , c] = await ports();
    const t = tcpFrame(false, 6000);
    t.frame.fill(0xff, 0, 6);
    a.send(t.frame, { hdr: { flags: NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1500, csumStart: t.csumStart, csumOffset: 16 } });
    const bad = t.frame.slice();
    bad[t.l3 + 9] = 17; // UDP under a TCPv4 GSO header
    a.send(bad, { hdr: { flags: NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1000, csumStart: t.csumStart, csumOffset: 16 } });
    const ok = tcpFrame(false, 100);
    ok.frame.fill(0xff, 0, 6);
    a.send(ok.frame);
    const [f] = await c.waitRx(1);
    expect(f).toEqual(ok.frame);
    expect(fx!.sw.counters(fx!.devices[2].id)!.dropMtu).toBe(1);
    expect(fx!.devices[2].counters.rxBadOffload).toBe(1);
  });
});
