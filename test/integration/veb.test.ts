/**
 * veb semantics through the real vhost-user path: a Daemon built from a configuration (switch options, per-port
 * flags, statics, rules), FakeNetDrivers on its sockets. locked lladdr, VLAN tag insertion/stripping (bytes
 * checked), protected domains, and a rule blocking ARP by sender IP.
 * The VLAN test needs NetDevice.deliver to copy with frameCopyTo (frame.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, test } from 'vitest';
import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import { parseConfig } from '../../src/config/parser.js';
import { Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/util/log.js';
import { FakeNetDriver, ethFrame } from '../helpers/fake-net-driver.js';
import { waitFor } from '../helpers/backend-fixture.js';

const native = nativeAvailable();
const M1 = 'fe:e1:bb:00:00:01';
const M2 = 'fe:e1:bb:00:00:02';
const M3 = 'fe:e1:bb:00:00:03';
const BCAST = 'ff:ff:ff:ff:ff:ff';

function tagged(f: Uint8Array, vid: number): Uint8Array {
  const t = new Uint8Array(f.length + 4);
  t.set(f.subarray(0, 12));
  t.set([0x81, 0x00, vid >> 8, vid & 0xff], 12);
  t.set(f.subarray(12), 16);
  return t;
}

function arp(src: string, spa: number[]): Uint8Array {
  const f = ethFrame(BCAST, src, 60);
  f[12] = 0x08;
  f[13] = 0x06;
  f.set([0, 1, 8, 0, 6, 4, 0, 1, ...src.split(':').map((h) => parseInt(h, 16)), ...spa, 0, 0, 0, 0, 0, 0, 10, 0, 0, 9], 14);
  return f;
}

describe.skipIf(!native.ok)('veb switch semantics over vhost-user', () => {
  let dir = '';
  let daemon: Daemon | null = null;
  const drivers: FakeNetDriver[] = [];
  afterEach(() => {
    for (const d of drivers.splice(0)) d.close();
    daemon?.stop();
    daemon = null;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function start(conf: string, n: number): Promise<FakeNetDriver[]> {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-veb-'));
    const cfg = parseConfig(`socket dir "${dir}"\n${conf}`, 'veb.conf', { baseDir: dir });
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    daemon = new Daemon(cfg, loadNative(), createLogger({ level: 'warn', destination: sink }));
    daemon.start();
    const out: FakeNetDriver[] = [];
    for (let i = 0; i < n; i++) {
      const d = new FakeNetDriver({ socket: daemon.netPorts[i]!.server.socketPath, seed: 10 + i });
      drivers.push(d);
      await d.start();
      out.push(d);
    }
    return out;
  }
  const counters = (i: number) => daemon!.switches.get('sw')!.counters(daemon!.netPorts[i]!.device.id)!;

  test('locked lladdr: spoofed sources are dropped and counted; the lladdr is static while connected', async () => {
    const [a, b] = await start(`switch "sw" {}
vm "a" { interface { switch "sw"; locked lladdr ${M1} } }
vm "b" { interface { switch "sw"; lladdr ${M2} } }`, 2);
    const sw = daemon!.switches.get('sw')!;
    expect(sw.entries()).toContainEqual({ mac: M1, port: 'a.net0', portId: daemon!.netPorts[0]!.device.id, ageSec: 0, static: true });
    a.send(ethFrame(BCAST, M3, 60, 1)); // spoofed
    const good = ethFrame(BCAST, M1, 60, 2);
    a.send(good);
    expect(await b.waitRx(1)).toEqual([good]);
    await waitFor(() => counters(0).dropLocked === 1, 'locked drop counted');
    a.close();
    drivers.splice(drivers.indexOf(a), 1);
    await waitFor(() => sw.macTable.staticPort(0xfee1bb000001) === -1, 'static entry removed on disconnect');
  });

  test('VLANs: untagged PVID port ↔ tagged trunk, tag inserted and stripped byte for byte', async () => {
    const [u, t] = await start(`switch "sw" {}
vm "u" { interface { switch "sw"; lladdr ${M1}; untagged 10 } }
vm "t" { interface { switch "sw"; lladdr ${M2}; untagged none; tagged 10,20 } }`, 2);
    const f = ethFrame(BCAST, M1, 100, 3);
    u.send(f);
    expect(await t.waitRx(1)).toEqual([tagged(f, 10)]);
    const back = ethFrame(M1, M2, 200, 4);
    t.send(tagged(back, 10));
    expect(await u.waitRx(1)).toEqual([back]);
    t.send(tagged(ethFrame(BCAST, M2, 60, 5), 30)); // VID not in the trunk's set
    await waitFor(() => counters(1).dropTaggedIn === 1, 'tagged-in counted');
  });

  test('protected domains: ports sharing a domain never talk; a third port reaches both', async () => {
    const [a, b, c] = await start(`switch "sw" {}
vm "a" { interface { switch "sw"; lladdr ${M1}; protected 1 } }
vm "b" { interface { switch "sw"; lladdr ${M2}; protected 1,2 } }
vm "c" { interface { switch "sw"; lladdr ${M3} } }`, 3);
    const fa = ethFrame(BCAST, M1, 60, 6);
    a.send(fa);
    expect(await c.waitRx(1)).toEqual([fa]);
    const fb = ethFrame(M1, M2, 60, 7); // known unicast to a: protected
    b.send(fb);
    await waitFor(() => counters(1).dropProtected === 1, 'protected drop counted');
    const fc = ethFrame(M1, M3, 60, 8);
    c.send(fc);
    expect(await a.waitRx(1)).toEqual([fc]);
    expect(b.received.length + b.pollRx()).toBe(0);
  });

  test('rule block in on a port arp spa: that ARP is dropped and counted, other ARP passes', async () => {
    const [a, b] = await start(`switch "sw" {
    rule block in on "a.net0" arp spa 10.0.0.1
}
vm "a" { interface { switch "sw"; lladdr ${M1} } }
vm "b" { interface { switch "sw"; lladdr ${M2} } }`, 2);
    a.send(arp(M1, [10, 0, 0, 1]));
    const ok = arp(M1, [10, 0, 0, 2]);
    a.send(ok);
    expect(await b.waitRx(1)).toEqual([ok]);
    await waitFor(() => counters(0).dropRulesIn === 1, 'rules-in counted');
  });
});
