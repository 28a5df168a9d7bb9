/**
 * Single fetch under a real concurrent writer (docs/security.md, "Switch: single fetch and hashing of guest MACs"):
 * the sender's TX buffer is memfd guest RAM that a worker thread maps too and rewrites in a tight loop while the
 * back-end forwards it, as a second vCPU would: the source MAC flips between the locked lladdr and a spoofed one,
 * a second 802.1Q tag comes and goes behind the first, and the ARP target flips to an address a rule blocks.
 * Every frame the receivers get must pass the ingress policy as received (the switch forwards the header it
 * checked); the drop counters show that the switch did see the hostile states during the run.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import { parseIpv4 } from '../../src/net/switch.js';
import { NetBackendFixture, waitFor } from '../helpers/backend-fixture.js';
import { FakeNetDriver } from '../helpers/fake-net-driver.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);
if (!native.ok) console.warn(`skipping switch single-fetch tests: ${native.reason}`);
const addonPath = join(process.cwd(), 'native', 'build', 'Release', 'vhost_native.node');

const HDR = 12;
const LOCKED = [0xfe, 0xe1, 0xba, 0x00, 0x00, 0x01]; // the fixture's MAC of vm1.net0
const SPOOF_LAST = 0x66;
const VID = 10;
const BLOCKED_TPA = [10, 0, 0, 9];
/** Frames sent per round (one TX buffer behind every descriptor) and rounds: the bound on frames sent. */
const ROUND = 32;
const ROUNDS = 150;

/** Tagged ARP request from the locked MAC for 10.0.0.1, 64 bytes: the state the policy accepts. */
function goodFrame(): Uint8Array {
  const f = new Uint8Array(64);
  f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, ...LOCKED, 0x81, 0x00, 0x00, VID, 0x08, 0x06], 0);
  f.set([0, 1, 0x08, 0x00, 6, 4, 0, 1, ...LOCKED, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1], 18);
  return f;
}

/**
 * The worker: map the TX buffer's memfd pages and, until told to stop, cycle the three fields through all good/bad
 * combinations (bit 0: source, bit 1: second tag, bit 2: ARP target). Atomics.load each turn keeps every store.
 */
const WORKER = `
const { workerData } = require('node:worker_threads');
const n = require(workerData.addon);
const ab = n.mmapShared(workerData.fd, workerData.size, workerData.mmapOffset, true);
const u8 = new Uint8Array(ab, workerData.at);
const ctl = new Int32Array(workerData.ctl);
for (let i = 0; Atomics.load(ctl, 0) === 0; i++) {
  u8[11] = (i & 1) !== 0 ? ${SPOOF_LAST} : ${LOCKED[5]};
  if ((i & 2) !== 0) { u8[16] = 0x81; u8[17] = 0x00; u8[18] = 0x00; u8[19] = 20; }
  else { u8[16] = 0x08; u8[17] = 0x06; u8[18] = 0x00; u8[19] = 0x01; }
  u8[45] = (i & 4) !== 0 ? ${BLOCKED_TPA[3]} : 1;
  if ((i & 1023) === 0) Atomics.add(ctl, 1, 1);
}
n.munmap(ab);
`;

/** Why `f`, as received on an access (untagged) or trunk (tagged) port, is a frame the ingress policy rejects. */
function violation(f: Uint8Array, trunk: boolean): string | null {
  if (LOCKED.some((b, i) => f[6 + i] !== b)) return `source ${[...f.subarray(6, 12)].map((b) => b.toString(16)).join(':')} on a locked port`;
  let l2 = 12;
  if (trunk) {
    if (f[12] !== 0x81 || f[13] !== 0x00 || f[15] !== VID) return 'trunk frame without its tag';
    l2 = 16;
  }
  const et = (f[l2] << 8) | f[l2 + 1];
  if (et === 0x8100) return trunk ? 'second 802.1Q tag on a trunk port' : 'tagged frame on an access port (VLAN hopping)';
  const a = l2 + 2;
  const isArp = et === 0x0806 && f[a] === 0 && f[a + 1] === 1 && f[a + 2] === 0x08 && f[a + 3] === 0 && f[a + 4] === 6 && f[a + 5] === 4;
  if (isArp && BLOCKED_TPA.every((b, i) => f[a + 24 + i] === b)) return 'ARP for a blocked target';
  return null;
}

