/**
 * VIRTIO_NET_F_MTU negotiation with the driver-side client playing QEMU's part: NET_SET_MTU at or
 * below the switch MTU is applied to the port, above it is refused with one log line; frames longer than the
 * egress port's MTU are dropped and counted, never truncated; a guest without F_MTU, or one that renegotiates
 * without it after a reset, runs at the switch MTU.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import { VHOST_USER_PROTOCOL_F_NET_MTU, VIRTIO_NET_F_MTU, bit } from '../../src/vhost-user/features.js';
import { FakeNetDriver, ethFrame } from '../helpers/fake-net-driver.js';
import { NetBackendFixture, waitFor } from '../helpers/backend-fixture.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);

const MAC_A = 'fe:e1:ba:00:00:01';
const MAC_B = 'fe:e1:ba:00:00:02';
const BCAST = 'ff:ff:ff:ff:ff:ff';

describe.skipIf(!native.ok)('MTU negotiation', () => {
  let fx: NetBackendFixture;
  const drivers: FakeNetDriver[] = [];
  afterEach(() => {
    for (const d of drivers.splice(0)) d.close();
    fx.close();
  });

  function driver(i: number, o: Partial<ConstructorParameters<typeof FakeNetDriver>[0]> = {}): FakeNetDriver {
    const d = new FakeNetDriver({ socket: fx.socket(i), seed: 10 + i, maxFrame: 9018, ...o });
    drivers.push(d);
    return d;
  }

  test('F_MTU and NET_MTU are offered; NET_SET_MTU 9000 on a 9000 switch is applied and 9014-byte frames cross intact', async () => {
    fx = new NetBackendFixture(2, { mtu: 9000 });
    const a = driver(0, { mtu: 9000 });
    const b = driver(1, { mtu: 9000 });
    expect((await a.fe.getFeatures()) & bit(VIRTIO_NET_F_MTU)).not.toBe(0n);
    expect((await a.fe.getProtocolFeatures()) & bit(VHOST_USER_PROTOCOL_F_NET_MTU)).not.toBe(0n);
    await a.start();
    await b.start();
    expect(fx.devices[0].mtu).toBe(9000);
    const f = ethFrame(BCAST, MAC_A, 9014, 1);
    a.send(f);
    expect(await b.waitRx(1)).toEqual([f]); // spans five 2048-byte MRG_RXBUF buffers
    expect(fx.logs.filter((l) => l.msg === 'guest MTU set')).toHaveLength(2);
  });

  test('NET_SET_MTU above the switch MTU is refused, with one log line naming the socket, the requested and the allowed MTU', async () => {
    fx = new NetBackendFixture(2, { mtu: 1500 });
    const a = driver(0, { mtu: 9000 });
    await expect(a.start()).rejects.toThrow('9000Bytes MTU not supported by the backend');
    const lines = fx.problems('NET_SET_MTU');
    expect(lines).toHaveLength(1);
    const text = JSON.stringify(lines[0]);
    expect(text).toContain(fx.socket(0));
    expect(text).toContain('vm1.net0');
    expect(text).toContain('9000');
    expect(text).toContain('1500');
    expect(fx.servers[0].connected).toBe(true); // refused, not dropped: QEMU decides what to do
    expect(fx.devices[0].mtu).toBe(1500);
  });

  test("a frame longer than the egress port's MTU is dropped and counted, never truncated", async () => {
    fx = new NetBackendFixture(2, { mtu: 9000 });
    const a = driver(0, { mtu: 1500 }); // this guest asked for 1500 on a 9000 switch
    const b = driver(1, { mtu: 9000 });
    await a.start();
    await b.start();
    expect(fx.devices[0].mtu).toBe(1500);
    b.send(ethFrame(BCAST, MAC_B, 9014, 2)); // too long for a
    b.send(ethFrame(BCAST, MAC_B, 1515, 3)); // one byte over 1500 + 14
    const ok = ethFrame(BCAST, MAC_B, 1514, 4);
    b.send(ok);
    expect(await a.waitRx(1)).toEqual([ok]);
    expect(fx.sw.counters(fx.devices[0].id)!.dropMtu).toBe(2);
    expect(fx.devices[0].counters.rxFrames).toBe(1);
    // The other direction is not limited by a's MTU.
    const big = ethFrame(BCAST, MAC_A, 1514, 5);
    a.send(big);
    expect(await b.waitRx(1)).toEqual([big]);
  });

  test('a guest that does not accept F_MTU works at the switch MTU', async () => {
    fx = new NetBackendFixture(2, { mtu: 9000 });
    const a = driver(0);
    const b = driver(1);
    await a.start();
    await b.start();
    expect(a.acked & bit(VIRTIO_NET_F_MTU)).toBe(0n);
    expect(fx.devices[1].mtu).toBe(9000);
    const f = ethFrame(BCAST, MAC_A, 9014, 6);
    a.send(f);
    expect(await b.waitRx(1)).toEqual([f]);
  });

  test('renegotiation after a reset without F_MTU (OpenBSD vio) gives the port the switch MTU again', async () => {
    fx = new NetBackendFixture(2, { mtu: 9000 });
    const a = driver(0, { mtu: 9000 });
    const b = driver(1, { mtu: 1500 });
    await a.start();
    await b.start();
    expect(fx.devices[1].mtu).toBe(1500);
    a.send(ethFrame(BCAST, MAC_A, 9014, 7));
    await waitFor(() => fx.sw.counters(fx.devices[1].id)!.dropMtu === 1, 'the 9014-byte frame dropped for b');
    // Guest reset: QEMU stops the rings; the driver renegotiates without F_MTU, so no NET_SET_MTU is sent.
    const bases = await b.stopRings();
    b.fe.setFeatures(b.acked & ~bit(VIRTIO_NET_F_MTU) | bit(30));
    b.startVring(0, bases[0]);
    b.startVring(1, bases[1]);
    await b.fe.getQueueNum();
    expect(fx.devices[1].mtu).toBe(9000);
    const f = ethFrame(BCAST, MAC_A, 9014, 8);
    a.send(f);
    expect(await b.waitRx(1)).toEqual([f]);
  });
});
