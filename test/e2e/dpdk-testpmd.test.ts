/**
 * Real peer: DPDK 22.11 testpmd as a user-space virtio-net driver (net_virtio_user) on two vhostd ports of one
 * switch, `--forward-mode=macswap --tx-first`. Each port echoes what it receives back out of the same port
 * (`--port-topology=loop`): with testpmd's default paired topology a frame received on port A leaves port B
 * addressed to a MAC that lives on B, which a learning switch must drop (a hairpin). Frames flow both ways;
 * the received counts of both ports and vhostd's own counters must agree.
 * Also: a restarted DPDK process reconnects to the same sockets and traffic flows again.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requirePeer } from './support/peers.js';
import { LCORES_DRIVER, startTestpmd, virtioUserVdev, type Testpmd } from './support/testpmd.js';
import { VhostdProcess } from './support/vhostd-process.js';

const skip = requirePeer('testpmd');

const CONF = `
switch "s" {
    mtu 1500
}
vm "a" {
    interface { switch "s" }
}
vm "b" {
    interface { switch "s" }
}
`;

describe.skipIf(skip !== null)('DPDK testpmd virtio_user through vhostd', () => {
  let vhostd: VhostdProcess;

  beforeAll(async () => {
    vhostd = new VhostdProcess(CONF);
    await vhostd.start();
  });
  afterAll(async () => {
    await vhostd?.stop();
    vhostd?.cleanup();
  });

  function runTestpmd(prefix: string): Testpmd {
    return startTestpmd({
      prefix,
      lcores: [...LCORES_DRIVER.lcores],
      mainLcore: LCORES_DRIVER.mainLcore,
      vdevs: [virtioUserVdev(0, vhostd.socket('a')), virtioUserVdev(1, vhostd.socket('b'))],
      forwardMode: 'macswap',
      txFirst: true,
      args: ['--port-topology=loop'],
      statsPeriodS: 1,
    });
  }

  async function flow(prefix: string): Promise<void> {
    const before = await vhostd.stats();
    const tp = runTestpmd(prefix);
    let waited: unknown = null;
    // Wait until both ports have received a good number of frames, then stop testpmd either way.
    await tp
      .waitForSample((s) => s.ports.length === 2 && s.ports.every((p) => p.rxPackets > 10_000), 60_000)
      .catch((err: unknown) => (waited = err));
    const final = await tp.stop();
    if (waited) throw waited;
    expect(final.ports).toHaveLength(2);
    for (const p of final.ports) {
      expect(p.rxPackets).toBeGreaterThan(10_000);
      expect(p.txPackets).toBeGreaterThan(10_000);
    }
    // vhostd saw the same traffic. testpmd stops its queues first, so up to a ring of frames may be in flight
    // at the end: vhostd may have put frames in an RX ring that testpmd never read, and testpmd may have
    // queued TX frames that vhostd never popped.
    const after = await vhostd.stats();
    for (const [i, port] of [[0, 'a.net0'], [1, 'b.net0']] as const) {
      const dev = after[port].device;
      const was = before[port].device;
      const guestTx = dev.txFrames - was.txFrames;
      const guestRx = dev.rxFrames - was.rxFrames;
      const tpPort = final.ports.find((p) => p.port === i)!;
      expect(guestTx).toBeLessThanOrEqual(tpPort.txPackets);
      expect(tpPort.txPackets - guestTx).toBeLessThanOrEqual(1024);
      expect(guestRx).toBeGreaterThanOrEqual(tpPort.rxPackets);
      expect(guestRx - tpPort.rxPackets).toBeLessThanOrEqual(1024);
      // Known unicast after learning: nothing dropped in the switch.
      expect(after[port].switchPort!.dropHairpin).toBe(0);
      expect(after[port].switchPort!.dropEgress - before[port].switchPort!.dropEgress).toBeLessThanOrEqual(64);
    }
  }

  test('frames flow both ways and vhostd counters agree with testpmd', async () => {
    await flow('vhostd-e2e-1');
  }, 120_000);

  test('a restarted DPDK process reconnects and traffic flows again', async () => {
    await flow('vhostd-e2e-2');
    const conns = await vhostd.stats();
    expect(conns['a.net0'].connected).toBe(false);
    expect(vhostd.logs.filter((l) => l.msg === 'front-end connection dropped')).toHaveLength(0);
  }, 120_000);
});
