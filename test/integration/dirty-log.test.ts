/**
 * Live-migration dirty logging (vhost-user spec, "Migration"): with LOG_SHMFD, SET_LOG_BASE maps the front-end's
 * bitmap; while VHOST_F_LOG_ALL is acked, every guest page vhostd writes (RX data, used ring when the vring has
 * the LOG flag) gets its bit set; with LOG_ALL off, nothing is marked.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import { FrontendRequest as R, encodeVringAddr } from '../../src/vhost-user/message.js';
import { VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, VHOST_USER_PROTOCOL_F_LOG_SHMFD, bit } from '../../src/vhost-user/features.js';
import { FakeNetDriver, ethFrame } from '../helpers/fake-net-driver.js';
import { NetBackendFixture } from '../helpers/backend-fixture.js';
import { u64 } from '../helpers/fake-frontend.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);

const LOG_SIZE = 8192; // covers 64K pages = 256 MiB of guest-physical space
const page = (gpa: number) => Math.floor(gpa / 4096);

describe.skipIf(!native.ok)('dirty-page logging for live migration', () => {
  let fx: NetBackendFixture;
  const drivers: FakeNetDriver[] = [];
  afterEach(() => {
    for (const d of drivers.splice(0)) d.close();
    fx.close();
  });

  test('SET_LOG_BASE + LOG_ALL: RX data pages and the used ring are marked; with LOG_ALL off nothing is', async () => {
    fx = new NetBackendFixture(2);
    const a = new FakeNetDriver({ socket: fx.socket(0), seed: 1 });
    const b = new FakeNetDriver({ socket: fx.socket(1), seed: 2 });
    drivers.push(a, b);
    await a.start();
    await b.start();
    expect(await b.fe.getFeatures() & bit(VHOST_F_LOG_ALL)).not.toBe(0n);
    expect(await b.fe.getProtocolFeatures() & bit(VHOST_USER_PROTOCOL_F_LOG_SHMFD)).not.toBe(0n);

    // QEMU's migration start: SET_LOG_BASE (reply), SET_FEATURES + LOG_ALL, SET_VRING_ADDR with the LOG flag.
    const logFd = b.native.memfdCreate('dirty-log', LOG_SIZE);
    const bitmapBuf = b.native.mmapShared(logFd, LOG_SIZE, 0, true);
    const bitmap = new Uint8Array(bitmapBuf);
    const p = new Uint8Array(16);
    new DataView(p.buffer).setBigUint64(0, BigInt(LOG_SIZE), true);
    expect(u64(await b.fe.call(R.SET_LOG_BASE, p, [logFd]))).toBe(0n);
    b.native.close(logFd);
    expect(await b.fe.ack(R.SET_FEATURES, u64Bytes(b.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VHOST_F_LOG_ALL)))).toBe(0n);
    for (const [q, dq] of [[0, b.rx], [1, b.tx]] as const) {
      const addr = encodeVringAddr({ index: q, flags: 1, descUva: dq.descUva, usedUva: dq.usedUva, availUva: dq.availUva, logGuestAddr: dq.usedGpa });
      expect(await b.fe.ack(R.SET_VRING_ADDR, addr)).toBe(0n);
    }
    bitmap.fill(0);

    const f = ethFrame('ff:ff:ff:ff:ff:ff', 'fe:e1:ba:00:00:01', 1000, 5);
    a.send(f);
    expect(await b.waitRx(1)).toEqual([f]);
    const used = b.rx.usedElem(0);
    const buf = b.rxBuf[used.id];
    const isSet = (pg: number) => (bitmap[pg >> 3] & (1 << (pg & 7))) !== 0;
    // The RX buffer's pages (12-byte header + 1000 bytes) and the RX used ring are marked.
    for (let pg = page(buf); pg <= page(buf + 12 + 1000 - 1); pg++) expect(isSet(pg), `RX page ${pg}`).toBe(true);
    expect(isSet(page(b.rx.usedGpa))).toBe(true);
    // Pages nothing wrote stay clean: the other RX buffers that are on pages of their own.
    const untouched = b.rxBuf.filter((g) => page(g) !== page(buf) && page(g + 2047) !== page(buf) && page(g) !== page(b.rx.usedGpa));
    expect(untouched.length).toBeGreaterThan(10);
    for (const g of untouched.slice(-10)) expect(isSet(page(g)), `untouched page of buffer at ${g}`).toBe(false);

    // Migration over: LOG_ALL off, nothing is marked any more.
    expect(await b.fe.ack(R.SET_FEATURES, u64Bytes(b.acked | bit(VHOST_USER_F_PROTOCOL_FEATURES)))).toBe(0n);
    bitmap.fill(0);
    a.send(ethFrame('ff:ff:ff:ff:ff:ff', 'fe:e1:ba:00:00:01', 200, 6));
    await b.waitRx(1);
    expect(bitmap.every((x) => x === 0)).toBe(true);
    b.native.munmap(bitmapBuf);
  });
});

function u64Bytes(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}
