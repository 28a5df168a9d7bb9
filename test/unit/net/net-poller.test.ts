/**
 * NetDevice notification behaviour and the switch poller, in process: NetDevices on one Switch with their queues
 * on in-memory rings, driven by driver-side rings (test/helpers/driver-queue.ts) that kick only when the device
 * asks (NO_NOTIFY / avail_event, VIRTIO 1.2 §2.7.10). Covers: RX never asks for kicks (EVENT_IDX included, MRG_RXBUF
 * rewinds included), one poller runs every busy port in one turn with one setImmediate, TX_BUDGET fairness, RX
 * published every 32 frames of a TX run, kicks re-armed after idle turns, and poll mode keeping them off.
 */
import { afterEach, describe, expect, test } from 'vitest';
import type { DeviceQueue } from '../../../src/device/device.js';
import { NetDevice } from '../../../src/net/net-device.js';
import { Switch } from '../../../src/net/switch.js';
import { NO_PORT, type Port } from '../../../src/net/port.js';
import { createLogger } from '../../../src/util/log.js';
import { VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_EVENT_IDX, bit } from '../../../src/virtio/features.js';
import { VIRTQ_DESC_F_WRITE } from '../../../src/virtqueue/defs.js';
import { SplitQueue } from '../../../src/virtqueue/split-queue.js';
import { standardMemory } from '../../helpers/driver-memory.js';
import { DriverSplitQueue } from '../../helpers/driver-queue.js';

const log = createLogger({ level: 'silent' });
const HDR = 12;
const BUF = 2048;
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A driver ring with one fixed buffer per descriptor, plus the device-side queue over the same memory. */
class Ring {
  readonly drv: DriverSplitQueue;
  readonly dq: DeviceQueue;
  readonly buf: number[] = [];
  readonly free: number[] = [];
  kicks = 0;
  constructor(index: number, size: number, eventIdx: boolean, readonly bufLen = BUF) {
    const mem = standardMemory(2, 0x200000);
    this.drv = new DriverSplitQueue({ mem, size, eventIdx, seed: index + 1 });
    const queue = new SplitQueue(mem, this.drv.queueOptions());
    this.dq = { index, queue, hasQueue: true, publish: () => void queue.publishUsed() };
    for (let d = 0; d < size; d++) {
      this.buf.push(this.drv.alloc.alloc(bufLen, 8));
      this.free.push(d);
    }
  }

  /** Post `heads` (RX: writable buffers) in one avail.idx store, and count the kick the driver would send. */
  postRx(heads: readonly number[]): void {
    for (const h of heads) this.drv.writeDesc(h, this.buf[h], this.bufLen, VIRTQ_DESC_F_WRITE, 0);
    this.drv.publish(heads);
    if (this.drv.needsKick()) this.kicks++;
  }

  /** Queue frames on a TX ring (one avail.idx store); returns whether the driver kicks. */
  send(frames: readonly Uint8Array[]): boolean {
    const heads: number[] = [];
    for (const f of frames) {
      const h = this.free.pop();
      if (h === undefined) throw new Error('TX ring full');
      this.drv.dm.write(this.buf[h], new Uint8Array(HDR));
      this.drv.dm.write(this.buf[h] + HDR, f);
      this.drv.writeDesc(h, this.buf[h], HDR + f.length, 0, 0);
      heads.push(h);
    }
    this.drv.publish(heads);
    const kick = this.drv.needsKick();
    if (kick) this.kicks++;
    return kick;
  }

  /** Completed chains back to the driver; returns their heads. */
  reap(): number[] {
    const heads = this.drv.collectUsed().map((e) => e.id);
    this.free.push(...heads);
    return heads;
  }
}

function frame(dst: number, src: number, len = 60): Uint8Array {
  const f = new Uint8Array(len);
  f.set([0xfe, 0xe1, 0xba, 0, 0, dst], 0);
  f.set([0xfe, 0xe1, 0xba, 0, 0, src], 6);
  f[12] = 0x08;
  return f;
}
const BCAST = (src: number, len = 60): Uint8Array => {
  const f = frame(0, src, len);
  f.fill(0xff, 0, 6);
  return f;
};

