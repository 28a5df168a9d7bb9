/**
 * Network namespaces for the vport tests: detection with the peers.ts skip/fail policy (CI=true: a missing
 * capability is a failure, not a skip), and a namespace made and removed by the test.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { findStaticBusybox, which } from '../e2e/support/peers.js';

/** null when this process can create taps and network namespaces, else the reason it cannot. */
export function netnsStatus(): string | null {
  if (process.getuid?.() !== 0) return 'not root (a tap and a network namespace need CAP_NET_ADMIN)';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing (modprobe tun)';
  const probe = `vhostd-probe-${process.pid}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
  } catch (err) {
    return `\`ip netns add\` does not work here: ${(err as Error).message.split('\n')[0]} (install iproute2, run as root)`;
  }
  return null;
}

/** Like requirePeer(): null when usable; else warns and returns the reason, or throws when CI=true. */
export function requireNetns(): string | null {
  const reason = netnsStatus();
  if (reason === null) return null;
  if (process.env.CI === 'true') throw new Error(`vport tests: ${reason} (CI=true: a missing capability is a failure, not a skip)`);
  console.warn(`[vhostd vport] skipping: ${reason}`);
  return reason;
}

/** A network namespace owned by the test. */
export class Netns {
  constructor(readonly name: string) {
    execFileSync('ip', ['netns', 'add', name], { stdio: 'pipe' });
    this.ip('link', 'set', 'lo', 'up');
  }

  /** `ip -n NS ARGS...`; returns stdout. */
  ip(...args: string[]): string {
    return execFileSync('ip', ['-n', this.name, ...args], { encoding: 'utf8', stdio: 'pipe' });
  }

  /** Move host interface `dev` into this namespace, give it `cidr` and bring it up. */
  adopt(dev: string, cidr: string): void {
    execFileSync('ip', ['link', 'set', 'dev', dev, 'netns', this.name], { stdio: 'pipe' });
    this.ip('addr', 'add', cidr, 'dev', dev);
    this.ip('link', 'set', 'dev', dev, 'up');
  }

  /** `ping -c COUNT -W SECS ADDR` inside the namespace: iputils ping if installed, else static busybox's. */
  pingCmd(addr: string, count: number, waitS: number): [string, string[]] {
    const args = ['-c', String(count), '-W', String(waitS), addr];
    if (which('ping')) return this.exec(['ping', ...args]);
    const bb = findStaticBusybox();
    if (!bb) throw new Error('no ping and no static busybox on this host');
    return this.exec([bb, 'ping', ...args]);
  }

  /** Argument vector running `cmd` inside the namespace (for spawn/execFile). */
  exec(cmd: string[]): [string, string[]] {
    return ['ip', ['netns', 'exec', this.name, ...cmd]];
  }

  /** Remove the namespace (interfaces inside it go with it or back to their owner). Idempotent. */
  remove(): void {
    try {
      execFileSync('ip', ['netns', 'del', this.name], { stdio: 'pipe' });
    } catch {
      /* already gone */
    }
  }
}
