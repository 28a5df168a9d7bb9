/**
 * The switched virtio-net path with two driver-side clients over real sockets and memfd guest RAM:
 * frames cross the switch from one guest's TX buffers into the other guest's RX buffers, under the negotiation
 * sequences of QEMU 7.2 and DPDK 22.11, with and without EVENT_IDX and MRG_RXBUF.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import { FakeNetDriver, ethFrame, type FakeNetDriverOptions } from '../helpers/fake-net-driver.js';
import { NetBackendFixture, waitFor } from '../helpers/backend-fixture.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);

const MAC_A = 'fe:e1:ba:00:00:01';
const MAC_B = 'fe:e1:ba:00:00:02';
const BCAST = 'ff:ff:ff:ff:ff:ff';

const matrix: { name: string; a: Partial<FakeNetDriverOptions>; b: Partial<FakeNetDriverOptions> }[] = [
  { name: 'QEMU ↔ QEMU, EVENT_IDX', a: { sequence: 'qemu', eventIdx: true }, b: { sequence: 'qemu', eventIdx: true } },
  { name: 'QEMU ↔ DPDK, no EVENT_IDX', a: { sequence: 'qemu' }, b: { sequence: 'dpdk' } },
  { name: 'no MRG_RXBUF', a: { mrgRxbuf: false }, b: { mrgRxbuf: false } },
  { name: 'split header, buffers across a region end', a: { splitTxHeader: true, across: true }, b: { across: true, eventIdx: true } },
];

describe.skipIf(!native.ok)('switched virtio-net data path', () => {
  let fx: NetBackendFixture | null = null;
  const drivers: FakeNetDriver[] = [];
  afterEach(() => {
    for (const d of drivers.splice(0)) d.close();
    fx?.close();
    fx = null;
  });

  async function pair(a: Partial<FakeNetDriverOptions>, b: Partial<FakeNetDriverOptions>): Promise<[FakeNetDriver, FakeNetDriver]> {
    fx = new NetBackendFixture(2);
    const da = new FakeNetDriver({ socket: fx.socket(0), seed: 11, ...a });
    const db = new FakeNetDriver({ socket: fx.socket(1), seed: 22, ...b });
    drivers.push(da, db);
    await da.start();
    await db.start();
    return [da, db];
  }

  for (const m of matrix) {
    test(`broadcast, then learned unicast both ways, bytes intact [${m.name}]`, async () => {
      const [a, b] = await pair(m.a, m.b);
      const f1 = ethFrame(BCAST, MAC_A, 60, 1);
      expect(a.send(f1)).toBe(true);
      expect(await b.waitRx(1)).toEqual([f1]);
      const f2 = ethFrame(MAC_A, MAC_B, 1514, 2);
      expect(b.send(f2)).toBe(true);
      expect(await a.waitRx(1)).toEqual([f2]);
      // Both MACs are learned now: 500 unicast frames each way, sizes 60..1514.
      const sentA: Uint8Array[] = [];
      const sentB: Uint8Array[] = [];
      for (let i = 0; i < 500; i++) {
        const fa = ethFrame(MAC_B, MAC_A, 60 + ((i * 37) % 1455), i);
        const fb = ethFrame(MAC_A, MAC_B, 60 + ((i * 53) % 1455), i + 7);
        while (!a.send(fa)) await a.waitTxDone(5000).catch(() => undefined);
        while (!b.send(fb)) await b.waitTxDone(5000).catch(() => undefined);
        sentA.push(fa);
        sentB.push(fb);
        if (i % 64 === 63) {
          b.pollRx();
          a.pollRx();
        }
      }
      expect(await b.waitRx(500)).toEqual(sentA);
      expect(await a.waitRx(500)).toEqual(sentB);
      const [da, db] = fx!.devices;
      expect(da.counters.txFrames).toBe(501);
      expect(db.counters.rxFrames).toBe(501);
      expect(fx!.sw.counters(da.id)!.floodFrames).toBe(1);
      expect(fx!.sw.counters(db.id)!.floodFrames).toBe(0);
    });
  }

  test('MRG_RXBUF: a 1514-byte frame spans several 256-byte RX buffers with num_buffers set', async () => {
    const [a, b] = await pair({}, { rxBufSize: 256 });
    const f = ethFrame(BCAST, MAC_A, 1514, 3);
    a.send(f);
    expect(await b.waitRx(1)).toEqual([f]);
  });

  test('a receiver without RX buffers drops and counts; the sender is never blocked', async () => {
    const [a] = await pair({}, { noRxBuffers: true });
    for (let i = 0; i < 1000; i++) {
      while (!a.send(ethFrame(BCAST, MAC_A, 60, i))) await new Promise((r) => setTimeout(r, 1));
    }
    await a.waitTxDone();
    const [, db] = fx!.devices;
    await waitFor(() => db.counters.rxNoBuffer === 1000, 'drops counted');
    expect(fx!.sw.counters(db.id)!.dropEgress).toBe(1000);
  });

  test('without MRG_RXBUF an RX buffer too small for the frame gets the frame dropped and counted', async () => {
    const [a, b] = await pair({}, { mrgRxbuf: false, rxBufSize: 128 });
    a.send(ethFrame(BCAST, MAC_A, 1000, 1));
    a.send(ethFrame(BCAST, MAC_A, 100, 2));
    const got = await b.waitRx(1);
    expect(got[0].length).toBe(100);
    expect(fx!.devices[1].counters.rxBufferTooSmall).toBe(1);
  });

  test('frames published before SET_VRING_KICK are processed when the ring starts (no kick is lost)', async () => {
    fx = new NetBackendFixture(2);
    const b = new FakeNetDriver({ socket: fx.socket(1), seed: 3 });
    drivers.push(b);
    await b.start();
    const a = new FakeNetDriver({ socket: fx.socket(0), seed: 4, sequence: 'dpdk' });
    drivers.push(a);
    // Publish TX buffers before the ring exists, and never kick.
    const f = ethFrame(BCAST, MAC_A, 64, 9);
    a.send(f, { kick: false });
    await a.start();
    expect(await b.waitRx(1)).toEqual([f]);
  });

  test('guest reset: GET_VRING_BASE returns last_avail_idx, and restarting the rings at that base resumes traffic', async () => {
    const [a, b] = await pair({}, {});
    for (let i = 0; i < 10; i++) a.send(ethFrame(BCAST, MAC_A, 64, i));
    await b.waitRx(10);
    const bases = await a.stopRings();
    expect(bases[1]).toBe(10);
    a.startVring(0, bases[0]);
    a.startVring(1, bases[1]);
    await a.fe.getQueueNum();
    const f = ethFrame(BCAST, MAC_A, 64, 99);
    a.send(f);
    expect(await b.waitRx(1)).toEqual([f]);
  });
});
