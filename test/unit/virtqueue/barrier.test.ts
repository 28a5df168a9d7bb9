/**
 * barrier.ts: the two store→load windows (publish used.idx → read used_event/flags; re-arm kicks → re-read
 * avail.idx) with a driver step injected inside the window through the onWindow test hooks. With the fence the
 * wakeup survives; the no-fence mutant loses it, which is what the hang tests rely on detecting.
 */
import { describe, test, expect, afterEach, vi } from 'vitest';
import { fullFence, getTestHooks, hookDelayDue, parseTestHooks, setTestHooks } from '../../../src/virtqueue/barrier.js';
import { DescriptorChain } from '../../../src/virtqueue/descriptor-chain.js';
import { vringNeedEvent } from '../../../src/virtqueue/event-idx.js';
import { SplitQueue } from '../../../src/virtqueue/split-queue.js';
import { standardMemory } from '../../helpers/driver-memory.js';
import { DriverSplitQueue } from '../../helpers/driver-queue.js';

afterEach(() => setTestHooks(null));

function setup(eventIdx: boolean) {
  const mem = standardMemory();
  const drv = new DriverSplitQueue({ mem, size: 8, eventIdx, seed: 3 });
  const q = new SplitQueue(mem, drv.queueOptions());
  return { drv, q, chain: new DescriptorChain(8) };
}

/**
 * The lost-interrupt race (docs/architecture.md §7): the device publishes used.idx and reads the driver's
 * suppression state; inside that window the driver re-enables interrupts and re-checks used.idx. A correct device
 * either signals or the driver sees the new entry. Returns whether the wakeup survived.
 */
function publishRace(eventIdx: boolean, noFence: boolean): { notified: boolean; driverSawNew: boolean } {
  const { drv, q, chain } = setup(eventIdx);
  // Arm the signalled state with one completed entry (the first signal is always sent).
  drv.addChain([{ len: 8, write: true }]);
  q.pop(chain);
  q.addUsed(chain.head, 8);
  q.publishUsed();
  drv.collectUsed();
  // Driver goes to poll mode: interrupts off (OpenBSD-style used_event far ahead, or NO_INTERRUPT).
  if (eventIdx) drv.setUsedEvent((drv.lastUsed + 0x8000) & 0xffff);
  else drv.setNoInterrupt(true);
  drv.addChain([{ len: 8, write: true }]);
  q.pop(chain);
  q.addUsed(chain.head, 8);
  let driverSawNew = false;
  setTestHooks({
    noFence,
    onPublishWindow: () => {
      // Driver runs out of work: re-enable interrupts, (its own full barrier), re-check used.idx.
      if (eventIdx) drv.setUsedEvent(drv.lastUsed);
      else drv.setNoInterrupt(false);
      driverSawNew = drv.usedIdx() !== drv.lastUsed;
    },
  });
  const notified = q.publishUsed();
  return { notified, driverSawNew };
}

/**
 * The lost-kick race: the device re-arms kicks and re-reads avail.idx; inside that window the driver publishes
 * a buffer and decides whether to kick. Either the device's re-check sees it or the driver kicks.
 */
function enableRace(eventIdx: boolean, noFence: boolean): { recheck: boolean; kicked: boolean } {
  const { drv, q, chain } = setup(eventIdx);
  // Ring restarted at base 5 (SET_VRING_BASE): avail_event in memory is stale (0), NO_NOTIFY set by disable.
  drv.setAvailIdx(5);
  drv.needsKick();
  q.lastAvailIdx = 5;
  q.disableNotification();
  expect(q.pop(chain)).toBe(false);
  let kicked = false;
  setTestHooks({
    noFence,
    onEnableWindow: () => {
      drv.addChain([{ len: 8, write: true }]);
      kicked = drv.needsKick();
    },
  });
  const recheck = q.enableNotification();
  return { recheck, kicked };
}

