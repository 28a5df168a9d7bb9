/**
 * TCP throughput between two QEMU TCG guests through vhostd, with offloads on (QEMU's defaults:
 * checksum and TSO: 64 KiB segments cross the switch as one frame) and off (every 1514-byte frame crosses on its
 * own). 32 MiB (--full: 128 MiB) from /dev/zero over busybox nc; the sender times the transfer with /proc/uptime, the receiver
 * counts the bytes (asserted before reporting). Under TCG the guests' emulated CPUs dominate: compare the two
 * rows of one run, not absolute figures with KVM numbers.
 */
import { buildInitramfs, startGuest, type Guest } from '../../test/e2e/support/guest.js';
import { VhostdProcess } from '../../test/e2e/support/vhostd-process.js';
import { FULL } from '../support/proc.js';
import { report, type BenchRow } from '../support/report.js';

const MIB = Number(process.env.BENCH_TCP_MIB ?? (FULL ? 128 : 32));
const OFFLOADS_OFF = 'csum=off,guest_csum=off,host_tso4=off,host_tso6=off,guest_tso4=off,guest_tso6=off,gso=off,host_ufo=off,guest_ufo=off,host_ecn=off,guest_ecn=off';

const setup = (ip: string) => `wait_dev eth0 10 || { result setup=fail; exit 1; }
ip link set lo up
ip link set eth0 up
ip addr add ${ip}/24 dev eth0
`;

const SENDER = `${setup('10.0.8.1')}
ping_until 10.0.8.2 60 || { result tcp=noping; exit 1; }
i=0
while [ $i -lt 40 ]; do
  t0=$(cut -d' ' -f1 /proc/uptime)
  if dd if=/dev/zero bs=65536 count=${MIB * 16} 2>/dev/null | nc 10.0.8.2 5000; then
    t1=$(cut -d' ' -f1 /proc/uptime)
    result tcp=sent t0=$t0 t1=$t1
    break
  fi
  i=$((i+1)); sleep 0.5 2>/dev/null || sleep 1
done
sleep 5`;

const RECEIVER = `${setup('10.0.8.2')}
result got=$(nc -l -p 5000 < /dev/console | wc -c)
sleep 2`;

async function run(offloads: boolean): Promise<number> {
  const v = new VhostdProcess('switch "lan" {\n  mtu 1500\n}\nvm "s" {\n  interface { switch "lan" }\n}\nvm "r" {\n  interface { switch "lan" }\n}\n');
  await v.start();
  const guests: Guest[] = [];
  try {
    const [is, ir] = await Promise.all([buildInitramfs(SENDER), buildInitramfs(RECEIVER)]);
    const props = offloads ? undefined : OFFLOADS_OFF;
    const r = startGuest({ name: 'r', initrd: ir, netdevs: [{ socket: v.socket('r'), deviceProps: props }] });
    const s = startGuest({ name: 's', initrd: is, netdevs: [{ socket: v.socket('s'), deviceProps: props }] });
    guests.push(r, s);
    await s.waitFor(/VHOSTD-RESULT: tcp=/, 300_000);
    await r.waitFor(/VHOSTD-RESULT: got=/, 60_000);
    const sent = s.results().find((x) => 'tcp' in x)!;
    const got = Number(r.results().find((x) => 'got' in x)!.got);
    if (sent.tcp !== 'sent') throw new Error(`transfer failed: ${JSON.stringify(sent)}`);
    if (got !== MIB * 1024 * 1024) throw new Error(`receiver got ${got} bytes, expected ${MIB * 1024 * 1024}`);
    const secs = Number(sent.t1) - Number(sent.t0);
    return (MIB * 8 * 1.048576) / secs; // Mbit/s
  } finally {
    await Promise.all(guests.map((g) => g.kill()));
    await v.stop();
    v.cleanup();
  }
}

const on = await run(true);
const off = await run(false);
const note = `TCP between two QEMU TCG guests (1 vCPU each) through one vhostd switch: ${MIB} MiB over busybox nc, timed by the sender, byte count checked by the receiver. The emulated CPUs are the limit: compare the two rows, not absolute figures.`;
const rows: BenchRow[] = [
  { bench: 'net/guest-tcp', case: 'offloads=on', unit: 'Mbit/s', value: Number(on.toFixed(1)), mib: MIB, note },
  { bench: 'net/guest-tcp', case: 'offloads=off', unit: 'Mbit/s', value: Number(off.toFixed(1)), ratioToOn: Number((off / on).toFixed(3)), mib: MIB, note },
];
report(rows);
process.stderr.write(`\nnet/guest-tcp: ${MIB} MiB between two QEMU TCG guests through vhostd\noffloads  Mbit/s\non      ${on.toFixed(1).padStart(8)}\noff     ${off.toFixed(1).padStart(8)}\n`);
