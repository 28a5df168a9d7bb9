/**
 * Real peers: live migration of a QEMU 7.2 TCG guest whose virtio-net is served over vhost-user, between two
 * QEMU processes on this machine (unix-socket migration stream, QMP monitors).
 *
 * The migrated guest g1 pings 10.0.0.2 every 0.5 s and prints `VHOSTD-TICK ok|fail N`. After a few good ticks a
 * destination QEMU (same kernel, initrd, RAM, MAC; its netdev on a second vhost-user socket; `-incoming unix:`)
 * is started and the source is migrated to it. Pass: the migration completes, the source stops (postmigrate) and
 * prints nothing more, and the destination's console keeps printing `ok` ticks whose counter continues from the
 * source's (the guest's memory moved; no reboot). The guest's RAM is 256 MiB + 8 KiB: with a multiple of 256 KiB,
 * QEMU 7.2's TCG loses guest stores in a migration that takes more than one pass, and the destination kernel crashes
 * (support/migration.ts says why).
 *
 *  - Reference back-end (validates the harness): DPDK testpmd, two net_vhost ports (source, destination) in
 *    icmpecho forwarding mode with loop topology: testpmd itself answers the guest's ARP and ICMP echo requests
 *    on whichever port they arrive. DPDK's vhost library implements dirty-page logging (LOG_SHMFD + LOG_ALL).
 *  - vhostd: one switch with ports g1 (source), g1dst (destination) and g2 (a second guest, 10.0.0.2, answering).
 *    Needs vhostd's dirty-page logging: without it QEMU registers a migration blocker and `migrate` is refused.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { requirePeer } from './support/peers.js';
import { buildInitramfs, startGuest, type Guest, type GuestOptions } from './support/guest.js';
import { startTestpmd, vhostSocketReady, vhostVdev, type Testpmd } from './support/testpmd.js';
import { VhostdProcess } from './support/vhostd-process.js';
import {
  MIGRATION_MEM_KIB,
  dispose,
  migrate,
  migrationDir,
  queryStatus,
  quit,
  removeDir,
  startDestination,
  startGuestWithQmp,
  ticks,
  waitStatus,
  type MigratableGuest,
} from './support/migration.js';
import path from 'node:path';

const skipQemu = requirePeer('qemu', 'kernel', 'busybox');
const skipDpdk = skipQemu ?? requirePeer('testpmd');

const G1_MAC = 'fe:e1:bb:00:00:01';
const G2_MAC = 'fe:e1:bb:00:00:02';

const CONF = `
switch "lan" {
    mtu 1500
}
vm "g1" {
    interface {
        switch "lan"
        lladdr ${G1_MAC}
    }
}
vm "g1dst" {
    interface {
        switch "lan"
    }
}
vm "g2" {
    interface {
        switch "lan"
        lladdr ${G2_MAC}
    }
}
`;

/**
 * Ping the peer once every half second forever, printing one line per try. Meanwhile a background adaptive ping
 * (next request as soon as the reply arrives) keeps the back-end writing RX buffers and used rings all through the
 * migration, so pages the back-end dirties after QEMU copied them must be in its dirty log or the destination sees
 * stale rings (virtio_ring then reports "id N is not a head" / "out of range" and the ticks stop).
 */
function tickerBody(ip: string, peer: string): string {
  return `wait_dev eth0 10 || exit 1
ip link set lo up
ip link set eth0 up
ip addr add ${ip} dev eth0
ping -A -q -s 1000 ${peer} >/dev/null 2>&1 &
i=0
while true; do
  if ping -c 1 -W 1 ${peer} >/dev/null 2>&1; then echo "VHOSTD-TICK ok $i"; else echo "VHOSTD-TICK fail $i"; fi
  i=$((i+1))
  sleep 0.5 2>/dev/null || sleep 1
done`;
}

/** Configure an address and stay up (the kernel answers pings). */
function responderBody(ip: string): string {
  return `wait_dev eth0 10 || exit 1
ip link set lo up
ip link set eth0 up
ip addr add ${ip} dev eth0
echo VHOSTD-RESPONDER-UP
while true; do sleep 10; done`;
}

