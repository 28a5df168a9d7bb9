/**
 * The host port (vport, docs/vport.md) against the real Linux stack, without QEMU: a TapPort on a switch whose tap
 * lives in a network namespace made by the test (10.0.78.1/24), and a FakeNetDriver guest (10.0.78.2) on the
 * same switch. The guest's ARP request gets the host stack's ARP reply; a ping from the namespace reaches the guest,
 * which answers it by hand, and ping sees the reply. Needs root (tap + netns): skipped with a reason otherwise,
 * failed when CI=true.
 */
import { execFile, execFileSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { createLogger } from '../../src/util/log.js';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import { Switch } from '../../src/net/switch.js';
import { openVport, type TapPort } from '../../src/net/tap-port.js';
import { VhostError } from '../../src/util/errors.js';
import v8 from 'node:v8';
import { copyBatch } from '../../src/memory/copy-batch.js';
import { FakeNetDriver, ethFrame } from '../helpers/fake-net-driver.js';
import { NetCopyRig } from '../helpers/net-copy-rig.js';
import { NetBackendFixture } from '../helpers/backend-fixture.js';
import { Netns, requireNetns } from '../helpers/netns.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);
const skip = native.ok ? requireNetns() : native.reason;

const run = promisify(execFile);
const silentLog = () => createLogger({ level: 'error', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

const GUEST_MAC = 'fe:e1:ba:00:00:01'; // NetBackendFixture's first device
const GUEST_IP = '10.0.78.2';
const HOST_IP = '10.0.78.1';

const mac = (s: string) => s.split(':').map((h) => parseInt(h, 16));
const ip4 = (s: string) => s.split('.').map(Number);
const fmtIp = (b: Uint8Array, at: number) => Array.from(b.subarray(at, at + 4)).join('.');
const etherType = (f: Uint8Array) => (f[12] << 8) | f[13];

/** Broadcast ARP request "who has tpa? tell spa" from sha, padded to the 60-byte minimum. */
function arpRequest(sha: string, spa: string, tpa: string): Uint8Array {
  const f = new Uint8Array(60);
  f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0);
  f.set(mac(sha), 6);
  f.set([0x08, 0x06], 12);
  f.set([0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01], 14); // Ethernet/IPv4, op 1 = request
  f.set(mac(sha), 22);
  f.set(ip4(spa), 28);
  f.set(ip4(tpa), 38); // tha (32..37) stays zero
  return f;
}

/** Internet checksum (RFC 1071) of b[from, to). */
function inetCsum(b: Uint8Array, from: number, to: number): number {
  let s = 0;
  for (let i = from; i < to; i += 2) s += (b[i] << 8) | (i + 1 < to ? b[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** The echo reply a host would send for the IPv4 ICMP echo request `req` (no IP options). */
function echoReply(req: Uint8Array): Uint8Array {
  const f = req.slice();
  f.set(req.subarray(6, 12), 0);
  f.set(req.subarray(0, 6), 6);
  const ihl = (req[14] & 0x0f) * 4;
  const totLen = (req[16] << 8) | req[17];
  f.set(req.subarray(30, 34), 26); // src ← dst
  f.set(req.subarray(26, 30), 30); // dst ← src
  f[24] = f[25] = 0;
  const ipc = inetCsum(f, 14, 14 + ihl);
  f[24] = ipc >> 8;
  f[25] = ipc & 0xff;
  const icmp = 14 + ihl;
  f[icmp] = 0; // echo reply
  f[icmp + 2] = f[icmp + 3] = 0;
  const c = inetCsum(f, icmp, 14 + totLen);
  f[icmp + 2] = c >> 8;
  f[icmp + 3] = c & 0xff;
  return f;
}

/** Receive until a frame matches (the host also sends IPv6 ND/MLD noise when its link comes up). */
async function waitFrame(d: FakeNetDriver, pred: (f: Uint8Array) => boolean, what: string, timeoutMs = 10_000): Promise<Uint8Array> {
  const end = Date.now() + timeoutMs;
  const seen: string[] = [];
  for (;;) {
    const left = end - Date.now();
    if (left <= 0) throw new Error(`no ${what}; saw ${seen.length} other frames: ${seen.slice(-5).join(' | ')}`);
    const [f] = await d.waitRx(1, left).catch(() => [undefined]);
    if (f === undefined) continue;
    if (pred(f)) return f;
    seen.push(Buffer.from(f.subarray(0, 24)).toString('hex'));
  }
}

describe.skipIf(skip !== null)('vport: TapPort against the host stack in a network namespace', () => {
  const tag = `${process.pid}`;
  const ifname = `vtp${tag}`;
  let ns: Netns | null = null;
  let fx: NetBackendFixture | null = null;
  let vport: TapPort | null = null;
  let guest: FakeNetDriver | null = null;

  beforeEach(() => {
    ns = new Netns(`vhostd-tp-${tag}`);
  });
  afterEach(() => {
    guest?.close();
    guest = null;
    vport?.close();
    vport = null;
    fx?.close();
    fx = null;
    ns?.remove();
    ns = null;
  });

  test('guest ARP request → host ARP reply; host ping → guest → reply back to the host', async () => {
    fx = new NetBackendFixture(1);
    vport = openVport(fx.sw, ifname, fx.log);
    expect(vport.name).toBe(ifname);
    expect(vport.mtu).toBe(1500);
    // The tap was made with the switch MTU and brought up in vhostd's namespace.
    expect(execFileSync('ip', ['link', 'show', 'dev', ifname], { encoding: 'utf8' })).toMatch(/mtu 1500\b.*\bUP\b|\bUP\b.*mtu 1500\b/);
    // Moving it into the namespace keeps vhostd's fd working (the device moves with it).
    ns!.adopt(ifname, `${HOST_IP}/24`);
    const hostMac = ns!.ip('-br', 'link', 'show', 'dev', ifname).trim().split(/\s+/)[2];

    guest = new FakeNetDriver({ socket: fx.socket(0), seed: 5 });
    await guest.start();

    // 1. ARP: the guest asks for the host's address; the host stack answers from the tap.
    expect(guest.send(arpRequest(GUEST_MAC, GUEST_IP, HOST_IP))).toBe(true);
    const arp = await waitFrame(guest, (f) => etherType(f) === 0x0806 && f[21] === 2, 'ARP reply from the host');
    expect(Array.from(arp.subarray(0, 6))).toEqual(mac(GUEST_MAC));
    expect(Array.from(arp.subarray(22, 28))).toEqual(mac(hostMac)); // sha: the tap's MAC
    expect(fmtIp(arp, 28)).toBe(HOST_IP);
    expect(fmtIp(arp, 38)).toBe(GUEST_IP);

    // 2. The namespace pings the guest (its neighbour entry came from the ARP request); the guest replies by hand.
    const [cmd, args] = ns!.pingCmd(GUEST_IP, 1, 5);
    const ping = run(cmd, args);
    ping.catch(() => undefined); // awaited below; keep an early failure from being "unhandled"
    const req = await waitFrame(guest, (f) => etherType(f) === 0x0800 && f[23] === 1 && f[34] === 8, 'ICMP echo request from the host');
    expect(fmtIp(req, 26)).toBe(HOST_IP);
    expect(fmtIp(req, 30)).toBe(GUEST_IP);
    expect(Array.from(req.subarray(6, 12))).toEqual(mac(hostMac));
    expect(guest.send(echoReply(req))).toBe(true);
    const out = await ping; // rejects unless ping got its reply
    expect(out.stdout).toMatch(/1 (packets )?received/);

    // Counters: host view on the port, switch view on the switch port.
    const c = vport.counters;
    expect(c.txFrames).toBeGreaterThanOrEqual(2); // ARP reply + echo request (+ IPv6 noise)
    expect(c.rxFrames).toBeGreaterThanOrEqual(2); // ARP request + echo reply
    expect(c.rxDropFull + c.rxDropDown + c.rxDropError + c.rxDropTooBig).toBe(0);
    const sp = fx.sw.counters(vport.id)!;
    expect(sp.rxFrames).toBe(c.txFrames);
    expect(sp.txFrames).toBe(c.rxFrames);
    expect(fx.sw.macTable.lookup(parseInt(hostMac.replace(/:/g, ''), 16))).toBe(vport.id);
    expect(fx.problems()).toEqual([]);

    // close(): leaves the switch and the (non-persistent) tap disappears from the namespace.
    const id = vport.id;
    vport.close();
    expect(fx.sw.counters(id)).toBeUndefined();
    expect(() => ns!.ip('link', 'show', 'dev', ifname)).toThrow();
    vport = null;
  });

  test('a tap that is down: frames to it are dropped and counted (rxDropDown), never logged as errors', async () => {
    fx = new NetBackendFixture(1);
    vport = openVport(fx.sw, ifname, fx.log);
    execFileSync('ip', ['link', 'set', 'dev', ifname, 'down']);
    guest = new FakeNetDriver({ socket: fx.socket(0), seed: 6 });
    await guest.start();
    for (let i = 0; i < 3; i++) expect(guest.send(arpRequest(GUEST_MAC, GUEST_IP, HOST_IP))).toBe(true);
    const sp = fx.sw.counters(vport.id)!;
    const end = Date.now() + 5000;
    while (sp.dropEgress < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    expect(vport.counters.rxDropDown).toBe(3);
    expect(vport.counters.rxFrames).toBe(0);
    expect(sp.dropEgress).toBe(3);
    expect(fx.problems()).toEqual([]);
  });

  test('errors: bad names, a second opener, a non-tap interface', () => {
    const sw = new Switch('errs', { mtu: 1400 });
    const fx2 = new NetBackendFixture(0);
    try {
      expect(() => openVport(sw, 'x'.repeat(16), fx2.log)).toThrow(VhostError);
      expect(() => openVport(sw, 'a b', fx2.log)).toThrow(/interface name/);
      const p = openVport(sw, ifname, fx2.log);
      try {
        expect(execFileSync('ip', ['link', 'show', 'dev', ifname], { encoding: 'utf8' })).toMatch(/mtu 1400\b/);
        // The tap is busy (not multi-queue): a second open fails with the errno named.
        expect(() => openVport(new Switch('other'), ifname, fx2.log)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
      } finally {
        p.close();
      }
      expect(sw.ports()).toEqual([]);
      // "lo" exists and is not a tap.
      expect(() => openVport(sw, 'lo', fx2.log)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      // The raw addon contract.
      const n = loadNative();
      const t = n.tapOpen(ifname, 0);
      try {
        expect(t.name).toBe(ifname);
        expect(n.read(t.fd, new Uint8Array(2048), 0, 2048)).toBe(-1); // down, nothing queued: EAGAIN
      } finally {
        n.close(t.fd);
      }
    } finally {
      fx2.close();
    }
  });

  test('guest → vport: every frame written to the tap, no allocation per frame (the copy is batched)', () => {
    const rig = new NetCopyRig();
    try {
      vport = openVport(rig.sw, ifname, silentLog());
      ns!.adopt(ifname, `${HOST_IP}/24`);
      // Unknown unicast: flooded to B (a guest) and to the vport.
      const frame = ethFrame('02:00:00:00:00:99', rig.a.mac, 1000, 1);
      for (let c = 0; c < 32; c++) rig.a.writeTxFrame(c, frame);
      const port = vport;
      const burst = (): void => {
        rig.sendBurst(32);
      };
      for (let i = 0; i < 500; i++) burst();
      const written0 = port.counters.rxFrames;
      const prof = new v8.GCProfiler();
      const before = process.memoryUsage().heapUsed;
      prof.start();
      for (let i = 0; i < 2000; i++) burst();
      const stats = prof.stop();
      let freed = 0;
      for (const st of stats.statistics) freed += st.beforeGC.heapStatistics.usedHeapSize - st.afterGC.heapStatistics.usedHeapSize;
      const frames = port.counters.rxFrames - written0;
      expect(frames).toBe(2000 * 32); // every frame written to the tap
      expect(port.counters.rxBytes / port.counters.rxFrames).toBe(1000);
      expect((process.memoryUsage().heapUsed - before + freed) / frames).toBeLessThan(1);
      expect(copyBatch.refused).toBe(0);
    } finally {
      vport?.close();
      vport = null;
      rig.close();
    }
  });
});
