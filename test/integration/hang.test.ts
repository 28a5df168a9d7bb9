/**
 * Lost-notification regression: the store→load orderings in the back-end (publish used.idx, then read
 * used_event/NO_INTERRUPT; re-enable kicks, then re-read avail.idx) are what keeps a guest from losing its
 * network until `ifconfig down/up` (reference perf-anchors-and-hangs.md §3).
 *
 * vhostd runs as a child process with test hooks that sleep inside both race windows. Guest A sends one frame at
 * a time to guest B and waits until B has it; B is interrupt-only and NAPI-like (masks interrupts while it
 * "processes" for a random time, unmasks, re-checks, sleeps), A kicks only when the device asks for kicks. With
 * one frame in flight, a lost kick or a lost interrupt is a hang, caught by a watchdog.
 * The correct build must never hang; the `no-fence` mutant (the load done before the store, which is what the
 * fence forbids) must be caught. That the mutant is caught is what proves the test can fail.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import { FakeNetDriver, ethFrame } from '../helpers/fake-net-driver.js';
import { Rng } from '../helpers/driver-memory.js';
import { VhostdProcess } from '../e2e/support/vhostd-process.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);

const CONF = 'switch "s" {\n  mtu 1500\n}\nvm "a" {\n  interface { switch "s" }\n}\nvm "b" {\n  interface { switch "s" }\n}\n';
const MAC_A = 'fe:e1:ba:00:00:0a';
const MAC_B = 'fe:e1:ba:00:00:0b';
/** A frame not delivered within this time is a hang (the injected delays are 1 ms). */
const WATCHDOG_MS = 3000;

interface Outcome {
  delivered: number;
  hang: string | null;
  maxLatencyMs: number;
}

async function run(opts: { eventIdx: boolean; mutant: boolean; frames: number; seed: number }): Promise<Outcome> {
  const hooks = ['delay-after-publish-us=1000', 'delay-after-enable-us=1000', ...(opts.mutant ? ['no-fence'] : [])].join(',');
  const vhostd = new VhostdProcess(CONF, { env: { VHOSTD_TEST_HOOKS: hooks } });
  await vhostd.start();
  const a = new FakeNetDriver({ socket: vhostd.socket('a'), eventIdx: opts.eventIdx, seed: opts.seed });
  const b = new FakeNetDriver({ socket: vhostd.socket('b'), eventIdx: opts.eventIdx, seed: opts.seed + 1 });
  const rng = new Rng(opts.seed);
  try {
    await a.start();
    await b.start();
    let got = 0;
    let wake: (() => void) | null = null;
    b.startInterruptOnly((frames) => {
      got += frames.length;
      wake?.();
    }, () => rng.int(0, 2));
    // Teach the switch where B is, so A's frames are unicast.
    b.send(ethFrame(MAC_A, MAC_B, 60));
    let maxLatencyMs = 0;
    for (let k = 0; k < opts.frames; k++) {
      const t0 = performance.now();
      const want = got + 1;
      a.send(ethFrame(MAC_B, MAC_A, 60, k));
      const ok = await new Promise<boolean>((resolve) => {
        if (got >= want) return resolve(true);
        const t = setTimeout(() => resolve(false), WATCHDOG_MS);
        wake = () => {
          if (got >= want) {
            clearTimeout(t);
            resolve(true);
          }
        };
      });
      wake = null;
      if (!ok) {
        const tx = a.txState();
        const rx = b.rxState();
        const kind = tx.usedIdx !== tx.availIdx ? 'lost kick (A published TX buffers the back-end never consumed)' : rx.usedIdx !== rx.seen ? 'lost interrupt (B has used entries it was never told about)' : 'stall';
        return { delivered: k, hang: `${kind}: tx ${JSON.stringify(tx)} rx ${JSON.stringify(rx)}`, maxLatencyMs };
      }
      maxLatencyMs = Math.max(maxLatencyMs, performance.now() - t0);
    }
    return { delivered: opts.frames, hang: null, maxLatencyMs };
  } finally {
    a.close();
    b.close();
    await vhostd.stop();
    vhostd.cleanup();
  }
}

describe.skipIf(!native.ok)('lost-notification regression (interrupt-only driver, delays in the race windows)', () => {
  afterEach(() => undefined);
  for (const eventIdx of [false, true]) {
    const mode = eventIdx ? 'EVENT_IDX' : 'NO_NOTIFY/NO_INTERRUPT flags';
    test(`correct build: 300 frames, no lost kick or interrupt, no stall of a second [${mode}]`, async () => {
      const r = await run({ eventIdx, mutant: false, frames: 300, seed: 7 });
      expect(r.hang).toBeNull();
      expect(r.delivered).toBe(300);
      expect(r.maxLatencyMs).toBeLessThan(1000);
    }, 120_000);

    test(`no-fence mutant is caught: a notification is lost and the guest hangs [${mode}]`, async () => {
      const r = await run({ eventIdx, mutant: true, frames: 300, seed: 7 });
      expect(r.hang).not.toBeNull();
      expect(r.hang).toMatch(/lost (kick|interrupt)/);
    }, 120_000);
  }
});