interface Guest {
  dev: NetDevice;
  rx: Ring;
  tx: Ring;
}

function guest(sw: Switch, n: number, o: { eventIdx?: boolean; size?: number; rxBufLen?: number } = {}): Guest {
  const dev = new NetDevice({ name: `vm${n}.net0`, sw, log, mac: `fe:e1:ba:00:00:${n.toString(16).padStart(2, '0')}` });
  dev.setFeatures(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF) | (o.eventIdx ? bit(VIRTIO_RING_F_EVENT_IDX) : 0n));
  const rx = new Ring(0, o.size ?? 256, o.eventIdx ?? false, o.rxBufLen ?? BUF);
  const tx = new Ring(1, o.size ?? 256, o.eventIdx ?? false);
  return { dev, rx, tx };
}

/** Let the guest kick like a driver: on a kick, the device's kick handler runs. */
function sendAndKick(g: Guest, frames: readonly Uint8Array[]): void {
  if (g.tx.send(frames)) g.dev.queueKick(1);
}

const devices: NetDevice[] = [];
afterEach(() => {
  for (const d of devices.splice(0)) {
    d.queueStop(1);
    d.detach();
  }
});

function start(g: Guest, rx = true): void {
  devices.push(g.dev);
  if (rx) g.dev.queueStart(g.rx.dq);
  g.dev.queueStart(g.tx.dq);
}

for (const eventIdx of [false, true]) {
  describe(`RX asks for no kicks [EVENT_IDX ${eventIdx ? 'on' : 'off'}]`, () => {
    test('1000 RX refills while frames arrive: no kick; TX kicks only to wake an idle device', async () => {
      const sw = new Switch('k');
      const a = guest(sw, 1, { eventIdx });
      const b = guest(sw, 2, { eventIdx, size: 64 });
      start(a);
      start(b);
      b.rx.postRx(b.rx.free.splice(0, 4));
      let refills = 0;
      for (let i = 0; i < 250; i++) {
        // Four frames use the four posted buffers (the device catches up with avail.idx), the driver reposts them.
        sendAndKick(a, [BCAST(1), BCAST(1), BCAST(1), BCAST(1)]);
        await turn();
        a.tx.reap();
        const used = b.rx.reap();
        refills += used.length;
        b.rx.postRx(b.rx.free.splice(0, used.length));
        if (i % 25 === 24) for (let k = 0; k < 20; k++) await turn(); // idle: TX re-arms, RX must not
      }
      expect(b.dev.counters.rxFrames).toBe(1000);
      expect(refills).toBe(1000);
      expect(b.rx.kicks).toBe(0);
      // TX: kicks were re-armed after each idle period, and the first send after it kicked (9 of 10 periods).
      expect(a.tx.kicks).toBeGreaterThanOrEqual(9);
      expect(a.tx.kicks).toBeLessThan(30);
    });

    test('MRG_RXBUF: frames that do not fit give their chains back (unpop), and refills still ask for no kick', async () => {
      const sw = new Switch('m');
      const a = guest(sw, 1, { eventIdx });
      const b = guest(sw, 2, { eventIdx, size: 16, rxBufLen: 256 });
      start(a);
      start(b);
      let lost = 0;
      for (let i = 0; i < 300; i++) {
        // Two 256-byte buffers posted, a 1000-byte frame needs four: rewound, then two more make it fit.
        b.rx.postRx(b.rx.free.splice(0, 2));
        sendAndKick(a, [BCAST(1, 1000)]);
        await turn();
        lost++;
        b.rx.postRx(b.rx.free.splice(0, 2));
        sendAndKick(a, [BCAST(1, 1000)]);
        await turn();
        a.tx.reap();
        const used = b.rx.reap();
        expect(used.length).toBe(4);
      }
      expect(b.dev.counters.rxNoBuffer).toBe(lost);
      expect(b.dev.counters.rxFrames).toBe(300);
      expect(b.rx.kicks).toBe(0);
      expect(b.rx.dq.queue.lastAvailIdx).toBe(b.rx.drv.availIdx);
    });
  });
}

