// Tiny Linux guests for e2e tests: a busybox initramfs built at test time (cached by content hash
// under <repo>/.cache, never committed) and QEMU (TCG) attached to vhost-user sockets.
//
// The guest's /init mounts proc/sys/devtmpfs, insmods the virtio modules, prints
// `VHOSTD-BOOTED`, runs the test's script body, prints `VHOSTD-DONE rc=N` and powers off.
// Bodies report verdicts with the shell function `result key=value ...`, which prints
// `VHOSTD-RESULT: key=value ...`; parse them with parseResults().
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { findGuestKernel, findStaticBusybox, type GuestKernel } from './peers.js';

/** Load order matters: busybox insmod does not resolve dependencies. */
export const VIRTIO_MODULES = [
  'kernel/drivers/virtio/virtio_ring',
  'kernel/drivers/virtio/virtio',
  'kernel/drivers/virtio/virtio_pci_modern_dev',
  'kernel/drivers/virtio/virtio_pci_legacy_dev',
  'kernel/drivers/virtio/virtio_pci',
  'kernel/net/core/failover',
  'kernel/drivers/net/net_failover',
  'kernel/drivers/net/virtio_net',
  'kernel/drivers/block/virtio_blk',
];

export const MARK_BOOTED = 'VHOSTD-BOOTED';
export const MARK_RESULT = 'VHOSTD-RESULT:';
export const MARK_DONE = 'VHOSTD-DONE';

/** <repo root>: nearest ancestor of this file holding package.json (works from src and build/). */
function repoRoot(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(d, 'package.json')) && !d.endsWith(`${path.sep}build`)) return d;
    const up = path.dirname(d);
    if (up === d) return process.cwd();
    d = up;
  }
}

export function cacheDir(sub: string): string {
  const base = process.env.VHOSTD_CACHE_DIR ?? path.join(repoRoot(), '.cache');
  const d = path.join(base, sub);
  mkdirSync(d, { recursive: true });
  return d;
}

// ---------------------------------------------------------------------------------------------
// cpio "newc" writer (no external cpio/fakeroot needed; lets us add /dev/console without root)

interface CpioEntry {
  name: string; // without leading '/'
  mode: number; // full st_mode incl. type bits
  data?: Buffer;
  rdev?: [number, number];
}

function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let off = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    off += b.length;
  };
  const pad4 = () => {
    const n = (4 - (off % 4)) % 4;
    if (n) push(Buffer.alloc(n));
  };
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  let ino = 1;
  for (const e of [...entries, { name: 'TRAILER!!!', mode: 0 } as CpioEntry]) {
    const data = e.data ?? Buffer.alloc(0);
    const isTrailer = e.name === 'TRAILER!!!';
    const fields = [
      isTrailer ? 0 : ino++,
      e.mode,
      0, // uid
      0, // gid
      (e.mode & 0o170000) === 0o040000 ? 2 : 1,
      0, // mtime: deterministic
      data.length,
      0,
      0,
      e.rdev?.[0] ?? 0,
      e.rdev?.[1] ?? 0,
      Buffer.byteLength(e.name) + 1,
      0,
    ];
    push(Buffer.from('070701' + fields.map(hex).join(''), 'ascii'));
    push(Buffer.from(e.name + '\0', 'utf8'));
    pad4();
    if (data.length) {
      push(data);
      pad4();
    }
  }
  return Buffer.concat(parts);
}

function readModule(file: string): Buffer {
  if (file.endsWith('.ko')) return readFileSync(file);
  if (file.endsWith('.ko.gz')) return gunzipSync(readFileSync(file));
  if (file.endsWith('.ko.xz')) return execFileSync('xz', ['-dc', file], { maxBuffer: 64 << 20 });
  if (file.endsWith('.ko.zst')) return execFileSync('zstd', ['-dc', file], { maxBuffer: 64 << 20 });
  throw new Error(`unknown module format: ${file}`);
}