for (const eventIdx of [false, true]) {
  describe(`store→load ordering [EVENT_IDX ${eventIdx ? 'on' : 'off'}]`, () => {
    test('publishUsed: with the fence the driver re-enabling interrupts in the window is always woken', () => {
      const r = publishRace(eventIdx, false);
      expect(r.notified || r.driverSawNew).toBe(true);
      expect(r.notified).toBe(true);
    });

    test('publishUsed: the no-fence mutant loses the interrupt (the hang tests must catch this)', () => {
      const r = publishRace(eventIdx, true);
      expect(r).toEqual({ notified: false, driverSawNew: false });
    });

    test('enableNotification: with the fence a buffer published in the window is seen or kicked', () => {
      const r = enableRace(eventIdx, false);
      expect(r).toEqual({ recheck: true, kicked: true });
    });

    test('enableNotification: the no-fence mutant loses the kick', () => {
      const r = enableRace(eventIdx, true);
      expect(r).toEqual({ recheck: false, kicked: false });
    });

    test('a delay hook between store and load does not change the decision', () => {
      setTestHooks({ delayAfterPublishUs: 200, delayAfterEnableUs: 200 });
      const { drv, q, chain } = setup(eventIdx);
      drv.addChain([{ len: 8, write: true }]);
      expect(q.pop(chain)).toBe(true);
      q.addUsed(chain.head, 8);
      expect(q.publishUsed()).toBe(true);
      drv.addChain([{ len: 8, write: true }]);
      expect(q.enableNotification()).toBe(true);
    });
  });
}

describe('barrier primitives and hooks', () => {
  test('VHOSTD_TEST_HOOKS parsing accepts the documented hooks and rejects unknown ones', () => {
    expect(parseTestHooks(undefined)).toEqual({});
    expect(parseTestHooks('no-fence, delay-after-publish-us=50,delay-after-enable-us=7')).toEqual({
      noFence: true,
      delayAfterPublishUs: 50,
      delayAfterEnableUs: 7,
    });
    expect(() => parseTestHooks('no-fences')).toThrow(/unknown or malformed hook "no-fences"/);
    expect(() => parseTestHooks('delay-after-publish-us=x')).toThrow();
  });

  test('delay-one-in=K delays about 1 pass in K, the same passes for the same hook-seed', () => {
    expect(parseTestHooks('delay-after-publish-us=500,delay-one-in=8,hook-seed=3')).toEqual({ delayAfterPublishUs: 500, delayOneIn: 8, hookSeed: 3 });
    expect(() => parseTestHooks('delay-one-in=0')).toThrow(/malformed hook "delay-one-in=0"/);
    expect(() => parseTestHooks('hook-seed=-1')).toThrow();
    const pattern = (seed: number): boolean[] => {
      setTestHooks({ delayAfterPublishUs: 1, delayOneIn: 8, hookSeed: seed });
      return Array.from({ length: 8000 }, () => hookDelayDue());
    };
    try {
      const a = pattern(3);
      const due = a.filter(Boolean).length;
      expect(due).toBeGreaterThan(800);
      expect(due).toBeLessThan(1200);
      expect(pattern(3)).toEqual(a);
      expect(pattern(4)).not.toEqual(a);
      setTestHooks({ delayAfterPublishUs: 1 });
      expect(Array.from({ length: 10 }, () => hookDelayDue()).every(Boolean)).toBe(true); // no delay-one-in: every pass
    } finally {
      setTestHooks(null);
    }
  });

  test('VHOSTD_TEST_HOOKS is read once when the module loads', async () => {
    const saved = process.env.VHOSTD_TEST_HOOKS;
    process.env.VHOSTD_TEST_HOOKS = 'no-fence,delay-after-enable-us=3';
    try {
      vi.resetModules();
      const fresh = await import('../../../src/virtqueue/barrier.js');
      expect(fresh.getTestHooks()).toEqual({ noFence: true, delayAfterEnableUs: 3 });
    } finally {
      if (saved === undefined) delete process.env.VHOSTD_TEST_HOOKS;
      else process.env.VHOSTD_TEST_HOOKS = saved;
      vi.resetModules();
    }
  });

  test('setTestHooks(null) restores the hooks from the environment', () => {
    const env = getTestHooks();
    setTestHooks({ noFence: true });
    expect(getTestHooks().noFence).toBe(true);
    setTestHooks(null);
    expect(getTestHooks()).toBe(env);
  });

  test('fullFence can be called (it is a locked RMW on a private cell)', () => {
    expect(() => fullFence()).not.toThrow();
  });

  test('vringNeedEvent follows (u16)(new - event - 1) < (u16)(new - old), across the 16-bit wrap', () => {
    expect(vringNeedEvent(0, 1, 0)).toBe(true);
    expect(vringNeedEvent(1, 1, 0)).toBe(false);
    expect(vringNeedEvent(3, 5, 2)).toBe(true);
    expect(vringNeedEvent(5, 5, 2)).toBe(false);
    expect(vringNeedEvent(0xffff, 2, 0xfffe)).toBe(true);
    expect(vringNeedEvent(0xfffd, 2, 0xfffe)).toBe(false);
    expect(vringNeedEvent(0, 0, 0)).toBe(false);
  });
});
