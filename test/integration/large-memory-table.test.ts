/**
 * A large memory table is mapped over several event-loop turns (src/memory/mmap-regions.ts mapRegions): V8 runs a
 * full GC after each 1 GiB window it is handed, so a 64 GiB table mapped in one go held the loop (and every other
 * device) for the whole of it. A front-end may send such a table on a sparse memfd that costs it nothing.
 * Deterministic: the test counts event-loop turns while the table is mapped, and mappings in /proc/self/maps.
 */
import fs from 'node:fs';
import { afterEach, describe, expect, test } from 'vitest';
import { loadNative } from '../../src/native/binding.js';
import { MAP_WINDOWS_PER_TURN } from '../../src/memory/mmap-regions.js';
import { FakeFrontend } from '../helpers/fake-frontend.js';
import { NetBackendFixture, settle, waitFor } from '../helpers/backend-fixture.js';

const GiB = 2 ** 30;
const TABLE = 64 * GiB;

function mappings(name: string): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`memfd:${name}`)).length;
}

/** Count event-loop turns until stop() is called. */
function turnCounter(): { stop(): number } {
  let turns = 0;
  let running = true;
  const tick = (): void => {
    turns++;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  return {
    stop() {
      running = false;
      return turns;
    },
  };
}

describe('a 64 GiB memory table', () => {
  let fx: NetBackendFixture | null = null;
  let fe: FakeFrontend | null = null;
  let fd = -1;
  afterEach(() => {
    fe?.close();
    fe = null;
    fx?.close();
    fx = null;
    if (fd >= 0) loadNative().close(fd);
    fd = -1;
  });

  async function connect(name: string): Promise<FakeFrontend> {
    fx = new NetBackendFixture(1);
    fe = FakeFrontend.connect(fx.socket(0));
    await fe.qemuNetInit([]);
    expect(fe.replyAck).toBe(true);
    fd = loadNative().memfdCreate(name, TABLE);
    return fe;
  }

  test('is mapped a few windows per event-loop turn, then serves; every window is unmapped at disconnect', async () => {
    const f = await connect('big-table');
    const turns = turnCounter();
    const ack = await f.setMemTable([{ gpa: 0, size: TABLE, uva: 0x7f00_0000_0000, mmapOffset: 0 }], [fd]);
    const n = turns.stop();
    expect(ack).toBe(0n);
    expect(mappings('big-table')).toBe(TABLE / GiB);
    // In one turn before; now at least one turn per MAP_WINDOWS_PER_TURN windows.
    expect(n).toBeGreaterThanOrEqual(TABLE / GiB / MAP_WINDOWS_PER_TURN - 1);
    expect(await f.getQueueNum()).toBe(1n); // the session goes on
    f.close();
    await waitFor(() => !fx!.servers[0].connected, 'the back-end to see the disconnect');
    await settle();
    expect(mappings('big-table')).toBe(0);
  });

  test('a front-end that disconnects while its table is being mapped leaves no mapping behind', async () => {
    const f = await connect('big-table-gone');
    void f.setMemTable([{ gpa: 0, size: TABLE, uva: 0x7f00_0000_0000, mmapOffset: 0 }], [fd]).catch(() => undefined);
    await waitFor(() => mappings('big-table-gone') > 0, 'the mapping to start', 10_000);
    const mappedAtClose = mappings('big-table-gone');
    f.close();
    // The front-end went away part way through: some windows were mapped, not all of them.
    expect(mappedAtClose).toBeLessThan(TABLE / GiB);
    await waitFor(() => !fx!.servers[0].connected, 'the back-end to see the disconnect');
    await settle(10);
    expect(mappings('big-table-gone')).toBe(0);
  });
});