async function until(pred: () => boolean, timeoutMs: number, what: string, tail: () => string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; output tail:\n${tail()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface Scenario {
  /** vhost-user socket the source's netdev uses, and the destination's. */
  srcSocket: string;
  dstSocket: string;
  dir: string;
  /** Extra checks after the destination has shown it runs (counters, logs). */
  log: (s: string) => void;
}

interface Outcome {
  src: MigratableGuest;
  dst: MigratableGuest;
  lastSrcTick: number;
  dstTicks: { ok: boolean; n: number }[];
  migrateMs: number;
}

/**
 * The scenario proper. Leaves both QEMUs to the caller's cleanup (registered in `live` as soon as they exist).
 * Throws with QEMU's own error text when the migration is refused or fails.
 */
async function migrateTicker(s: Scenario, live: (MigratableGuest | null)[]): Promise<Outcome> {
  const t0 = Date.now();
  const initrd = await buildInitramfs(tickerBody('10.0.0.1/24', '10.0.0.2'));
  const opts = (socket: string): GuestOptions => ({ name: 'g1', initrd, memKiB: MIGRATION_MEM_KIB, netdevs: [{ socket, mac: G1_MAC }] });

  const src = await startGuestWithQmp(opts(s.srcSocket), path.join(s.dir, 'src.qmp'));
  live.push(src);
  await until(() => ticks(src.guest.output()).filter((t) => t.ok).length >= 3, 120_000, 'three ok ticks on the source', () => src.guest.output().slice(-2000));
  s.log(`source: 3 ok ticks after ${Date.now() - t0} ms`);

  const incoming = path.join(s.dir, 'incoming.sock');
  const dst = await startDestination(opts(s.dstSocket), path.join(s.dir, 'dst.qmp'), incoming);
  live.push(dst);
  expect((await queryStatus(dst.qmp)).status).toBe('inmigrate');

  const r = await migrate(src.qmp, incoming, { timeoutMs: 120_000 });
  s.log(`migrate: ${r.status} in ${r.ms} ms${r.error ? ` error: ${r.error}` : ''}${r.info ? ` ram=${JSON.stringify(r.info.ram)} downtime=${r.info.downtime}` : ''}`);
  if (r.status !== 'completed') throw new Error(`migration ${r.status}: ${r.error ?? '(no error text)'}`);

  // The source has stopped for good; the destination runs the guest.
  const st = await queryStatus(src.qmp);
  expect(st).toMatchObject({ running: false, status: 'postmigrate' });
  await waitStatus(dst.qmp, (x) => x.running, 30_000, 'the destination to run');
  const srcLen = src.guest.output().length;
  const lastSrcTick = Math.max(...ticks(src.guest.output()).map((t) => t.n));

  // Ticks on the destination's console, continuing the source's counter.
  await until(
    () => ticks(dst.guest.output()).filter((t) => t.ok && t.n > lastSrcTick).length >= 3,
    60_000,
    `three ok ticks above ${lastSrcTick} on the destination`,
    () => `--- destination ---\n${dst.guest.output().slice(-2000)}\n--- source ---\n${src.guest.output().slice(-1000)}`,
  );
  const dstTicks = ticks(dst.guest.output());
  s.log(`destination: ticks ${dstTicks.map((t) => `${t.ok ? 'ok' : 'fail'}${t.n}`).join(' ')} (source's last: ${lastSrcTick}); ${Date.now() - t0} ms total`);
  // Still the same boot: the destination never booted the guest itself.
  expect(dst.guest.output()).not.toMatch(/VHOSTD-BOOTED/);
  expect(dstTicks[0].n).toBeGreaterThanOrEqual(lastSrcTick);
  // virtio_ring's complaints about a corrupted ring (stale used ring after a lost dirty-log entry), or worse.
  expect(dst.guest.output()).not.toMatch(/is not a head|out of range|Oops|BUG:|Kernel panic|virtio_net.*(error|failed)/);
  // The source printed nothing since it stopped.
  expect(src.guest.output().slice(srcLen)).not.toMatch(/VHOSTD-TICK/);
  expect((await queryStatus(src.qmp)).running).toBe(false);
  await quit(src);
  return { src, dst, lastSrcTick, dstTicks, migrateMs: r.ms };
}

const log = (s: string) => console.log(`[migration] ${s}`);

describe.skipIf(skipDpdk !== null)('live migration, reference back-end: DPDK net_vhost (icmpecho)', () => {
  const live: (MigratableGuest | null)[] = [];
  let tp: Testpmd | null = null;
  let dir = '';
  afterEach(async () => {
    await Promise.all(live.splice(0).map((m) => dispose(m)));
    await tp?.stop();
    tp = null;
    if (dir) removeDir(dir);
  });

  test('guest migrates between two net_vhost ports and keeps pinging', async () => {
    dir = migrationDir();
    const a = path.join(dir, 'vhost-src.sock');
    const b = path.join(dir, 'vhost-dst.sock');
    tp = startTestpmd({
      prefix: `mig${process.pid}`,
      lcores: [0, 1],
      mainLcore: 0,
      vdevs: [vhostVdev(0, a), vhostVdev(1, b)],
      forwardMode: 'icmpecho',
      args: ['--port-topology=loop'],
      memMiB: 256,
      mbufs: 8192,
      statsPeriodS: 5,
    });
    await tp.waitForOutput(vhostSocketReady(a), 30_000);
    await tp.waitForOutput(vhostSocketReady(b), 30_000);
    await migrateTicker({ srcSocket: a, dstSocket: b, dir, log }, live);
    // The guest's traffic went through the destination's port (port 1) after the switch-over.
    const fin = await tp.stop();
    tp = null;
    log(`testpmd forward stats: ${JSON.stringify(fin.ports)}`);
    const p1 = fin.ports.find((p) => p.port === 1);
    expect(p1?.rxPackets).toBeGreaterThan(0);
    expect(p1?.txPackets).toBeGreaterThan(0);
  }, 240_000);
});

describe.skipIf(skipQemu !== null)('live migration through vhostd', () => {
  const live: (MigratableGuest | null)[] = [];
  const guests: Guest[] = [];
  let vhostd: VhostdProcess | null = null;
  let dir = '';
  afterEach(async () => {
    await Promise.all(live.splice(0).map((m) => dispose(m)));
    await Promise.all(guests.splice(0).map((g) => g.kill()));
    await vhostd?.stop();
    vhostd?.cleanup();
    vhostd = null;
    if (dir) removeDir(dir);
  });

  test('guest migrates from port g1 to port g1dst and keeps pinging g2', async () => {
    dir = migrationDir();
    vhostd = new VhostdProcess(CONF);
    await vhostd.start();
    const g2 = startGuest({ name: 'g2', initrd: await buildInitramfs(responderBody('10.0.0.2/24')), netdevs: [{ socket: vhostd.socket('g2'), mac: G2_MAC }] });
    guests.push(g2);
    const before = await vhostd.stats();
    expect(before['g1dst.net0'].device.rxFrames).toBe(0);

    await migrateTicker({ srcSocket: vhostd.socket('g1'), dstSocket: vhostd.socket('g1dst'), dir, log }, live);

    const st = await vhostd.stats();
    log(`vhostd counters: g1 ${JSON.stringify(st['g1.net0'].device)} g1dst ${JSON.stringify(st['g1dst.net0'].device)}`);
    expect(st['g1dst.net0'].device.txFrames).toBeGreaterThan(0);
    expect(st['g1dst.net0'].device.rxFrames).toBeGreaterThan(0);
    // QEMU turned vhostd's dirty-page logging on for the source's port while it copied RAM.
    const logOn = vhostd.logs.filter((l) => /dirty-page logging on/.test(l.msg));
    log(`vhostd logging lines: ${logOn.map((l) => JSON.stringify(l)).join(' ')}`);
    expect(logOn.some((l) => l.dev === 'g1.net0')).toBe(true);
    expect(vhostd.logs.filter((l) => l.level >= 50)).toEqual([]);
  }, 240_000);
});
