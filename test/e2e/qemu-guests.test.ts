/**
 * Real peers: QEMU 7.2 TCG guests (Debian kernel, Linux virtio_net driver, busybox initramfs built at test time)
 * attached to vhostd over vhost-user, one interface each on one switch.
 *  - Two guests with static IPv4 addresses ping each other; both get their replies.
 *  - Restart: vhostd is killed (SIGKILL) while guests with `reconnect=1` run, then started again on the same
 *    sockets: QEMU reconnects, renegotiates, and the guests' traffic resumes.
 */
import { describe, expect, test } from 'vitest';
import { requirePeer } from './support/peers.js';
import { buildInitramfs, pingBody, startGuest, type Guest } from './support/guest.js';
import { peersPerTest } from './support/peers-per-test.js';

const skip = requirePeer('qemu', 'kernel', 'busybox');

const CONF = `
switch "lan" {
    mtu 1500
}
vm "g1" {
    interface {
        switch "lan"
        lladdr fe:e1:bb:00:00:01
    }
}
vm "g2" {
    interface {
        switch "lan"
        lladdr fe:e1:bb:00:00:02
    }
}
`;

/** Ping the peer once every half second forever, printing one line per try. */
function tickerBody(ip: string, peer: string): string {
  return `wait_dev eth0 10 || exit 1
ip link set lo up
ip link set eth0 up
ip addr add ${ip} dev eth0
i=0
while true; do
  if ping -c 1 -W 1 ${peer} >/dev/null 2>&1; then echo "VHOSTD-TICK ok $i"; else echo "VHOSTD-TICK fail $i"; fi
  i=$((i+1))
  sleep 0.5 2>/dev/null || sleep 1
done`;
}

async function waitOutput(g: Guest, from: number, re: RegExp, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!re.test(g.output().slice(from))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; guest output tail:\n${g.output().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe.skipIf(skip !== null)('QEMU guests through vhostd', () => {
  const peers = peersPerTest();

  test('two guests on one switch ping each other', async () => {
    const vhostd = await peers.startVhostd(CONF);
    const [i1, i2] = await Promise.all([
      buildInitramfs(pingBody({ ip: '10.0.0.1/24', peer: '10.0.0.2', lingerS: 30 })),
      buildInitramfs(pingBody({ ip: '10.0.0.2/24', peer: '10.0.0.1', lingerS: 30 })),
    ]);
    const g1 = startGuest({ name: 'g1', initrd: i1, netdevs: [{ socket: vhostd.socket('g1'), mac: 'fe:e1:bb:00:00:01' }] });
    const g2 = startGuest({ name: 'g2', initrd: i2, netdevs: [{ socket: vhostd.socket('g2'), mac: 'fe:e1:bb:00:00:02' }] });
    peers.guests.push(g1, g2);
    await Promise.all([g1.waitFor(/VHOSTD-RESULT: ping=/, 150_000), g2.waitFor(/VHOSTD-RESULT: ping=/, 150_000)]);
    for (const g of [g1, g2]) {
      const r = g.results().find((x) => 'ping' in x)!;
      expect(r.ping, g.output().slice(-1500)).toBe('ok');
      expect(r.rx).toBe('3/3');
    }
    const st = await vhostd.stats();
    expect(st['g1.net0'].device.rxFrames).toBeGreaterThanOrEqual(4);
    expect(st['g2.net0'].device.rxFrames).toBeGreaterThanOrEqual(4);
    expect(vhostd.logs.filter((l) => l.level >= 50)).toEqual([]);
  }, 240_000);

  test('vhostd killed and restarted under running guests with reconnect=1: traffic resumes', async () => {
    let vhostd = await peers.startVhostd(CONF);
    const [i1, i2] = await Promise.all([buildInitramfs(tickerBody('10.0.0.1/24', '10.0.0.2')), buildInitramfs(tickerBody('10.0.0.2/24', '10.0.0.1'))]);
    const g1 = startGuest({ name: 'g1', initrd: i1, reconnect: true, netdevs: [{ socket: vhostd.socket('g1'), mac: 'fe:e1:bb:00:00:01' }] });
    const g2 = startGuest({ name: 'g2', initrd: i2, reconnect: true, netdevs: [{ socket: vhostd.socket('g2'), mac: 'fe:e1:bb:00:00:02' }] });
    peers.guests.push(g1, g2);
    await waitOutput(g1, 0, /VHOSTD-TICK ok/, 150_000, 'the first successful ping');
    // Crash the daemon: no clean shutdown, the sockets stay behind.
    await vhostd.kill();
    const mark = g1.output().length;
    await waitOutput(g1, mark, /VHOSTD-TICK fail/, 60_000, 'pings to fail while vhostd is down');
    const dir = vhostd.dir;
    vhostd = await peers.startVhostd(CONF, { dir });
    const mark2 = g1.output().length;
    await waitOutput(g1, mark2, /VHOSTD-TICK ok/, 90_000, 'pings to succeed after the restart');
    await waitOutput(g2, mark2, /VHOSTD-TICK ok/, 90_000, 'the other guest to recover too');
    const connected = vhostd.logs.filter((l) => l.msg === 'front-end connected').length;
    expect(connected).toBe(2);
    expect(vhostd.logs.filter((l) => l.msg === 'front-end connection dropped')).toEqual([]);
  }, 300_000);
});
