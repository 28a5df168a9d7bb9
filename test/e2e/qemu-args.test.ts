/**
 * `vhostctl qemu-args` is what operators paste into their QEMU command lines (docs/operations.md), so a
 * guest is started from it and nothing else: the real daemon serves vm1 (one interface, one qcow2 disk made with
 * `vhostctl create`) and vm2 on switch "lan", which also has a vport moved into a network namespace (the
 * vport.test.ts pattern: one guest boot proves the NIC both ways). The test runs the real vhostctl binary for
 * `--json qemu-args vm1 --tcg`, checks the human output is a shell fragment evaluating to the same argv, and starts
 * QEMU with exactly those arguments plus the harness's kernel/initrd/console (guest.ts `attachArgs`). In the guest:
 * the disk has the created size, a dd pattern reads back after dropping caches, the NIC pings the namespace. While
 * the guest is up, `vhostctl status` shows both devices connected with negotiated features. Afterwards qemu-img
 * checks the image and finds the pattern. Needs root (tap + netns) and the QEMU peers: skipped with a reason
 * otherwise, failed when CI=true.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import type { DeviceStatus, QemuArgsResult, StatusResult } from '../../src/control/protocol.js';
import { Netns, requireNetns } from '../helpers/netns.js';
import { bytes, md5 } from './support/data.js';
import { buildInitramfs, startGuest, type Guest } from './support/guest.js';
import { requirePeer } from './support/peers.js';
import { runVhostctl, VHOSTCTL_BIN, type VhostctlRun } from '../helpers/vhostctl-cli.js';
import { VhostdProcess } from './support/vhostd-process.js';

const skip = requirePeer('qemu', 'kernel', 'busybox') ?? requireNetns();

const MiB = 1024 * 1024;
const DISK_SIZE = 16 * MiB;
const PATTERN_AT = 5 * MiB + 8192; // not cluster-aligned (64 KiB): the write fills part of a new cluster
const PATTERN_LEN = 256 * 1024;
const MAC1 = 'fe:e1:bb:00:07:01';
const MAC2 = 'fe:e1:bb:00:07:02';
/** Options that attach a device or the guest RAM: the guest must get these from vhostctl only. */
const ATTACH_OPTS = new Set(['-object', '-machine', '-chardev', '-netdev', '-device', '-m']);

/** The real vhostctl binary on the control socket `sock`. */
function vhostctl(sock: string, ...args: string[]): Promise<VhostctlRun> {
  return runVhostctl(['-s', sock, ...args]);
}

async function ctlOk(sock: string, ...args: string[]): Promise<string> {
  const r = await vhostctl(sock, ...args);
  expect(r, r.err).toMatchObject({ code: 0, err: '' });
  return r.out;
}

/** What a POSIX shell makes of the human output (it is documented as a paste-able fragment). */
function shellWords(fragment: string): string[] {
  const out = execFileSync('sh', ['-c', `set -- ${fragment}\nprintf '%s\\0' "$@"`], { encoding: 'utf8' });
  return out.split('\0').slice(0, -1);
}

/** [option, value] pairs of the attaching options in an argv. */
function attachPairs(argv: readonly string[]): string[][] {
  const pairs: string[][] = [];
  for (let i = 0; i < argv.length; i++) if (ATTACH_OPTS.has(argv[i]!)) pairs.push([argv[i]!, argv[i + 1]!]);
  return pairs;
}

function guestBody(): string {
  return `n=0; while [ ! -e /sys/block/vda ] && [ $n -lt 200 ]; do usleep 100000; n=$((n+1)); done
if [ -e /sys/block/vda ]; then
  dd if=/pattern of=/dev/vda bs=4096 seek=${PATTERN_AT / 4096} conv=notrunc,fsync 2>/dev/null
  sync
  echo 3 > /proc/sys/vm/drop_caches
  back=$(dd if=/dev/vda bs=4096 skip=${PATTERN_AT / 4096} count=${PATTERN_LEN / 4096} 2>/dev/null | md5sum | cut -d' ' -f1)
  result disk=ok size=$(cat /sys/block/vda/size) back=$back
else
  result disk=missing
fi
wait_dev eth0 10 || { result ping=fail reason=no-eth0; exit 1; }
ip link set eth0 up
ip addr add 10.0.78.2/24 dev eth0
if ping_until 10.0.78.1 60; then
  rx=$(ping -c 3 -W 2 10.0.78.1 2>&1 | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
  result ping=ok rx=\${rx:-0}/3 mac=$(cat /sys/class/net/eth0/address) mtu=$(cat /sys/class/net/eth0/mtu)
else
  result ping=fail
fi
sleep 120`;
}

