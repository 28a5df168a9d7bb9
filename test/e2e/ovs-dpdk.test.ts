/**
 * Real peer: Open vSwitch with DPDK, the anchor of the net benchmarks (test/e2e/support/ovs-dpdk.ts). It comes up
 * without hugepages in a temp dir, pauses and resumes, DPDK testpmd (net_virtio_user, server=1) passes frames through its NORMAL
 * learning bridge both ways, its MAC table learns and `fdb/flush` empties it, and stopping leaves no process, no
 * temp dir and no DPDK run dir behind.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, test } from 'vitest';
import { OvsDpdk } from './support/ovs-dpdk.js';
import { requirePeer } from './support/peers.js';

const skip = requirePeer('testpmd', 'ovs');

/** Process ids whose command line mentions `s` (pgrep -f), without this process. */
function pgrep(s: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', s], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number)
      .filter((p) => p !== process.pid);
  } catch {
    return []; // exit 1: no match
  }
}

/** proc(5) state letter of `pid` (T: stopped by a signal). */
const procState = (pid: number): string => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
};

const fdbEntries = (text: string): number => text.split('\n').filter((l) => /^\s*\d+\s+\d+\s+[0-9a-f:]{17}\s/.test(l)).length;

describe.skipIf(skip !== null)('Open vSwitch with DPDK as a peer', () => {
  test('forwards testpmd frames between two dpdkvhostuserclient ports, flushes its MAC table, and cleans up', async () => {
    const prefix = `e2e-ovs-${process.pid}`;
    const ovs = new OvsDpdk({ prefix, core: 1, ports: ['vu0', 'vu1'] });
    let pids: number[] = [];
    try {
      await ovs.start();
      pids = ovs.pids();
      expect(pids).toHaveLength(2);
      await ovs.warmUp();
      expect(fdbEntries(await ovs.appctl('fdb/show', 'br0'))).toBe(0);
      // Frozen between benchmark runs (its PMD thread would spin on the shared core), and back.
      await ovs.pause();
      expect(procState(ovs.vswitchdPid())).toBe('T');
      await ovs.resume();
      expect(procState(ovs.vswitchdPid())).not.toBe('T');

      const tp = ovs.driver(`${prefix}-drv`, 'macswap', ['--port-topology=loop']);
      let fin;
      let live;
      try {
        await tp.waitForSample((s) => s.ports.length === 2 && s.ports.every((p) => p.rxPackets > 10_000), 45_000);
        // OVS counts a vhost-user port only while its device is up: read them before the driver stops.
        live = await Promise.all(['vu0', 'vu1'].map((p) => ovs.portStats(p)));
      } finally {
        fin = await tp.stop();
      }
      // Both directions: each testpmd port received what the other sent, switched by OVS.
      expect(fin.ports).toHaveLength(2);
      for (const p of fin.ports) expect(p.rxPackets).toBeGreaterThan(10_000);
      // OVS's own counters agree that the frames crossed it (rx on a vhost port = frames the driver sent into it).
      for (const c of live) {
        expect(c.rxPackets).toBeGreaterThan(10_000);
        expect(c.txPackets).toBeGreaterThan(10_000);
      }
      // The NORMAL flow learnt the source MACs; a flush empties the table for the next timed run.
      expect(fdbEntries(await ovs.appctl('fdb/show', 'br0'))).toBeGreaterThan(0);
      await ovs.flushFdb();
      expect(fdbEntries(await ovs.appctl('fdb/show', 'br0'))).toBe(0);
    } finally {
      await ovs.stop();
    }
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(pgrep(ovs.dir)).toEqual([]);
    expect(pgrep(prefix)).toEqual([]);
    expect(fs.existsSync(ovs.dir)).toBe(false);
    expect(fs.existsSync(`/var/run/dpdk/${prefix}`)).toBe(false);
  }, 60_000);
});
