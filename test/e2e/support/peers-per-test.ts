/**
 * What one e2e test starts (QEMU guests, the daemon), torn down after that test whatever happened in it: guests
 * killed first (they hold the daemon's sockets), then the daemon stopped and its tmp dir removed.
 */
import { afterEach } from 'vitest';
import type { Guest } from './guest.js';
import { VhostdProcess } from './vhostd-process.js';

export class TestPeers {
  readonly guests: Guest[] = [];
  vhostd: VhostdProcess | null = null;

  /** Start the daemon on `conf`; a later call (e.g. a restart after kill()) replaces the one torn down. */
  async startVhostd(conf: string, opts?: ConstructorParameters<typeof VhostdProcess>[1]): Promise<VhostdProcess> {
    const v = new VhostdProcess(conf, opts);
    this.vhostd = v;
    await v.start();
    return v;
  }

  async teardown(): Promise<void> {
    await Promise.all(this.guests.splice(0).map((g) => g.kill()));
    await this.vhostd?.stop();
    this.vhostd?.cleanup();
    this.vhostd = null;
  }
}

/** Call once in a describe block: returns the peers of the current test, torn down after each test. */
export function peersPerTest(): TestPeers {
  const peers = new TestPeers();
  afterEach(() => peers.teardown());
  return peers;
}