describe.skipIf(skip !== null)('a QEMU guest started from `vhostctl qemu-args` output', () => {
  const ifname = `vqa${process.pid}`;
  let ns: Netns | null = null;
  let vhostd: VhostdProcess | null = null;
  let guest: Guest | null = null;

  afterAll(async () => {
    await guest?.kill();
    await vhostd?.stop();
    vhostd?.cleanup();
    ns?.remove();
  });

  test('vm1 boots with exactly those arguments: NIC pings, the qcow2 disk has its size and keeps a write, status shows both connected', async () => {
    const probe = new VhostdProcess('');
    const image = path.join(probe.dir, 'vm1.qcow2');
    execFileSync(process.execPath, [VHOSTCTL_BIN, 'create', '-s', '16M', image]);
    vhostd = new VhostdProcess(
      `switch "lan" {
    vport "${ifname}"
}
vm "vm1" {
    interface {
        switch "lan"
        lladdr ${MAC1}
    }
    disk "${image}"
}
vm "vm2" {
    interface {
        switch "lan"
        lladdr ${MAC2}
    }
}
`,
      { dir: probe.dir },
    );
    await vhostd.start();
    const sock = vhostd.controlSocket;
    ns = new Netns(`vhostd-qa-${process.pid}`);
    ns.adopt(ifname, '10.0.78.1/24');

    const { vm, args } = JSON.parse(await ctlOk(sock, '--json', 'qemu-args', 'vm1', '--tcg')) as QemuArgsResult;
    expect(vm).toBe('vm1');
    // The human output is the same argv once a shell has read it.
    expect(shellWords(await ctlOk(sock, 'qemu-args', 'vm1', '--tcg'))).toEqual(args);
    // Everything vm1 needs and nothing of vm2's: shared RAM, a reconnecting chardev per device, host_mtu, vectors=0.
    expect(args.slice(0, 4)).toEqual(['-object', 'memory-backend-memfd,id=mem,size=512M,share=on', '-machine', 'memory-backend=mem']);
    const chardevs = attachPairs(args).filter(([o]) => o === '-chardev').map(([, v]) => v!);
    expect(chardevs).toEqual([
      `socket,id=vm1-net0,path=${vhostd.socket('vm1')},reconnect=1`,
      `socket,id=vm1-disk0,path=${vhostd.diskSocket('vm1')},reconnect=1`,
    ]);
    expect(args).toContain(`virtio-net-pci,netdev=vm1-net0,mac=${MAC1},host_mtu=1500,vectors=0`);
    expect(args).toContain('vhost-user-blk-pci,chardev=vm1-disk0,vectors=0');
    expect(args.join(' ')).not.toMatch(/vm2/);

    const pattern = bytes(PATTERN_LEN, 31);
    const initrd = await buildInitramfs(guestBody(), { files: { '/pattern': { data: pattern } } });
    guest = startGuest({ name: 'vm1', initrd, attachArgs: args });
    // The harness added boot options only: every attaching option QEMU got is vhostctl's, in vhostctl's order.
    expect(attachPairs(guest.args)).toEqual(attachPairs(args));

    await guest.waitFor(/VHOSTD-RESULT: ping=/, 180_000);
    const disk = guest.results().find((x) => 'disk' in x);
    expect(disk, guest.output().slice(-2000)).toMatchObject({ disk: 'ok', size: String(DISK_SIZE / 512), back: md5(pattern) });
    const ping = guest.results().find((x) => 'ping' in x)!;
    expect(ping, guest.output().slice(-2000)).toMatchObject({ ping: 'ok', rx: '3/3', mac: MAC1, mtu: '1500' });

    // The guest is still up (it lingers): both of its devices are connected with what they negotiated.
    const st = JSON.parse(await ctlOk(sock, '--json', 'status')) as StatusResult;
    const dev = (name: string): DeviceStatus => st.devices.find((d) => d.name === name)!;
    const net = dev('vm1.net0');
    expect(net).toMatchObject({ vm: 'vm1', kind: 'net', connected: true, socket: vhostd.socket('vm1') });
    expect(net.features).toEqual(expect.arrayContaining(['MTU', 'MRG_RXBUF', 'VERSION_1']));
    expect(net.queues.slice(0, 2)).toMatchObject([{ index: 0, started: true, enabled: true }, { index: 1, started: true, enabled: true }]);
    expect(net.counters.txFrames).toBeGreaterThanOrEqual(4); // ARP + 3 echo requests at least
    expect(net.counters.rxFrames).toBeGreaterThanOrEqual(4);
    const blk = dev('vm1.disk0');
    expect(blk).toMatchObject({ vm: 'vm1', kind: 'disk', connected: true, socket: vhostd.diskSocket('vm1') });
    expect(blk.features).toEqual(expect.arrayContaining(['FLUSH', 'VERSION_1']));
    expect(blk.protocolFeatures).toContain('INFLIGHT_SHMFD');
    expect(blk.counters.writes).toBeGreaterThan(0);
    expect(blk.counters.flushes).toBeGreaterThan(0);
    expect(dev('vm2.net0').connected).toBe(false);
    const human = await ctlOk(sock, 'status');
    expect(human).toMatch(/^ {2}vm1\.net0 +net +connected +\S+vm1\.net0\.sock$/m);
    expect(human).toMatch(/^ {2}vm1\.disk0 +disk +connected +\S+vm1\.disk0\.sock$/m);
    expect(human).toMatch(/^ {2}vm2\.net0 +net +not connected/m);
    expect(human).toMatch(/^ {6}features: .*VERSION_1/m);

    await guest.kill();
    guest = null;
    expect(await vhostd.stop()).toBe(0); // flushes and closes the image
    // qemu-img is the oracle: a clean image holding the guest's write.
    execFileSync('qemu-img', ['check', image], { stdio: 'pipe' });
    const raw = path.join(probe.dir, 'vm1.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', image, raw]);
    const after = fs.readFileSync(raw);
    expect(after.length).toBe(DISK_SIZE);
    expect(md5(after.subarray(PATTERN_AT, PATTERN_AT + PATTERN_LEN))).toBe(md5(pattern));
    expect(vhostd.logs.filter((l) => l.level >= 50)).toEqual([]);
  }, 300_000);
});