/** Resolve a module (path without .ko) to its file, or 'builtin', or throw. */
function resolveModule(k: GuestKernel, mod: string): string | 'builtin' {
  for (const ext of ['.ko', '.ko.xz', '.ko.zst', '.ko.gz']) {
    const f = path.join(k.modulesDir, mod + ext);
    if (existsSync(f)) return f;
  }
  let builtin = '';
  try {
    builtin = readFileSync(path.join(k.modulesDir, 'modules.builtin'), 'utf8');
  } catch {
    /* none */
  }
  if (builtin.split('\n').some((l) => l.startsWith(mod + '.ko'))) return 'builtin';
  throw new Error(`guest kernel ${k.version}: module ${mod} neither a file nor built in`);
}

function initScript(moduleNames: string[], body: string): string {
  return `#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
result() { echo "${MARK_RESULT} $*"; }
# wait_up DEV SECS: wait until DEV exists
wait_dev() { n=0; while [ ! -e /sys/class/net/$1 ] && [ $n -lt $(( $2 * 10 )) ]; do usleep 100000; n=$((n+1)); done; [ -e /sys/class/net/$1 ]; }
# ping_until IP SECS [SIZE]: ping once per try until a reply or SECS elapsed; 0 on success
ping_until() { end=$(( $(date +%s) + $2 )); while [ $(date +%s) -lt $end ]; do
  if ping -c 1 -W 1 \${3:+-s $3} $1 >/dev/null 2>&1; then return 0; fi; sleep 0.2 2>/dev/null || sleep 1; done; return 1; }
for m in ${moduleNames.join(' ')}; do
  insmod /lib/modules/$m.ko || echo "VHOSTD-INSMOD-FAILED $m"
done
echo "${MARK_BOOTED} uptime=$(cut -d' ' -f1 /proc/uptime)"
(
${body}
)
echo "${MARK_DONE} rc=$?"
sync
poweroff -f
`;
}

export interface InitramfsOptions {
  /** Module paths relative to /lib/modules/<v>, without .ko (default VIRTIO_MODULES). */
  modules?: string[];
  /** Extra files: guest path -> host file path or content. */
  files?: Record<string, { src?: string; data?: string | Buffer; mode?: number }>;
}