describe('switch poller', () => {
  test('one poller turn runs every busy port, with one setImmediate for the switch', async () => {
    const sw = new Switch('p');
    const sink = guest(sw, 9);
    sink.rx.postRx(sink.rx.free.splice(0));
    start(sink);
    const gs = Array.from({ length: 8 }, (_, i) => guest(sw, i + 1));
    for (const g of gs) start(g, false);
    for (const g of gs) sendAndKick(g, [BCAST(1)]); // each now polls with kicks off
    await turn();
    const before = gs.map((g) => g.dev.counters.txFrames);
    for (const g of gs) expect(g.tx.send([BCAST(1), BCAST(1)])).toBe(false);
    const real = globalThis.setImmediate;
    let immediates = 0;
    globalThis.setImmediate = ((fn: (...a: unknown[]) => void, ...args: unknown[]) => {
      immediates++;
      return real(fn, ...args);
    }) as typeof setImmediate;
    const turns = sw.poller.turns;
    try {
      await new Promise((r) => real(r));
    } finally {
      globalThis.setImmediate = real;
    }
    expect(sw.poller.turns).toBe(turns + 1);
    expect(gs.map((g, i) => g.dev.counters.txFrames - before[i])).toEqual(gs.map(() => 2));
    expect(immediates).toBe(1); // the next turn, for all 8 ports
  });

  test('fairness: a port with a long queue gets TX_BUDGET (256) chains per turn, a short one all of its own', async () => {
    const sw = new Switch('f');
    const sink = guest(sw, 9);
    start(sink, false);
    const big = guest(sw, 1, { size: 1024 });
    const small = guest(sw, 2);
    start(big, false);
    start(small, false);
    sendAndKick(big, [BCAST(1)]);
    sendAndKick(small, [BCAST(2)]);
    await turn();
    big.tx.send(Array.from({ length: 600 }, () => BCAST(1)));
    small.tx.send(Array.from({ length: 10 }, () => BCAST(2)));
    const b0 = big.dev.counters.txFrames;
    const s0 = small.dev.counters.txFrames;
    await turn();
    expect(big.dev.counters.txFrames - b0).toBe(256);
    expect(small.dev.counters.txFrames - s0).toBe(10);
    await turn();
    await turn();
    expect(big.dev.counters.txFrames - b0).toBe(600);
  });

  test('a 256-frame TX run publishes RX at least every 32 frames', async () => {
    const sw = new Switch('r');
    let flushes = 0;
    let delivered = 0;
    const counting: Port = { id: NO_PORT, name: 'count', mtu: 1500, deliver: () => (delivered++, true), flush: () => void flushes++ };
    sw.addPort(counting);
    const a = guest(sw, 1);
    start(a, false);
    a.tx.send(Array.from({ length: 256 }, () => BCAST(1)));
    flushes = 0;
    await turn();
    expect(delivered).toBe(256);
    expect(flushes).toBeGreaterThanOrEqual(256 / 32);
    sw.removePort(counting);
  });

  for (const eventIdx of [false, true]) {
    test(`kicks are re-armed after idle turns, and stay off in poll mode [EVENT_IDX ${eventIdx ? 'on' : 'off'}]`, async () => {
      const ev = new Switch('ev');
      const pm = new Switch('pm', { poll: true });
      const a = guest(ev, 1, { eventIdx });
      const b = guest(pm, 2, { eventIdx });
      start(a, false);
      start(b, false);
      sendAndKick(a, [BCAST(1)]);
      sendAndKick(b, [BCAST(2)]);
      for (let k = 0; k < 40; k++) await turn();
      expect(a.dev.pollActive).toBe(false);
      expect(b.dev.pollActive).toBe(true);
      expect(a.tx.send([BCAST(1)])).toBe(true); // event-driven: the idle device asked for a kick
      expect(b.tx.send([BCAST(2)])).toBe(false); // poll mode: no kick, the poller finds it
      a.dev.queueKick(1);
      const t = b.dev.counters.txFrames;
      await turn();
      expect(b.dev.counters.txFrames).toBe(t + 1);
      // Poll mode off again (reload): the port re-arms after its idle turns.
      pm.reconfigure({ poll: false });
      for (let k = 0; k < 40; k++) await turn();
      expect(b.dev.pollActive).toBe(false);
      expect(b.tx.send([BCAST(2)])).toBe(true);
    });
  }
});