describe.skipIf(!native.ok)('switch single fetch against a concurrent writer', () => {
  let fx: NetBackendFixture | null = null;
  const drivers: FakeNetDriver[] = [];
  let worker: Worker | null = null;
  afterEach(async () => {
    await worker?.terminate();
    worker = null;
    for (const d of drivers.splice(0)) d.close();
    fx?.close();
    fx = null;
  });

  test('receivers never get a spoofed source, a second tag or a blocked ARP while a worker rewrites the TX buffer', async () => {
    fx = new NetBackendFixture(3);
    for (let i = 0; i < 3; i++) {
      const d = new FakeNetDriver({ socket: fx.socket(i), seed: 40 + i });
      drivers.push(d);
      await d.start();
    }
    const [a, access, trunk] = drivers;
    const [dev0, dev1, dev2] = fx.devices;
    const sw = fx.sw;
    sw.configurePort(dev0, { locked: true, learn: false, discover: false, tagged: [VID], untagged: 'none' });
    sw.addStatic(dev0.mac, dev0);
    sw.configurePort(dev1, { untagged: VID });
    sw.configurePort(dev2, { tagged: [VID], untagged: 'none' });
    sw.addRule(dev0, { action: 'block', dir: 'in', arp: { tpa: parseIpv4(BLOCKED_TPA.join('.')) } });

    // One TX buffer (virtio-net header + frame) behind every descriptor the sender publishes.
    const gpa = a.rx.alloc.alloc(HDR + 64, 8);
    const region = a.ram.regions.find((r) => gpa >= r.gpa && gpa + HDR + 64 <= r.gpa + r.size)!;
    const bytes = new Uint8Array(HDR + 64);
    bytes.set(goodFrame(), HDR);
    a.rx.dm.write(gpa, bytes);

    const ctl = new Int32Array(new SharedArrayBuffer(8));
    worker = new Worker(WORKER, {
      eval: true,
      workerData: { addon: addonPath, fd: a.ram.fd, size: region.size, mmapOffset: region.mmapOffset, at: gpa - region.gpa + HDR, ctl: ctl.buffer },
    });
    let workerError: Error | null = null;
    worker.on('error', (e) => (workerError = e));
    await waitFor(() => workerError !== null || Atomics.load(ctl, 1) > 0, 'the writer running');
    expect(workerError).toBeNull();

    const violations: string[] = [];
    let received = 0;
    const check = () => {
      for (const [d, isTrunk] of [
        [access, false],
        [trunk, true],
      ] as const) {
        d.pollRx();
        for (const f of d.received.splice(0)) {
          received++;
          const why = violation(f, isTrunk);
          if (why !== null) violations.push(why);
        }
      }
    };
    let sent = 0;
    for (let r = 0; r < ROUNDS && violations.length === 0; r++) {
      const heads: number[] = [];
      for (let k = 0; k < ROUND; k++) {
        const d = (sent + k) % a.tx.size;
        a.tx.writeDesc(d, gpa, HDR + 64, 0, 0);
        heads.push(d);
      }
      a.tx.publish(heads);
      a.flushTx();
      sent += ROUND;
      await waitFor(() => a.tx.usedIdx() === (sent & 0xffff), 'the back-end to take the round');
      check();
    }
    Atomics.store(ctl, 0, 1);
    check();

    const c = sw.counters(dev0.id)!;
    expect(violations.slice(0, 5), `${violations.length} policy violations in ${received} frames received (${sent} sent)`).toEqual([]);
    // The writer was seen by the switch in every hostile state, and good frames still got through.
    expect(c.dropLocked).toBeGreaterThan(0);
    expect(c.dropDoubleTagged).toBeGreaterThan(0);
    expect(c.dropRulesIn).toBeGreaterThan(0);
    expect(received).toBeGreaterThan(0);
  });
});