/** Build (or reuse from cache) an initramfs that runs `body` as the test; returns its path. */
export async function buildInitramfs(body: string, opts: InitramfsOptions = {}): Promise<string> {
  const k = findGuestKernel();
  if (!k) throw new Error('no guest kernel (see peers.ts findGuestKernel)');
  const bb = findStaticBusybox();
  if (!bb) throw new Error('no static busybox');

  const mods = (opts.modules ?? VIRTIO_MODULES).map((m) => ({ m, file: resolveModule(k, m) }));
  const loadable = mods.filter((x) => x.file !== 'builtin');
  const names = loadable.map((x) => path.basename(x.m));
  const init = initScript(names, body);

  const h = createHash('sha256');
  h.update('v1\0' + init + '\0' + k.version + '\0' + bb);
  const stamp = (f: string) => {
    const s = statSync(f);
    h.update(`${f}:${s.size}:${s.mtimeMs}\0`);
  };
  stamp(bb);
  for (const x of loadable) stamp(x.file);
  for (const [gp, f] of Object.entries(opts.files ?? {})) {
    h.update(gp + '\0' + (f.mode ?? 0o644) + '\0');
    if (f.src) stamp(f.src);
    else h.update(f.data ?? '');
  }
  const key = h.digest('hex').slice(0, 20);
  const out = path.join(cacheDir('initramfs'), `${k.version}-${key}.cpio.gz`);
  if (existsSync(out)) return out;

  const dirs = ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'tmp', 'run', 'lib', 'lib/modules', 'mnt', 'etc'];
  const entries: CpioEntry[] = dirs.map((d) => ({ name: d, mode: 0o040755 }));
  entries.push({ name: 'dev/console', mode: 0o020600, rdev: [5, 1] });
  entries.push({ name: 'dev/null', mode: 0o020666, rdev: [1, 3] });
  entries.push({ name: 'bin/busybox', mode: 0o100755, data: readFileSync(bb) });
  entries.push({ name: 'bin/sh', mode: 0o120777, data: Buffer.from('busybox') });
  for (const x of loadable) entries.push({ name: `lib/modules/${path.basename(x.m)}.ko`, mode: 0o100644, data: readModule(x.file as string) });
  const madeDirs = new Set(dirs);
  for (const [gp, f] of Object.entries(opts.files ?? {})) {
    const rel = gp.replace(/^\/+/, '');
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!madeDirs.has(d)) {
        madeDirs.add(d);
        entries.push({ name: d, mode: 0o040755 });
      }
    }
    const data = f.src ? readFileSync(f.src) : Buffer.from(f.data ?? '');
    entries.push({ name: rel, mode: 0o100000 | (f.mode ?? 0o644), data });
  }
  entries.push({ name: 'init', mode: 0o100755, data: Buffer.from(init) });

  const gz = gzipSync(cpioNewc(entries), { level: 6 });
  const tmp = `${out}.${process.pid}.tmp`;
  writeFileSync(tmp, gz);
  renameSync(tmp, out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// QEMU

export interface GuestNetdev {
  socket: string;
  mac?: string; // default 52:54:00:00:<guest idx>:<n>
  hostMtu?: number;
  queues?: number; // vhost-user queue pairs (adds mq=on,vectors=0)
  /** Extra virtio-net-pci properties appended to -device, e.g. 'csum=off,guest_csum=off'. */
  deviceProps?: string;
}
export interface GuestDisk {
  socket: string;
  numQueues?: number;
}
export interface GuestOptions {
  name: string;
  initrd: string;
  netdevs?: GuestNetdev[];
  disks?: GuestDisk[];
  memMiB?: number; // default 256
  /** Guest RAM in KiB, for a size that is not a whole number of MiB (overrides memMiB; see migration.ts). */
  memKiB?: number;
  /** Client chardev reconnect: true = 1 s, or a number of seconds. */
  reconnect?: boolean | number;
  appendCmdline?: string;
  extraArgs?: string[];
  /** Keep the virtio-net iPXE option ROM (default false: `romfile=`; saves ~1-2 s under TCG). */
  optionRom?: boolean;
  /** Firmware: 'seabios' (QEMU default) or 'qboot' (/usr/share/qemu/qboot.rom, faster). Default 'seabios'. */
  bios?: 'seabios' | 'qboot';
  /** Echo serial output to stderr as it arrives (also VHOSTD_GUEST_ECHO=1). */
  echo?: boolean;
  /**
   * Arguments that attach the guest, used exactly as given (e.g. `vhostctl qemu-args` output): the shared memory
   * backend and every -chardev/-netdev/-device. The harness then adds no memory backend, no -m (QEMU takes the RAM
   * size from the backend) and no devices of its own; `netdevs`, `disks`, `memMiB` and `reconnect` must be unset.
   */
  attachArgs?: string[];
}

export interface Guest {
  proc: ChildProcess;
  args: string[];
  startedAt: number;
  /** Serial console + QEMU stderr so far (\r stripped). */
  output(): string;
  /** Resolves with the first match in the output; rejects on timeout or QEMU exit. */
  waitFor(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Resolves when QEMU exits. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** All `VHOSTD-RESULT:` lines parsed so far. */
  results(): Record<string, string>[];
  kill(): Promise<void>;
}

export function qemuArgs(o: GuestOptions): string[] {
  const k = findGuestKernel();
  if (!k) throw new Error('no guest kernel');
  const mem = o.memKiB !== undefined ? `${o.memKiB}K` : `${o.memMiB ?? 256}M`;
  const rc = o.reconnect === true ? 1 : typeof o.reconnect === 'number' ? o.reconnect : 0;
  const boot = [
    '-nographic', '-no-reboot', '-nic', 'none',
    '-kernel', k.vmlinuz, '-initrd', o.initrd,
    '-append', `console=ttyS0 quiet panic=-1 ${o.appendCmdline ?? ''}`.trim(),
  ];
  const machine = ['-name', o.name, '-accel', 'tcg', '-cpu', 'max', '-M', 'q35', '-smp', '1'];
  if (o.attachArgs) {
    if (o.netdevs?.length || o.disks?.length || o.memMiB !== undefined || o.memKiB !== undefined || o.reconnect !== undefined) {
      throw new Error('attachArgs: the attaching arguments come from outside; do not also set netdevs, disks, memMiB or reconnect');
    }
    return [...machine, ...boot, ...(o.bios === 'qboot' ? ['-bios', 'qboot.rom'] : []), ...o.attachArgs, ...(o.extraArgs ?? [])];
  }
  const args = [
    ...machine, '-m', mem,
    '-object', `memory-backend-memfd,id=mem,size=${mem},share=on`, '-machine', 'memory-backend=mem',
    ...boot,
  ];
  // default MACs: unique per process and guest: 52:54:00:<pid>:<guest#>:<nic#>
  const gi = `${(process.pid & 0xff).toString(16).padStart(2, '0')}:${(guestSeq++ & 0xff).toString(16).padStart(2, '0')}`;
  (o.netdevs ?? []).forEach((n, i) => {
    const mac = n.mac ?? `52:54:00:${gi}:${(i + 1).toString(16).padStart(2, '0')}`;
    args.push('-chardev', `socket,id=nc${i},path=${n.socket}${rc ? `,reconnect=${rc}` : ''}`);
    args.push('-netdev', `vhost-user,id=n${i},chardev=nc${i}${n.queues && n.queues > 1 ? `,queues=${n.queues}` : ''}`);
    let dev = `virtio-net-pci,netdev=n${i},mac=${mac},vectors=0`;
    if (n.hostMtu) dev += `,host_mtu=${n.hostMtu}`;
    if (n.queues && n.queues > 1) dev += ',mq=on';
    if (!o.optionRom) dev += ',romfile=';
    if (n.deviceProps) dev += `,${n.deviceProps}`;
    args.push('-device', dev);
  });
  (o.disks ?? []).forEach((d, i) => {
    args.push('-chardev', `socket,id=dc${i},path=${d.socket}${rc ? `,reconnect=${rc}` : ''}`);
    args.push('-device', `vhost-user-blk-pci,chardev=dc${i},vectors=0${d.numQueues ? `,num-queues=${d.numQueues}` : ''}`);
  });
  if (o.bios === 'qboot') args.push('-bios', 'qboot.rom');
  args.push(...(o.extraArgs ?? []));
  return args;
}

let guestSeq = 0;

export function startGuest(o: GuestOptions): Guest {
  const args = qemuArgs(o);
  const proc = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const startedAt = Date.now();
  let out = '';
  const echo = o.echo ?? process.env.VHOSTD_GUEST_ECHO === '1';
  const waiters = new Set<() => void>();
  const onData = (b: Buffer) => {
    const s = b.toString('utf8').replace(/\r/g, '');
    out += s;
    if (echo) process.stderr.write(s.replace(/^/gm, `[${o.name}] `));
    for (const w of [...waiters]) w();
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      for (const w of [...waiters]) w();
      resolve(exitInfo);
    });
    proc.on('error', (err) => {
      out += `\n[spawn error] ${err.message}\n`;
      exitInfo = { code: -1, signal: null };
      for (const w of [...waiters]) w();
      resolve(exitInfo);
    });
  });

  const tail = () => out.slice(-3000);
  const waitFor = (re: RegExp, timeoutMs: number) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        // match complete lines only, so `.*` never captures half a line
        const m = out.slice(0, out.lastIndexOf('\n') + 1).match(re);
        if (m) {
          done();
          resolve(m);
        } else if (exitInfo) {
          done();
          reject(new Error(`guest ${o.name} exited (${JSON.stringify(exitInfo)}) before ${re}; output tail:\n${tail()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`guest ${o.name}: timeout ${timeoutMs} ms waiting for ${re}; output tail:\n${tail()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });

  const kill = async () => {
    if (exitInfo) return;
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  };

  return { proc, args, startedAt, output: () => out, waitFor, exited, results: () => parseResults(out), kill };
}

/** Parse `VHOSTD-RESULT: k=v k2=v2` lines into objects (bare words become key=''). */
export function parseResults(output: string): Record<string, string>[] {
  const res: Record<string, string>[] = [];
  for (const line of output.split('\n')) {
    const i = line.indexOf(MARK_RESULT);
    if (i < 0) continue;
    const r: Record<string, string> = {};
    for (const tok of line.slice(i + MARK_RESULT.length).trim().split(/\s+/)) {
      if (!tok) continue;
      const eq = tok.indexOf('=');
      if (eq < 0) r[tok] = '';
      else r[tok.slice(0, eq)] = tok.slice(eq + 1);
    }
    res.push(r);
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// Ready-made script bodies

/** Bring eth0 up and report link state / mtu / mac. Result: `link dev=eth0 oper=.. mtu=.. mac=..`. */
export function linkUpBody(dev = 'eth0'): string {
  return `wait_dev ${dev} 10 || { result link dev=${dev} missing=1; exit 1; }
ip link set ${dev} up
n=0; while [ "$(cat /sys/class/net/${dev}/operstate 2>/dev/null)" != up ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done
ip link show ${dev}
result link dev=${dev} oper=$(cat /sys/class/net/${dev}/operstate) carrier=$(cat /sys/class/net/${dev}/carrier) mtu=$(cat /sys/class/net/${dev}/mtu) mac=$(cat /sys/class/net/${dev}/address)`;
}

export interface PingBodyOptions {
  ip: string; // e.g. 10.0.0.1/24
  peer: string; // e.g. 10.0.0.2
  dev?: string;
  /** Retry budget for the first reply, seconds (TCG + ARP is slow). Default 60. */
  timeoutS?: number;
  /** After the verdict, stay up this long so the other guest can finish. Default 30. */
  lingerS?: number;
  mtu?: number;
  /** Extra pings after the first reply: `ping -c count -s size` (busybox: no -M do). */
  size?: number;
  count?: number;
}

/**
 * Configure IP, ping the peer until it answers (or timeoutS), then report
 * `VHOSTD-RESULT: ping=ok|fail peer=.. rx=N/M waited=S`, linger, power off.
 */
export function pingBody(p: PingBodyOptions): string {
  const dev = p.dev ?? 'eth0';
  const count = p.count ?? 3;
  // busybox ping has no -M (don't-fragment): callers prove frame sizes from vhostd's byte counters instead.
  const size = p.size ? ` -s ${p.size}` : '';
  return `wait_dev ${dev} 10 || { result ping=fail reason=no-${dev}; exit 1; }
ip link set lo up
${p.mtu ? `ip link set ${dev} mtu ${p.mtu}` : ''}
ip link set ${dev} up
ip addr add ${p.ip} dev ${dev}
t0=$(date +%s)
if ping_until ${p.peer} ${p.timeoutS ?? 60}; then
  out=$(ping -c ${count} -W 2${size} ${p.peer} 2>&1)
  rx=$(echo "$out" | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
  result ping=ok peer=${p.peer} rx=\${rx:-0}/${count} waited=$(( $(date +%s) - t0 ))
else
  result ping=fail peer=${p.peer} waited=$(( $(date +%s) - t0 ))
  ip neigh show
  cat /proc/net/dev
fi
sleep ${p.lingerS ?? 30}`;
}
