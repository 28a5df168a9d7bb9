/**
 * Ring state machine and guest-error behaviour over real sockets and memfd guest RAM (vhost-user spec,
 * "Ring states"): enable/started independence with and without bit 30, NOFD kick (poll) and call (no
 * interrupts), a guest that breaks its queue or posts bad chains, memory-table changes while rings run, and
 * GET_VRING_BASE stopping a ring. Each test drives the negotiation itself where the stock sequences of
 * FakeNetDriver do not exercise the case.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_PROTOCOL_F_MQ,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
} from '../../src/vhost-user/features.js';
import { VIRTQ_DESC_F_NEXT } from '../../src/virtqueue/defs.js';
import type { Vring } from '../../src/vhost-user/vring.js';
import { FakeNetDriver, ethFrame, type FakeNetDriverOptions } from '../helpers/fake-net-driver.js';
import { NetBackendFixture, settle, waitFor } from '../helpers/backend-fixture.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);

const MAC_A = 'fe:e1:ba:00:00:01';
const MAC_B = 'fe:e1:ba:00:00:02';
const BCAST = 'ff:ff:ff:ff:ff:ff';
const BROKEN_MSG = 'guest broke the virtqueue; queue stopped until the device is reset';
const BAD_TX_MSG = 'bad TX descriptor chain dropped';

/** How a hand-driven front-end brings the device up. */
interface BringUp {
  /** Ack VHOST_USER_F_PROTOCOL_FEATURES (bit 30) in SET_FEATURES (and negotiate protocol features). Default true. */
  bit30?: boolean;
  /** When to send SET_VRING_ENABLE(0/1, 1): never, before SET_FEATURES (QEMU net), or after the kicks (DPDK). */
  enable?: 'none' | 'before-features' | 'after-kick';
  /** Send SET_VRING_KICK with NOFD for these vrings. */
  kickNoFd?: number[];
  /** Send SET_VRING_CALL with NOFD for these vrings. */
  callNoFd?: number[];
  /** Send SET_VRING_ERR with this eventfd for vring 1 (TX). */
  txErrFd?: number;
}

/** Drive the negotiation by hand on a driver that was constructed but not start()ed; posts RX buffers at the end. */
async function bringUp(d: FakeNetDriver, o: BringUp = {}): Promise<void> {
  const fe = d.fe;
  const bit30 = o.bit30 ?? true;
  const offered = await fe.getFeatures();
  if (bit30) {
    const pf = await fe.getProtocolFeatures();
    await fe.setProtocolFeatures(pf & (bit(VHOST_USER_PROTOCOL_F_MQ) | bit(VHOST_USER_PROTOCOL_F_REPLY_ACK)));
  }
  fe.setOwner();
  for (let q = 0; q < 2; q++) fe.setVringCall(q, d.callFds[q]);
  if (o.txErrFd !== undefined) fe.setVringErr(1, o.txErrFd);
  if (o.enable === 'before-features') {
    fe.setVringEnable(0, true);
    fe.setVringEnable(1, true);
  }
  const want = offered & (bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_NET_F_MRG_RXBUF));
  d.acked = want;
  fe.setFeatures(want | (bit30 ? bit(VHOST_USER_F_PROTOCOL_FEATURES) : 0n));
  expect(await fe.setMemTable(d.ram.regions, d.ram.fds())).toBe(0n);
  for (let q = 0; q < 2; q++) {
    const dq = q === 0 ? d.rx : d.tx;
    fe.setVringNum(q, dq.size);
    fe.setVringBase(q, 0);
    fe.setVringAddr(q, { descUva: dq.descUva, availUva: dq.availUva, usedUva: dq.usedUva });
    fe.setVringKick(q, o.kickNoFd?.includes(q) ? null : d.kickFds[q]);
    if (o.callNoFd?.includes(q)) fe.setVringCall(q, null);
  }
  if (o.enable === 'after-kick') {
    fe.setVringEnable(0, true);
    fe.setVringEnable(1, true);
  }
  await fe.getQueueNum(); // round trip: everything above has been handled
  d.postRxBuffers(d.opts.queueSize);
}

