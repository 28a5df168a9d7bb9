/**
 * VIRTIO_NET_F_MTU with real QEMU 7.2 guests: on a switch with `mtu 9000`, two guests started with
 * host_mtu=9000 come up with eth0 MTU 9000 and exchange 9000-byte IP packets (ping -s 8972; eth0's MTU keeps them
 * unfragmented, and vhostd's byte counters show 9014-byte frames crossed). A guest
 * started with host_mtu above its switch's MTU does not get a working device: QEMU reports the NACK and vhostd's
 * log says why.
 */
import { describe, expect, test } from 'vitest';
import { requirePeer } from './support/peers.js';
import { buildInitramfs, linkUpBody, pingBody, startGuest } from './support/guest.js';
import { peersPerTest } from './support/peers-per-test.js';

const skip = requirePeer('qemu', 'kernel', 'busybox');

const CONF = `
switch "jumbo" {
    mtu 9000
}
switch "small" {
    mtu 1500
}
vm "g1" {
    interface { switch "jumbo" }
}
vm "g2" {
    interface { switch "jumbo" }
}
vm "g3" {
    interface { switch "small" }
}
`;

function mtuPingBody(ip: string, peer: string): string {
  return `wait_dev eth0 10 || exit 1
result mtu=$(cat /sys/class/net/eth0/mtu)
${pingBody({ ip, peer, size: 8972, count: 3, lingerS: 30 })}`;
}

describe.skipIf(skip !== null)('QEMU guests: MTU negotiation through vhostd', () => {
  const peers = peersPerTest();

  test('host_mtu=9000 on an mtu 9000 switch: eth0 has MTU 9000 and 9000-byte pings cross', async () => {
    const vhostd = await peers.startVhostd(CONF);
    const [i1, i2] = await Promise.all([buildInitramfs(mtuPingBody('10.0.9.1/24', '10.0.9.2')), buildInitramfs(mtuPingBody('10.0.9.2/24', '10.0.9.1'))]);
    const g1 = startGuest({ name: 'g1', initrd: i1, netdevs: [{ socket: vhostd.socket('g1'), hostMtu: 9000 }] });
    const g2 = startGuest({ name: 'g2', initrd: i2, netdevs: [{ socket: vhostd.socket('g2'), hostMtu: 9000 }] });
    peers.guests.push(g1, g2);
    await Promise.all([g1.waitFor(/VHOSTD-RESULT: ping=/, 150_000), g2.waitFor(/VHOSTD-RESULT: ping=/, 150_000)]);
    const st = await vhostd.stats();
    for (const g of [g1, g2]) {
      expect(g.results().find((r) => 'mtu' in r)?.mtu).toBe('9000');
      const r = g.results().find((x) => 'ping' in x)!;
      expect(r.ping, g.output().slice(-1500)).toBe('ok');
      expect(r.rx, `${g.output().slice(-1500)}\nvhostd counters: ${JSON.stringify(st)}`).toBe('3/3');
    }
    // 8972 bytes of ICMP + 28 of IP/ICMP headers + 14 of Ethernet = 9014-byte frames. Each guest received three
    // big requests and three big replies: at least 6 × 9014 bytes, in so few frames that they cannot be IP
    // fragments (fragmented, the six pings alone would be 42 frames).
    for (const p of ['g1.net0', 'g2.net0']) {
      const d = st[p].device;
      expect(d.rxBytes).toBeGreaterThanOrEqual(6 * 9014);
      expect(d.rxFrames).toBeLessThan(30);
    }
    expect(st['g1.net0'].switchPort!.dropMtu).toBe(0);
    expect(vhostd.logs.filter((l) => l.msg === 'guest MTU set' && l.mtu === 9000)).toHaveLength(2);
  }, 240_000);

  test('host_mtu above the switch MTU: QEMU refuses to start the device and vhostd logs why', async () => {
    const vhostd = await peers.startVhostd(CONF);
    const initrd = await buildInitramfs(linkUpBody());
    const g3 = startGuest({ name: 'g3', initrd, netdevs: [{ socket: vhostd.socket('g3'), hostMtu: 9000 }] });
    peers.guests.push(g3);
    await g3.waitFor(/9000Bytes MTU not supported by the backend/, 150_000);
    const line = await vhostd.waitLog((l) => l.msg === 'request refused' && String(l.reason).includes('NET_SET_MTU'), 10_000, 'the refusal');
    expect(line.socket).toBe(vhostd.socket('g3'));
    expect(line.vm).toBe('g3');
    expect(String(line.reason)).toContain('guest MTU 9000 is above the MTU 1500 of switch "small"');
  }, 240_000);
});
