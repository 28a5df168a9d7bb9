/**
 * The host port (`vport "NAME"`, docs/vport.md) with the real daemon and a real QEMU 7.2 TCG guest: vhostd creates
 * the tap named in its configuration; the test moves it into a network namespace of its own and gives it
 * 10.0.77.1/24 there (as an operator would give vport0 an address); the guest (10.0.77.2/24) on the same switch
 * pings the namespace and gets replies, then the namespace pings the guest back.
 * Needs root (tap + netns) and the QEMU peers: skipped with a reason otherwise, failed when CI=true.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, describe, expect, test } from 'vitest';
import { Netns, requireNetns } from '../helpers/netns.js';
import { requirePeer } from './support/peers.js';
import { buildInitramfs, pingBody, startGuest, type Guest } from './support/guest.js';
import { VhostdProcess } from './support/vhostd-process.js';

const skip = requirePeer('qemu', 'kernel', 'busybox') ?? requireNetns();
const run = promisify(execFile);

describe.skipIf(skip !== null)('vport: a QEMU guest and the host stack (in a netns) on one switch', () => {
  const ifname = `vp${process.pid}`;
  let ns: Netns | null = null;
  let vhostd: VhostdProcess | null = null;
  let guest: Guest | null = null;

  afterAll(async () => {
    await guest?.kill();
    await vhostd?.stop();
    vhostd?.cleanup();
    ns?.remove();
  });

  test('guest pings 10.0.77.1 on the tap and the namespace pings the guest back', async () => {
    vhostd = new VhostdProcess(`
switch "lan" {
    vport "${ifname}"
}
vm "g1" {
    interface {
        switch "lan"
        lladdr fe:e1:ba:00:00:01
    }
}
`);
    await vhostd.start();
    ns = new Netns(`vhostd-vp-${process.pid}`);
    // vhostd's fd keeps working after the tap moves to another namespace: the device moves with it.
    ns.adopt(ifname, '10.0.77.1/24');

    const initrd = await buildInitramfs(pingBody({ ip: '10.0.77.2/24', peer: '10.0.77.1', lingerS: 60 }));
    guest = startGuest({ name: 'vp1', initrd, netdevs: [{ socket: vhostd.socket('g1'), mac: 'fe:e1:ba:00:00:01' }] });
    await guest.waitFor(/VHOSTD-RESULT: ping=/, 150_000);
    const r = guest.results().find((x) => 'ping' in x)!;
    expect(r.ping, guest.output().slice(-1500)).toBe('ok');
    expect(r.rx).toBe('3/3');

    const [cmd, args] = ns.pingCmd('10.0.77.2', 3, 5);
    const back = await run(cmd, args);
    expect(back.stdout).toMatch(/3 (packets )?received/);

    const st = await vhostd.stats();
    const vp = st[ifname];
    expect(vp.device.rxFrames).toBeGreaterThanOrEqual(7); // ARP + echo requests and replies from the guest
    expect(vp.device.txFrames).toBeGreaterThanOrEqual(7);
    expect(st['g1.net0'].device.rxFrames).toBeGreaterThanOrEqual(7);
    expect(vhostd.logs.filter((l) => l.level >= 50)).toEqual([]);
  }, 240_000);
});