describe.skipIf(!native.ok)('vring state machine and guest errors', () => {
  let fx: NetBackendFixture | null = null;
  const drivers: FakeNetDriver[] = [];
  const fds: number[] = [];
  afterEach(() => {
    for (const fd of fds.splice(0)) loadNative().close(fd);
    for (const d of drivers.splice(0)) d.close();
    fx?.close();
    fx = null;
  });

  function driver(i: number, o: Partial<FakeNetDriverOptions> = {}): FakeNetDriver {
    const d = new FakeNetDriver({ socket: fx!.socket(i), seed: 10 + i, ...o });
    drivers.push(d);
    return d;
  }

  /** A peer on port `i` started with the stock QEMU sequence. */
  async function peer(i: number, o: Partial<FakeNetDriverOptions> = {}): Promise<FakeNetDriver> {
    const d = driver(i, o);
    await d.start();
    return d;
  }

  function vring(port: number, index: number): Vring {
    const s = fx!.servers[port].currentSession;
    if (!s) throw new Error(`port ${port} has no session`);
    return s.vrings[index];
  }

  function eventfd(d: FakeNetDriver): number {
    const fd = d.native.eventfd(0);
    fds.push(fd);
    return fd;
  }

  const dropped = (): number => fx!.logs.filter((l) => l.msg === 'front-end connection dropped').length;

  /** Round trip a frame a → b (broadcast) and b → a (unicast to A). */
  async function bothWays(a: FakeNetDriver, b: FakeNetDriver, tag: number): Promise<void> {
    const f1 = ethFrame(BCAST, MAC_A, 60 + tag, tag);
    expect(a.send(f1)).toBe(true);
    expect(await b.waitRx(1)).toEqual([f1]);
    const f2 = ethFrame(MAC_A, MAC_B, 100 + tag, tag + 1);
    expect(b.send(f2)).toBe(true);
    expect(await a.waitRx(1)).toEqual([f2]);
  }

  // ------------------------------------------------------------------ (a) (b) (c) enable state

  test('SET_FEATURES without bit 30 enables every ring: traffic flows without any SET_VRING_ENABLE', async () => {
    fx = new NetBackendFixture(2);
    const b = await peer(1);
    const a = driver(0);
    await bringUp(a, { bit30: false, enable: 'none' });
    expect(vring(0, 0).enabled).toBe(true);
    expect(vring(0, 1).enabled).toBe(true);
    expect(vring(0, 0).serving && vring(0, 1).serving).toBe(true);
    await bothWays(a, b, 1);
    expect(fx.devices[0].counters.txFrames).toBe(1);
    expect(fx.devices[0].counters.rxFrames).toBe(1);
  });

  test('with bit 30 rings stay disabled until SET_VRING_ENABLE(1); enabling processes the ring without a kick', async () => {
    fx = new NetBackendFixture(2);
    const b = await peer(1);
    const a = driver(0);
    await bringUp(a, { bit30: true, enable: 'none' });
    const [da] = fx.devices;
    expect(vring(0, 1).started).toBe(true);
    expect(vring(0, 1).enabled).toBe(false);
    expect(vring(0, 1).serving).toBe(false);

    // TX: a frame published and kicked into the started-but-disabled ring is not forwarded.
    const f = ethFrame(BCAST, MAC_A, 64, 1);
    expect(a.send(f)).toBe(true);
    await waitFor(() => vring(0, 1).kicks >= 1, 'the kick to reach the back-end');
    await settle(10);
    expect(b.pollRx()).toBe(0);
    expect(a.tx.usedIdx()).toBe(0);
    expect(da.counters.txFrames).toBe(0);

    // RX: the disabled RX ring supplies no buffers: b's broadcast is dropped for a.
    const g = ethFrame(BCAST, MAC_B, 70, 2);
    b.send(g);
    await waitFor(() => da.counters.rxNoBuffer === 1, 'a drop on the disabled RX ring');
    expect(a.pollRx()).toBe(0);

    // ENABLE(1) on TX alone: the queued frame goes out, and we never kick again.
    const kicksBefore = vring(0, 1).kicks;
    a.fe.setVringEnable(1, true);
    expect(await b.waitRx(1)).toEqual([f]);
    expect(vring(0, 1).kicks).toBe(kicksBefore);
    expect(da.counters.txFrames).toBe(1);
    expect(a.tx.usedIdx()).toBe(1);

    // ENABLE(1) on RX: the next broadcast from b arrives.
    a.fe.setVringEnable(0, true);
    await a.fe.getQueueNum();
    const h = ethFrame(BCAST, MAC_B, 80, 3);
    b.send(h);
    expect(await a.waitRx(1)).toEqual([h]);
  });

  test('SET_VRING_ENABLE before SET_FEATURES (QEMU net order) is remembered through SET_FEATURES and the kick', async () => {
    fx = new NetBackendFixture(2);
    const b = await peer(1);
    const a = driver(0);
    // Enable arrives while the rings are stopped and before any SET_FEATURES; no ENABLE after that.
    await bringUp(a, { bit30: true, enable: 'before-features' });
    expect(fx.problems()).toEqual([]);
    expect(vring(0, 0).enabled && vring(0, 1).enabled).toBe(true);
    expect(vring(0, 0).serving && vring(0, 1).serving).toBe(true);
    await bothWays(a, b, 2);
    // A repeated SET_FEATURES (QEMU sends one at every start) does not disable the rings either.
    a.fe.setFeatures(a.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES));
    await a.fe.getQueueNum();
    expect(vring(0, 1).enabled).toBe(true);
    await bothWays(a, b, 3);
  });

  // ------------------------------------------------------------------ (d) (e) NOFD

  test('SET_VRING_KICK with NOFD: the back-end polls the TX ring, frames flow without any kick', async () => {
    fx = new NetBackendFixture(2);
    const b = await peer(1);
    const a = driver(0);
    await bringUp(a, { enable: 'after-kick', kickNoFd: [1] });
    expect(vring(0, 1).kickNoFd).toBe(true);
    expect(vring(0, 1).kickFd).toBe(-1);
    // Frames published at different times after the ring started: only polling can pick them up.
    for (let i = 0; i < 5; i++) {
      const f = ethFrame(BCAST, MAC_A, 64 + i, i);
      expect(a.send(f, { kick: false })).toBe(true);
      expect(await b.waitRx(1)).toEqual([f]);
      await settle(2);
    }
    expect(vring(0, 1).kicks).toBe(0);
    expect(fx.devices[0].counters.txFrames).toBe(5);
    await waitFor(() => a.tx.usedIdx() === 5, 'TX completions');
  });

  test('SET_VRING_CALL with NOFD: no interrupts, used entries are still published', async () => {
    fx = new NetBackendFixture(2);
    const b = await peer(1);
    const a = driver(0);
    // The call eventfds are sent first (QEMU's masked notifier), then replaced by NOFD after the kick.
    await bringUp(a, { enable: 'after-kick', callNoFd: [0, 1] });
    expect(vring(0, 0).callFd).toBe(-1);
    expect(vring(0, 1).callFd).toBe(-1);
    for (const fd of a.callFds) a.native.eventfdRead(fd); // drain anything from before NOFD (nothing expected)

    const frames = [ethFrame(BCAST, MAC_B, 60, 1), ethFrame(BCAST, MAC_B, 1514, 2), ethFrame(BCAST, MAC_B, 300, 3)];
    for (const f of frames) b.send(f);
    expect(await a.waitRx(3)).toEqual(frames); // waitRx polls the used ring
    const out = ethFrame(BCAST, MAC_A, 90, 4);
    a.send(out);
    expect(await b.waitRx(1)).toEqual([out]);
    await waitFor(() => a.tx.usedIdx() === 1, 'TX used entry');

    expect(vring(0, 0).calls).toBe(0);
    expect(vring(0, 1).calls).toBe(0);
    // The eventfds the back-end held before NOFD were never written.
    expect(a.native.eventfdRead(a.callFds[0])).toBe(-1);
    expect(a.native.eventfdRead(a.callFds[1])).toBe(-1);
  });

  // ------------------------------------------------------------------ (f) (g) guest errors

  test('avail idx jumping by more than the queue size breaks the queue: err eventfd, one warn line, others keep working', async () => {
    fx = new NetBackendFixture(3);
    const b = await peer(1);
    const c = await peer(2);
    const a = driver(0);
    const errFd = eventfd(a);
    await bringUp(a, { enable: 'after-kick', txErrFd: errFd });
    await bothWays(a, b, 1);
    c.pollRx();
    c.received.length = 0;

    a.tx.setAvailIdx(a.tx.availIdx + a.tx.size + 44); // 300 new heads in a ring of 256
    a.native.eventfdWrite(a.kickFds[1], 1);
    let errCount = 0;
    await waitFor(() => (errCount = Math.max(errCount, a.native.eventfdRead(errFd))) > 0, 'the err eventfd');
    expect(errCount).toBe(1);
    expect(vring(0, 1).queue.broken).toBe(true);
    expect(vring(0, 1).serving).toBe(false);

    // More kicks on the broken queue: nothing is processed, nothing more is logged or signalled.
    for (let i = 0; i < 5; i++) a.native.eventfdWrite(a.kickFds[1], 1);
    await settle(10);
    const broken = fx.logs.filter((l) => l.msg === BROKEN_MSG);
    expect(broken).toHaveLength(1);
    expect(broken[0].level).toBe(40);
    expect(broken[0].dev).toBe('vm1.net0');
    expect(String(broken[0].reason)).toContain('avail idx jumped');
    expect(a.native.eventfdRead(errFd)).toBe(-1);

    // The connection stays, the other devices keep working, and so does a's RX ring.
    expect(fx.servers[0].connected).toBe(true);
    expect(dropped()).toBe(0);
    expect(await a.fe.getQueueNum()).toBe(1n);
    const g = ethFrame(BCAST, MAC_B, 128, 7);
    b.send(g);
    expect(await c.waitRx(1)).toEqual([g]);
    expect(await a.waitRx(1)).toEqual([g]);
  });

  test('bad TX chains are completed with len 0, counted, logged a few times at most; the queue keeps working', async () => {
    fx = new NetBackendFixture(2);
    const b = await peer(1);
    const a = await peer(0);
    const [da] = fx.devices;
    const buf = a.rx.alloc.alloc(256, 8);
    const heads: number[] = [];
    // 12 bad chains in heads 0..11: zero length, next >= size, shorter than the 12-byte header.
    for (let i = 0; i < 12; i++) {
      const kind = i % 3;
      if (kind === 0) a.tx.writeDesc(i, buf, 0, 0, 0);
      else if (kind === 1) a.tx.writeDesc(i, buf, 64, VIRTQ_DESC_F_NEXT, a.tx.size + 44);
      else a.tx.writeDesc(i, buf, 4, 0, 0);
      heads.push(i);
    }
    a.tx.publish(heads);
    a.native.eventfdWrite(a.kickFds[1], 1);
    await waitFor(() => a.tx.usedIdx() === 12, 'the bad chains to be completed');
    for (let i = 0; i < 12; i++) expect(a.tx.usedElem(i)).toEqual({ id: i, len: 0 });
    expect(da.counters.txBadChain).toBe(12);
    expect(da.counters.txFrames).toBe(0);
    expect(b.pollRx()).toBe(0);
    const warned = fx.logs.filter((l) => l.msg === BAD_TX_MSG);
    expect(warned.length).toBeGreaterThanOrEqual(1);
    expect(warned.length).toBeLessThanOrEqual(5);
    const reasons = warned.map((l) => String(l.reason)).join('\n');
    expect(reasons).toContain('zero-length');
    expect(reasons).toContain('next index');
    expect(vring(0, 1).queue.broken).toBe(false);
    expect(fx.logs.filter((l) => l.msg === BROKEN_MSG)).toHaveLength(0);

    // The next good frame goes through.
    const f = ethFrame(BCAST, MAC_A, 200, 5);
    expect(a.send(f)).toBe(true);
    expect(await b.waitRx(1)).toEqual([f]);
    expect(da.counters.txFrames).toBe(1);
    expect(da.counters.txBadChain).toBe(12);
  });

  // ------------------------------------------------------------------ (h) (i) memory changes while running

  test('ADD_MEM_REG / REM_MEM_REG while rings run: duplicates and absent regions are acked, traffic flows', async () => {
    fx = new NetBackendFixture(2);
    const b = await peer(1);
    const a = await peer(0); // QEMU sequence with CONFIGURE_MEM_SLOTS: ADD_MEM_REG per region, REPLY_ACK on
    expect(a.fe.replyAck).toBe(true);
    await bothWays(a, b, 1);
    const [r0, r1] = a.ram.regions;
    // QEMU 7.2 sends the same ADD once per queue pair: acked and ignored.
    expect(await a.fe.addMemReg(r0, a.ram.fd)).toBe(0n);
    expect(await a.fe.addMemReg(r1, a.ram.fd)).toBe(0n);
    await bothWays(a, b, 2);
    // Region 1 (no rings, no buffers in it) goes away twice, then comes back.
    expect(await a.fe.remMemReg({ ...r1, mmapOffset: 0 })).toBe(0n);
    expect(await a.fe.remMemReg({ ...r1, mmapOffset: 0 })).toBe(0n);
    await bothWays(a, b, 3);
    expect(await a.fe.addMemReg(r1, a.ram.fd)).toBe(0n);
    expect(await a.fe.addMemReg(r1, a.ram.fd)).toBe(0n);
    await bothWays(a, b, 4);
    expect(fx.servers[0].connected).toBe(true);
    expect(dropped()).toBe(0);
    expect(fx.problems()).toEqual([]);
  });

  // The region holding the rings is removed and re-added while the rings run (docs/protocol.md §3,
  // CONFIGURE_MEM_SLOTS): the rings are parked while their memory is gone, not fatal.
  test('REM_MEM_REG of the region holding running rings, then ADD_MEM_REG again: acked, traffic flows after re-adding', async () => {
    fx = new NetBackendFixture(2);
    const b = await peer(1);
    const a = await peer(0);
    await bothWays(a, b, 1);
    const [r0] = a.ram.regions;
    expect(await a.fe.remMemReg({ ...r0, mmapOffset: 0 })).toBe(0n);
    expect(await a.fe.remMemReg({ ...r0, mmapOffset: 0 })).toBe(0n);
    expect(await a.fe.addMemReg(r0, a.ram.fd)).toBe(0n);
    await bothWays(a, b, 2);
    expect(dropped()).toBe(0);
  });

  test('SET_MEM_TABLE replaced while rings run, with ENABLE 0/1 around it (DPDK hotplug) and without (QEMU)', async () => {
    fx = new NetBackendFixture(2);
    const b = await peer(1);
    const a = await peer(0, { sequence: 'dpdk' });
    const fe = a.fe;
    await bothWays(a, b, 1);

    // DPDK memory hotplug: disable both rings, same table again, enable. A frame published (unkicked) while
    // the rings are disabled goes out once they are enabled again.
    fe.setVringEnable(0, false);
    fe.setVringEnable(1, false);
    await fe.getQueueNum();
    const held = ethFrame(BCAST, MAC_A, 333, 9);
    a.send(held, { kick: false });
    expect(await fe.setMemTable(a.ram.regions, a.ram.fds())).toBe(0n);
    await settle(5);
    expect(b.pollRx()).toBe(0);
    fe.setVringEnable(0, true);
    fe.setVringEnable(1, true);
    expect(await b.waitRx(1)).toEqual([held]);
    await bothWays(a, b, 2);

    // QEMU: a table commit with the rings running, no ENABLE around it.
    for (let i = 0; i < 3; i++) {
      expect(await fe.setMemTable(a.ram.regions, a.ram.fds())).toBe(0n);
      await bothWays(a, b, 3 + i);
    }
    expect(fx.devices[0].counters.txFrames).toBe(6);
    expect(dropped()).toBe(0);
    expect(fx.problems()).toEqual([]);
  });

  // ------------------------------------------------------------------ (j) GET_VRING_BASE

  test('GET_VRING_BASE stops the ring: frames published after it wait until the ring is restarted', async () => {
    fx = new NetBackendFixture(2);
    const b = await peer(1);
    const a = await peer(0);
    for (let i = 0; i < 3; i++) a.send(ethFrame(BCAST, MAC_A, 64, i));
    await b.waitRx(3);
    const base = (await a.fe.getVringBase(1)).num;
    expect(base).toBe(3);
    expect(vring(0, 1).started).toBe(false);
    expect(vring(0, 1).serving).toBe(false);

    const f = ethFrame(BCAST, MAC_A, 99, 42);
    expect(a.send(f)).toBe(true);
    a.native.eventfdWrite(a.kickFds[1], 1); // even an explicit kick must not make it run
    await settle(20);
    expect(b.pollRx()).toBe(0);
    expect(a.tx.usedIdx()).toBe(3);
    expect(fx.devices[0].counters.txFrames).toBe(3);
    // Still stopped: GET_VRING_BASE again reports the same position.
    expect((await a.fe.getVringBase(1)).num).toBe(3);

    // Restart at the returned base (fresh call fd, as QEMU sends one at every start): the frame goes out.
    a.fe.setVringCall(1, a.callFds[1]);
    a.startVring(1, base);
    expect(await b.waitRx(1)).toEqual([f]);
    await waitFor(() => a.tx.usedIdx() === 4, 'TX completion after restart');
    expect(fx.devices[0].counters.txFrames).toBe(4);
  });
});
