// Validates the real-peer harness itself against DPDK's vhost PMD as a known-good backend:
//  1. testpmd net_virtio_user x2 (macswap, --tx-first) <-> testpmd net_vhost x2 (io): frames flow
//     and the stats parser reads non-zero pps on every port.
//  2. A TCG guest booting the test-built initramfs on a net_vhost port sees eth0 up, mtu 9000.
//  3. Two guests on the two net_vhost ports of an io-mode testpmd ping each other.
// Missing peers: skip with a reason, or fail when CI=true (see support/peers.ts).
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requirePeer } from './support/peers.js';
import {
  LCORES_BACKEND,
  LCORES_DRIVER,
  meanPps,
  startTestpmd,
  vhostSocketReady,
  vhostVdev,
  virtioUserVdev,
  type Testpmd,
} from './support/testpmd.js';
import { buildInitramfs, linkUpBody, pingBody, startGuest, type Guest } from './support/guest.js';

const skipTestpmd = requirePeer('testpmd');
const skipGuest = requirePeer('testpmd', 'qemu', 'kernel', 'busybox');

let dir = '';
const pmds: Testpmd[] = [];
const guests: Guest[] = [];
const tag = `vhostd-smoke-${process.pid}`;
// Small DPDK memory: starts in ~1-2 s instead of ~5 s (1 GiB --no-huge + 155k mbufs).
const SMALL = { memMiB: 256, mbufs: 16384 };

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'vhostd-smoke-'));
});
afterEach(async () => {
  await Promise.all(guests.splice(0).map((g) => g.kill()));
  await Promise.all(pmds.splice(0).map((p) => p.stop()));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function backend(name: string, socks: string[]): Testpmd {
  const p = startTestpmd({
    prefix: `${tag}-${name}`,
    ...LCORES_BACKEND,
    lcores: [...LCORES_BACKEND.lcores],
    vdevs: socks.map((s, i) => vhostVdev(i, s)),
    forwardMode: 'io',
    statsPeriodS: 1,
    ...SMALL,
  });
  pmds.push(p);
  return p;
}

describe.skipIf(skipTestpmd !== null)('testpmd virtio_user <-> DPDK net_vhost', () => {
  it('forwards frames and the stats parser reads pps on both ports', async () => {
    const a = path.join(dir, 'tp-a.sock');
    const b = path.join(dir, 'tp-b.sock');
    const ref = backend('ref', [a, b]);
    await ref.waitForOutput(vhostSocketReady(b), 20_000);
    const drv = startTestpmd({
      prefix: `${tag}-drv`,
      ...LCORES_DRIVER,
      lcores: [...LCORES_DRIVER.lcores],
      vdevs: [virtioUserVdev(0, a), virtioUserVdev(1, b)],
      forwardMode: 'macswap',
      txFirst: true,
      statsPeriodS: 1,
      ...SMALL,
    });
    pmds.push(drv);
    await drv.waitForSample((s) => s.ports.length === 2 && s.ports.every((p) => p.rxPps > 0), 30_000);
    const first = drv.samples().length;
    await drv.waitForSample((_s) => drv.samples().length >= first + 4, 20_000);
    const fin = await drv.stop();
    const finRef = await ref.stop();
    pmds.length = 0;

    const samples = drv.samples().slice(first - 1);
    const mpps = [0, 1].map((p) => meanPps(samples, p, 'rxPps', 0) / 1e6);
    console.log(`[smoke] virtio_user<->net_vhost io/macswap: rx Mpps port0=${mpps[0].toFixed(2)} port1=${mpps[1].toFixed(2)}`);
    expect(mpps[0]).toBeGreaterThan(0);
    expect(mpps[1]).toBeGreaterThan(0);
    expect(fin.exitCode).toBe(0);
    expect(fin.ports.map((p) => p.port)).toEqual([0, 1]);
    for (const p of [...fin.ports, ...finRef.ports]) expect(p.rxPackets).toBeGreaterThan(0);
  }, 90_000);
});

describe.skipIf(skipGuest !== null)('TCG guest on DPDK net_vhost', () => {
  it('boots the test initramfs and brings eth0 up with host_mtu', async () => {
    const s = path.join(dir, 'g1.sock');
    const initrd = await buildInitramfs(linkUpBody('eth0'));
    const ref = backend('g1', [s]);
    await ref.waitForOutput(vhostSocketReady(s), 20_000);
    const g = startGuest({ name: 'smoke-link', initrd, netdevs: [{ socket: s, hostMtu: 9000, mac: '52:54:00:12:34:01' }] });
    guests.push(g);
    await g.waitFor(/VHOSTD-BOOTED/, 60_000);
    const bootMs = Date.now() - g.startedAt;
    await g.waitFor(/VHOSTD-DONE rc=\d+/, 30_000);
    const ex = await g.exited;
    console.log(`[smoke] guest boot to /init+modules: ${bootMs} ms`);
    expect(g.output()).not.toMatch(/VHOSTD-INSMOD-FAILED/);
    const r = g.results().find((x) => 'link' in x);
    expect(r).toMatchObject({ dev: 'eth0', oper: 'up', mtu: '9000', mac: '52:54:00:12:34:01' });
    expect(ex.code).toBe(0);
  }, 90_000);

  it('two guests ping each other through io-mode forwarding', async () => {
    const a = path.join(dir, 'p-a.sock');
    const b = path.join(dir, 'p-b.sock');
    const [ia, ib] = await Promise.all([
      buildInitramfs(pingBody({ ip: '10.0.0.1/24', peer: '10.0.0.2', timeoutS: 60, lingerS: 30 })),
      buildInitramfs(pingBody({ ip: '10.0.0.2/24', peer: '10.0.0.1', timeoutS: 60, lingerS: 30 })),
    ]);
    const ref = backend('ping', [a, b]);
    await ref.waitForOutput(vhostSocketReady(b), 20_000);
    const ga = startGuest({ name: 'smoke-a', initrd: ia, netdevs: [{ socket: a }] });
    const gb = startGuest({ name: 'smoke-b', initrd: ib, netdevs: [{ socket: b }] });
    guests.push(ga, gb);
    const verdict = /VHOSTD-RESULT: ping=\S+.*/;
    const [ra, rb] = await Promise.all([ga.waitFor(verdict, 80_000), gb.waitFor(verdict, 80_000)]);
    console.log(`[smoke] ping verdicts after ${Date.now() - ga.startedAt} ms: A: ${ra[0]} | B: ${rb[0]}`);
    expect(ga.results().find((x) => 'ping' in x)?.ping).toBe('ok');
    expect(gb.results().find((x) => 'ping' in x)?.ping).toBe('ok');
  }, 90_000);
});
