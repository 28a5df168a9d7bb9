/**
 * vhost-user protocol server against the driver-side fake front-end over real sockets: replies and flags,
 * REPLY_ACK, the ring state machine, and every malformed-message case (each a named test): the bad connection
 * is dropped with one clear log line, the socket accepts the next front-end, other devices are unaffected.
 */
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import { FrontendRequest as R, encodeMemTable, encodeRequest, encodeVringState, u64Payload } from '../../src/vhost-user/message.js';
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
  VHOST_USER_PROTOCOL_F_MQ,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MRG_RXBUF,
  bit,
} from '../../src/vhost-user/features.js';
import { FakeFrontend, u64 } from '../helpers/fake-frontend.js';
import { GuestRam } from '../helpers/guest-ram.js';
import { NetBackendFixture, settle, waitFor } from '../helpers/backend-fixture.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);
if (!native.ok) console.warn(`skipping protocol tests: ${native.reason}`);

describe.skipIf(!native.ok)('vhost-user protocol server', () => {
  let fx: NetBackendFixture;
  let fe: FakeFrontend;
  let ram: GuestRam | null = null;

  beforeEach(() => {
    fx = new NetBackendFixture(2);
    fe = FakeFrontend.connect(fx.socket(0));
  });
  afterEach(() => {
    fe.close();
    ram?.close();
    ram = null;
    fx.close();
  });

  async function handshake(): Promise<void> {
    const f = await fe.getFeatures();
    expect(f & bit(VHOST_USER_F_PROTOCOL_FEATURES)).not.toBe(0n);
    const pf = await fe.getProtocolFeatures();
    await fe.setProtocolFeatures(pf);
  }

  test('GET_FEATURES offers VERSION_1, MRG_RXBUF and bit 30, and replies carry flags exactly 0x5', async () => {
    const p = await fe.call(R.GET_FEATURES); // call() checks the flags and the request id
    const f = u64(p);
    expect(f & bit(VIRTIO_F_VERSION_1)).not.toBe(0n);
    expect(f & bit(VIRTIO_NET_F_MRG_RXBUF)).not.toBe(0n);
    expect(f & bit(VHOST_USER_F_PROTOCOL_FEATURES)).not.toBe(0n);
  });

  test('protocol features include MQ, REPLY_ACK and CONFIGURE_MEM_SLOTS', async () => {
    const pf = await fe.getProtocolFeatures();
    for (const b of [VHOST_USER_PROTOCOL_F_MQ, VHOST_USER_PROTOCOL_F_REPLY_ACK, VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS]) {
      expect(pf & bit(b)).not.toBe(0n);
    }
    expect(await fe.getQueueNum()).toBe(1n);
    expect(await fe.getMaxMemSlots()).toBeGreaterThanOrEqual(8n);
  });

  test('REPLY_ACK: a request with NEED_REPLY gets exactly one u64 0 ack', async () => {
    await handshake();
    expect(await fe.ack(R.SET_OWNER)).toBe(0n);
    // A GET with NEED_REPLY gets only its body, not a second ack.
    fe.send(R.GET_FEATURES, new Uint8Array(0), { needReply: true });
    const r = await fe.nextReply();
    expect(r.request).toBe(R.GET_FEATURES);
    fe.send(R.GET_QUEUE_NUM);
    expect((await fe.nextReply()).request).toBe(R.GET_QUEUE_NUM);
  });

  test('an unknown request with NEED_REPLY gets a failure reply and the session goes on', async () => {
    await handshake();
    fe.send(99, new Uint8Array(0), { needReply: true });
    const r = await fe.nextReply();
    expect(r.request).toBe(99);
    expect(u64(r.payload)).toBe(1n);
    expect(await fe.getQueueNum()).toBe(1n);
    expect(fx.problems('UNKNOWN(99)')).toHaveLength(1);
  });

  test('an unknown request without NEED_REPLY is logged and ignored', async () => {
    fe.send(77);
    expect(await fe.getQueueNum()).toBe(1n);
    expect(fx.problems('UNKNOWN(77)')).toHaveLength(1);
  });

  test('a refused request repeated 200 times: every one NACKed and counted, a handful of log lines', async () => {
    await handshake();
    for (let i = 0; i < 200; i++) fe.send(99, new Uint8Array(0), { needReply: true });
    for (let i = 0; i < 200; i++) expect(u64((await fe.nextReply()).payload)).toBe(1n);
    expect(await fe.getQueueNum()).toBe(1n);
    expect(fx.servers[0].currentSession!.refusedRequests).toBe(200);
    const lines = fx.problems('UNKNOWN(99)').length;
    expect(lines).toBeGreaterThan(0);
    expect(lines).toBeLessThanOrEqual(5);
  });

  test('GET_VRING_BASE on a never-configured ring answers num 0 with the same index', async () => {
    expect(await fe.getVringBase(1)).toEqual({ index: 1, num: 0 });
  });

  test('SET_VRING_BASE is returned by GET_VRING_BASE', async () => {
    fe.setVringBase(0, 1234);
    expect(await fe.getVringBase(0)).toEqual({ index: 0, num: 1234 });
  });

  async function expectDropped(what: string): Promise<void> {
    await fe.waitClosed();
    expect(fx.servers[0].connected).toBe(false);
    const lines = fx.logs.filter((l) => l.msg === 'front-end connection dropped');
    expect(lines).toHaveLength(1);
    expect(JSON.stringify(lines[0])).toContain(what);
    // The socket accepts the next connection and it works.
    const next = FakeFrontend.connect(fx.socket(0));
    try {
      expect(u64(await next.call(R.GET_QUEUE_NUM))).toBe(1n);
    } finally {
      next.close();
    }
  }

  test('bad version: connection dropped with one log line, next connection works', async () => {
    const b = encodeRequest(R.GET_FEATURES, new Uint8Array(0));
    b[4] = 0x2; // version 2
    fe.sendRaw(b);
    await expectDropped('version');
  });

  test('oversize payload: connection dropped', async () => {
    const b = new Uint8Array(12);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, R.SET_FEATURES, true);
    dv.setUint32(4, 1, true);
    dv.setUint32(8, 0x100000, true);
    fe.sendRaw(b);
    await expectDropped('oversize');
  });

  test('wrong payload size: connection dropped', async () => {
    fe.send(R.SET_FEATURES, new Uint8Array(4));
    await expectDropped('expected 8');
  });

  test('wrong fd count: SET_VRING_CALL without NOFD and without an fd drops the connection', async () => {
    fe.send(R.SET_VRING_CALL, u64Payload(0));
    await expectDropped('fds attached, expected 1');
  });

  test('wrong fd count: SET_MEM_TABLE with fewer fds than regions, and no fd leaks', async () => {
    ram = new GuestRam();
    const before = countFds();
    fe.send(R.SET_MEM_TABLE, encodeMemTable(ram.regions), { fds: [ram.fd] });
    await expectDropped('1 fds attached, expected 2');
    await settle();
    expect(countFds()).toBeLessThanOrEqual(before);
  });

  test('overlapping regions: connection dropped', async () => {
    ram = new GuestRam();
    const r0 = ram.regions[0];
    const overlapping = [r0, { ...ram.regions[1], gpa: r0.gpa + 4096 }];
    fe.send(R.SET_MEM_TABLE, encodeMemTable(overlapping), { fds: ram.fds() });
    await expectDropped('overlap');
  });

  test('ring outside guest memory: SET_VRING_KICK drops the connection', async () => {
    ram = new GuestRam();
    await handshake();
    fe.setOwner();
    expect(await fe.setMemTable(ram.regions, ram.fds())).toBe(0n);
    fe.setVringNum(0, 256);
    fe.setVringBase(0, 0);
    fe.setVringAddr(0, { descUva: 0x1000, availUva: 0x2000, usedUva: 0x3000 }); // not a front-end address
    const kick = fe.native.eventfd(0);
    fe.setVringKick(0, kick);
    fe.native.close(kick);
    await expectDropped('ring');
  });

  test('vring index out of range drops the connection', async () => {
    fe.send(R.SET_VRING_NUM, encodeVringState({ index: 7, num: 256 }));
    await expectDropped('out of range');
  });

  test('a malformed message on one device leaves the other device untouched', async () => {
    const other = FakeFrontend.connect(fx.socket(1));
    try {
      await other.getFeatures();
      fe.send(R.SET_FEATURES, new Uint8Array(3));
      await fe.waitClosed();
      expect(fx.servers[1].connected).toBe(true);
      expect(u64(await other.call(R.GET_QUEUE_NUM))).toBe(1n);
    } finally {
      other.close();
    }
  });

  test('a second concurrent front-end is refused; the first keeps working', async () => {
    const second = FakeFrontend.connect(fx.socket(0));
    await second.waitClosed();
    expect(await fe.getQueueNum()).toBe(1n);
    expect(fx.problems('second front-end')).toHaveLength(1);
  });

  test('disconnect releases everything: memory unmapped, fds closed, next connection accepted', async () => {
    ram = new GuestRam();
    const before = countFds();
    await handshake();
    fe.setOwner();
    expect(await fe.setMemTable(ram.regions, ram.fds())).toBe(0n);
    const call = fe.native.eventfd(0);
    fe.setVringCall(0, call);
    fe.native.close(call);
    expect(await fe.getQueueNum()).toBe(1n);
    fe.close();
    await waitFor(() => !fx.servers[0].connected, 'disconnect');
    await settle();
    expect(countFds()).toBeLessThanOrEqual(before);
    fe = FakeFrontend.connect(fx.socket(0));
    expect(await fe.getQueueNum()).toBe(1n);
  });
});

function countFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}
