/**
 * Offloads between real guests: three QEMU 7.2 TCG guests on one switch, A and B with every offload
 * QEMU's virtio-net-pci offers (csum, guest_csum, host/guest TSO4/6 on: QEMU's defaults), C with all of them off
 * (device properties). 2 MiB of /dev/urandom crosses with busybox nc A → B (TSO frames and partial checksums pass
 * through vhostd with their header), A → C (vhostd segments and completes checksums in software) and C → A (plain
 * frames into an offload-capable guest). D has the checksum offloads but no TSO: A → D is segmented in software,
 * with DATA_VALID. Each receiver md5sums what it got; the sender's md5 comes through its
 * console.
 */
import { describe, expect, test } from 'vitest';
import { requirePeer } from './support/peers.js';
import { buildInitramfs, startGuest, type Guest } from './support/guest.js';
import { peersPerTest } from './support/peers-per-test.js';

const skip = requirePeer('qemu', 'kernel', 'busybox');

const CONF = `
switch "lan" {
    mtu 1500
}
vm "a" {
    interface { switch "lan" }
}
vm "b" {
    interface { switch "lan" }
}
vm "c" {
    interface { switch "lan" }
}
vm "d" {
    interface { switch "lan" }
}
`;

/** Checksum offloads only: TSO off both ways. */
const TSO_OFF = 'host_tso4=off,host_tso6=off,guest_tso4=off,guest_tso6=off,host_ecn=off,guest_ecn=off,host_ufo=off,guest_ufo=off';
const OFFLOADS_OFF = 'csum=off,guest_csum=off,host_tso4=off,host_tso6=off,guest_tso4=off,guest_tso6=off,gso=off,host_ufo=off,guest_ufo=off,host_ecn=off,guest_ecn=off';

function setup(ip: string): string {
  return `wait_dev eth0 10 || { result setup=fail; exit 1; }
ip link set lo up
ip link set eth0 up
ip addr add ${ip}/24 dev eth0
`;
}

/** make_file: 2 MiB of random bytes in /tmp/f; send_to IP PORT KEY: nc it over (retrying until the listener is up). */
const HELPERS = `
make_file() { dd if=/dev/urandom of=/tmp/f bs=1k count=2048 2>/dev/null; md5sum /tmp/f | cut -d' ' -f1; }
send_to() { ping_until $1 60 || { result $3=noping; return 1; }
  t0=$(date +%s); i=0
  while [ $i -lt 40 ]; do
    if nc $1 $2 < /tmp/f; then result $3=sent secs=$(( $(date +%s) - t0 )); return 0; fi
    i=$((i+1)); sleep 0.5 2>/dev/null || sleep 1
  done
  result $3=fail; return 1; }
# stdin from the console (never EOF): busybox nc quits at EOF on stdin, even in listen mode (a background job's
# stdin is /dev/null).
recv_on() { nc -l -p $1 < /dev/console > /tmp/r; result $2=$(md5sum /tmp/r | cut -d' ' -f1) $2_bytes=$(wc -c < /tmp/r); }
`;

const BODY_A = `${setup('10.0.7.1')}${HELPERS}
result a_md5=$(make_file)
recv_on 5001 a_got &
send_to 10.0.7.2 5000 a_to_b
send_to 10.0.7.3 5000 a_to_c
send_to 10.0.7.4 5000 a_to_d
wait
sleep 2`;

const BODY_B = `${setup('10.0.7.2')}${HELPERS}
recv_on 5000 b_got
sleep 2`;

const BODY_C = `${setup('10.0.7.3')}${HELPERS}
recv_on 5000 c_got
result c_md5=$(make_file)
send_to 10.0.7.1 5001 c_to_a
# nc exits once the data is queued in the socket: stay up until A has it (A reports, then powers off).
sleep 15`;

const BODY_D = `${setup('10.0.7.4')}${HELPERS}
recv_on 5000 d_got
sleep 2`;

function result(g: Guest, key: string): string | undefined {
  return g.results().find((r) => key in r)?.[key];
}

describe.skipIf(skip !== null)('QEMU guests: offloads through vhostd', () => {
  const peers = peersPerTest();

  test('2 MiB TCP transfers: offload guest → offload guest, → guest without offloads, and back; bytes intact', async () => {
    const vhostd = await peers.startVhostd(CONF);
    const [ia, ib, ic, id] = await Promise.all([BODY_A, BODY_B, BODY_C, BODY_D].map((body) => buildInitramfs(body)));
    const a = startGuest({ name: 'a', initrd: ia, netdevs: [{ socket: vhostd.socket('a') }] });
    const b = startGuest({ name: 'b', initrd: ib, netdevs: [{ socket: vhostd.socket('b') }] });
    const c = startGuest({ name: 'c', initrd: ic, netdevs: [{ socket: vhostd.socket('c'), deviceProps: OFFLOADS_OFF }] });
    const d = startGuest({ name: 'd', initrd: id, netdevs: [{ socket: vhostd.socket('d'), deviceProps: TSO_OFF }] });
    peers.guests.push(a, b, c, d);
    const t0 = Date.now();
    await Promise.all([a, b, d].map((g) => g.waitFor(/VHOSTD-DONE/, 200_000)));
    const st = await vhostd.stats();
    const why = `\nA:\n${a.output().slice(-1500)}\nB:\n${b.output().slice(-1000)}\nC:\n${c.output().slice(-1500)}\nD:\n${d.output().slice(-1000)}\nvhostd counters: ${JSON.stringify(st)}`;
    const md5a = result(a, 'a_md5');
    const md5c = result(c, 'c_md5');
    expect(md5a, why).toMatch(/^[0-9a-f]{32}$/);
    expect(md5c, why).toMatch(/^[0-9a-f]{32}$/);
    expect(result(a, 'a_to_b'), why).toBe('sent');
    expect(result(a, 'a_to_c'), why).toBe('sent');
    expect(result(c, 'c_to_a'), why).toBe('sent');
    expect(result(b, 'b_got'), why).toBe(md5a);
    expect(result(b, 'b_got_bytes'), why).toBe('2097152');
    expect(result(c, 'c_got'), why).toBe(md5a);
    expect(result(a, 'a_got'), why).toBe(md5c);
    expect(result(a, 'a_got_bytes'), why).toBe('2097152');
    expect(result(a, 'a_to_d'), why).toBe('sent');
    expect(result(d, 'd_got'), why).toBe(md5a);
    // A and B negotiated the offloads and C none; A's TSO frames reached B whole (no software path for B: frames
    // larger than the 1514-byte MTU frame on average) and were segmented for C.
    const dev = (p: string) => st[p].device;
    expect(dev('b.net0').rxSoftOffload, why).toBe(0);
    expect(dev('b.net0').rxBytes / dev('b.net0').rxFrames, why).toBeGreaterThan(1514);
    expect(dev('c.net0').rxSoftOffload, why).toBeGreaterThan(0);
    expect(dev('d.net0').rxSoftOffload, why).toBeGreaterThan(0);
    for (const p of ['a.net0', 'b.net0', 'c.net0', 'd.net0']) {
      expect(dev(p).rxBadOffload + dev(p).txBadOffload, why).toBe(0);
      expect(st[p].switchPort!.dropMtu, why).toBe(0);
    }
    console.log(`offload e2e: guests done in ${((Date.now() - t0) / 1000).toFixed(1)} s; A→B ${result(a, 'secs')} s`);
  }, 240_000);
});
