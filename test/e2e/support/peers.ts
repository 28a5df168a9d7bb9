// Detection of the real peers used by the e2e tests and benchmarks (QEMU, DPDK testpmd, a guest
// kernel, a static busybox, qemu-storage-daemon), and the skip/fail policy for a missing one.
//
//   const skip = requirePeer('qemu', 'kernel', 'busybox');
//   describe.skipIf(skip !== null)('guest', () => { ... });
//
// requirePeer() returns null when everything is present, otherwise a reason string (after
// console.warn-ing it). When process.env.CI === 'true' a missing peer throws instead, so the
// test run fails rather than silently skipping.
import { accessSync, constants, existsSync, openSync, readSync, closeSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { OVS_VSWITCHD_DPDK } from './ovs-dpdk.js';

export type PeerName = 'qemu' | 'testpmd' | 'kernel' | 'busybox' | 'qsd' | 'ovs';

/** For each peer: null when usable, else the reason it is not. */
export type PeerStatus = Record<PeerName, string | null>;

const INSTALL_HINT =
  'run `bash scripts/install-peers.sh` as root (Debian: qemu-system-x86 qemu-utils dpdk-dev linux-image-amd64 busybox-static openvswitch-switch-dpdk)';

/** Absolute path of an executable found on PATH (plus sbin dirs), or null. */
export function which(cmd: string): string | null {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).concat(['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']);
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, cmd);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return null;
}

/** True when the ELF file has no PT_INTERP program header (statically linked). */
export function isStaticElf(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const eh = Buffer.alloc(64);
    readSync(fd, eh, 0, 64, 0);
    if (eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2 || eh[5] !== 1) return false; // ELF64 LE only
    const phoff = Number(eh.readBigUInt64LE(0x20));
    const phentsize = eh.readUInt16LE(0x36);
    const phnum = eh.readUInt16LE(0x38);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) return false;
    return true;
  } finally {
    closeSync(fd);
  }
}

/** Candidate static busybox binaries (busybox-static installs /bin/busybox). */
export function findStaticBusybox(): string | null {
  const cands = [process.env.VHOSTD_BUSYBOX, '/bin/busybox', '/usr/bin/busybox', '/usr/lib/initramfs-tools/bin/busybox'].filter(
    (p): p is string => !!p,
  );
  for (const c of cands) {
    try {
      if (existsSync(c) && isStaticElf(c)) return c;
    } catch {
      /* unreadable */
    }
  }
  return null;
}

export interface GuestKernel {
  version: string;
  vmlinuz: string;
  modulesDir: string; // /lib/modules/<version>
}

/** Newest /boot/vmlinuz-<v> that has a readable image and /lib/modules/<v> with virtio_net. */
export function findGuestKernel(): GuestKernel | null {
  const forced = process.env.VHOSTD_GUEST_KERNEL; // a version string, e.g. 6.1.0-56-amd64
  let versions: string[];
  try {
    versions = readdirSync('/boot')
      .filter((f) => f.startsWith('vmlinuz-'))
      .map((f) => f.slice('vmlinuz-'.length));
  } catch {
    return null;
  }
  if (forced) versions = versions.filter((v) => v === forced);
  versions.sort((a, b) => b.localeCompare(a, undefined, { numeric: true }));
  for (const v of versions) {
    const vmlinuz = `/boot/vmlinuz-${v}`;
    const modulesDir = `/lib/modules/${v}`;
    try {
      accessSync(vmlinuz, constants.R_OK);
    } catch {
      continue;
    }
    const netDir = path.join(modulesDir, 'kernel/drivers/net');
    let hasVirtioNet = false;
    try {
      hasVirtioNet = readdirSync(netDir).some((f) => f.startsWith('virtio_net.ko'));
    } catch {
      /* no modules */
    }
    if (!hasVirtioNet) {
      try {
        const builtin = readFileSync(path.join(modulesDir, 'modules.builtin'), 'utf8');
        hasVirtioNet = /virtio_net\.ko/.test(builtin);
      } catch {
        /* ignore */
      }
    }
    if (hasVirtioNet) return { version: v, vmlinuz, modulesDir };
  }
  return null;
}

let cached: PeerStatus | null = null;

/** Detect all peers (cached per process; pass refresh=true to re-probe). */
export function peerStatus(refresh = false): PeerStatus {
  if (cached && !refresh) return cached;
  const st: PeerStatus = { qemu: null, testpmd: null, kernel: null, busybox: null, qsd: null, ovs: null };

  if (!which('qemu-system-x86_64')) st.qemu = `qemu-system-x86_64 not found; ${INSTALL_HINT}`;
  if (!which('qemu-storage-daemon')) st.qsd = `qemu-storage-daemon not found (package qemu-utils); ${INSTALL_HINT}`;

  const tp = which('dpdk-testpmd');
  if (!tp) st.testpmd = `dpdk-testpmd not found (Debian 12 ships it in dpdk-dev, not dpdk); ${INSTALL_HINT}`;

  if (!findGuestKernel()) {
    const anyImage = (() => {
      try {
        return readdirSync('/boot').some((f) => f.startsWith('vmlinuz-'));
      } catch {
        return false;
      }
    })();
    st.kernel = process.env.VHOSTD_GUEST_KERNEL
      ? `VHOSTD_GUEST_KERNEL=${process.env.VHOSTD_GUEST_KERNEL}: no usable /boot/vmlinuz-<that> with virtio_net modules`
      : anyImage
      ? 'no readable /boot/vmlinuz-<v> with matching /lib/modules/<v> containing virtio_net (unreadable image? run as root or chmod)'
      : `no guest kernel in /boot; ${INSTALL_HINT}`;
  }

  const ovsTools = ['ovsdb-tool', 'ovsdb-server', 'ovs-vsctl', 'ovs-appctl'].filter((t) => !which(t));
  if (!existsSync(OVS_VSWITCHD_DPDK) || ovsTools.length) {
    st.ovs = `Open vSwitch with DPDK not found (${[...(existsSync(OVS_VSWITCHD_DPDK) ? [] : [OVS_VSWITCHD_DPDK]), ...ovsTools].join(', ')}; package openvswitch-switch-dpdk); ${INSTALL_HINT}`;
  }

  if (!findStaticBusybox()) st.busybox = `no statically linked busybox at /bin/busybox; ${INSTALL_HINT}`;

  cached = st;
  return st;
}

/**
 * Policy helper for vitest. Returns null when all named peers are usable, else a reason.
 * CI=true: throws (the test fails). Otherwise: console.warn()s the reason and returns it, so
 * callers can `describe.skipIf(reason !== null)` / `it.skipIf(...)` or `ctx.skip()`.
 */
export function requirePeer(...names: PeerName[]): string | null {
  const st = peerStatus();
  const missing = names.filter((n) => st[n] !== null).map((n) => `${n}: ${st[n]}`);
  if (missing.length === 0) return null;
  const reason = `missing test peer(s) — ${missing.join('; ')}`;
  if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: a missing peer is a failure, not a skip)`);
  console.warn(`[vhostd e2e] skipping: ${reason}`);
  return reason;
}

/** Minimal shape of vitest's test context we need (avoids importing vitest here). */
interface SkippableContext {
  skip(note?: string): void;
}

/**
 * In-test variant: `it('x', async (ctx) => { skipUnlessPeers(ctx, 'qemu'); ... })`.
 * Missing peer: throws when CI=true (this test fails), otherwise ctx.skip(reason).
 */
export function skipUnlessPeers(ctx: SkippableContext, ...names: PeerName[]): void {
  const reason = requirePeer(...names);
  if (reason !== null) ctx.skip(reason);
}
