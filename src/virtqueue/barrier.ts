/**
 * THE single place for memory ordering between vhostd and the guest driver (docs/architecture.md §7).
 * Guest memory is an external ArrayBuffer shared with another process; plain typed-array accesses are "Unordered"
 * and the JS memory model does not know the guest as an agent, so ordering comes from what V8 emits (see fullFence):
 * acquire = Atomics.load of avail.idx, release = Atomics.store of used.idx, and fullFence() for the two store→load
 * (Dekker) orderings x86-TSO does not give: used.idx → used_event/avail.flags, avail_event/NO_NOTIFY → avail.idx
 * (VIRTIO 1.2 §2.7.7, §2.7.10; docs/architecture.md §7).
 * Test hooks (env VHOSTD_TEST_HOOKS, read once at load; setTestHooks() for unit tests): no-fence (mutant order),
 * delay-after-publish-us=N, delay-after-enable-us=N, delay-one-in=K (sleep in a window with probability 1/K, from a
 * PRNG seeded by hook-seed=S, so long runs hit the windows thousands of times without sleeping on every pass).
 * Without hooks the hot path pays one boolean check.
 */

const FENCE_CELL = new Int32Array(new SharedArrayBuffer(4));
const SLEEP_CELL = new Int32Array(new SharedArrayBuffer(4));

/**
 * Full memory barrier (store→load included): a locked RMW on a private SharedArrayBuffer cell. A locked instruction
 * on x86 orders all earlier stores before all later loads, whatever memory they touch (guest memory included).
 * Verified on Node v20.20.2 / x64 (AMD EPYC): `--print-opt-code` works in release builds and shows TurboFan calling
 * the builtins `AtomicsStore`/`AtomicsAdd` (not inlined); gdb disassembly of those embedded builtins shows
 * AtomicsAdd → `lock cmpxchg` loop and AtomicsStore (u16) → `xchg` (implicitly locked, so the seq-cst used.idx
 * store is itself already a full barrier on x64; the explicit fence stays: it names the race, is portable to
 * weaker ISAs, and is what the no-fence mutant removes).
 * Measured (same machine, 2e7 iterations, 3 runs): plain store+load 0.7 ns; Atomics.store+load 11.2 ns;
 * Atomics.store+fullFence+load 18.6 ns ⇒ the fence costs ~7.4 ns, paid once per published batch or re-arm.
 */
export function fullFence(): void {
  Atomics.add(FENCE_CELL, 0, 0);
}

/** avail.idx with acquire semantics (u16 index 1 of the avail ring view). Read ring slots only after this. */
export function loadAvailIdx(avail: Uint16Array): number {
  return Atomics.load(avail, 1);
}

/** Store used.idx with release semantics (u16 index 1 of the used ring view): used elements are written before. */
export function storeUsedIdx(used: Uint16Array, idx: number): void {
  Atomics.store(used, 1, idx & 0xffff);
}

/** Test-only behaviour switches. All off in production. */
export interface TestHooks {
  /** MUTANT: load before store in publishUsedIdx/enableAndRecheck (the reordering fullFence forbids). */
  noFence?: boolean;
  /** Sleep this many µs between used.idx store and the used_event/flags load. */
  delayAfterPublishUs?: number;
  /** Sleep this many µs between the avail_event/flags store and the avail.idx re-read. */
  delayAfterEnableUs?: number;
  /** Sleep on a window pass with probability 1/delayOneIn (default 1: every pass). */
  delayOneIn?: number;
  /** Seed of the PRNG that picks the delayed passes (default 1); the hang matrix logs it per cell. */
  hookSeed?: number;
  /** Unit tests: runs inside the publish window (between the two operations, in whichever order). */
  onPublishWindow?: (() => void) | null;
  /** Unit tests: runs inside the enable window. */
  onEnableWindow?: (() => void) | null;
}

/** Parse a VHOSTD_TEST_HOOKS value ("no-fence,delay-after-publish-us=50"). Unknown names throw. */
export function parseTestHooks(spec: string | undefined): TestHooks {
  const h: TestHooks = {};
  if (!spec) return h;
  for (const raw of spec.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const [name, value] = item.split('=', 2);
    const us = Number(value);
    if (name === 'no-fence') h.noFence = true;
    else if (name === 'delay-after-publish-us' && us >= 0) h.delayAfterPublishUs = us;
    else if (name === 'delay-after-enable-us' && us >= 0) h.delayAfterEnableUs = us;
    else if (name === 'delay-one-in' && Number.isInteger(us) && us >= 1) h.delayOneIn = us;
    else if (name === 'hook-seed' && Number.isInteger(us) && us >= 0) h.hookSeed = us;
    else throw new Error(`VHOSTD_TEST_HOOKS: unknown or malformed hook "${item}"`);
  }
  return h;
}

const envHooks = parseTestHooks(process.env.VHOSTD_TEST_HOOKS);
let hooks: TestHooks = envHooks;
let hooksActive = isActive(envHooks);
/** State of the hook PRNG (mulberry32), so a failing cell replays the same delayed passes for the same traffic. */
let hookRng = (envHooks.hookSeed ?? 1) >>> 0;

function isActive(h: TestHooks): boolean {
  return !!(h.noFence || h.delayAfterPublishUs || h.delayAfterEnableUs || h.onPublishWindow || h.onEnableWindow);
}

/** Replace the hooks (unit tests). `null` restores what VHOSTD_TEST_HOOKS said at load. */
export function setTestHooks(h: TestHooks | null): void {
  hooks = h ?? envHooks;
  hooksActive = isActive(hooks);
  hookRng = (hooks.hookSeed ?? 1) >>> 0;
}

/** The hooks in effect (read-only view). */
export function getTestHooks(): Readonly<TestHooks> {
  return hooks;
}

function hookRandom(): number {
  let t = (hookRng = (hookRng + 0x6d2b79f5) >>> 0);
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}

/** Whether this pass through a race window is delayed: 1 in delayOneIn, chosen by the seeded PRNG (exported for tests). */
export function hookDelayDue(): boolean {
  const k = hooks.delayOneIn ?? 1;
  return k <= 1 || hookRandom() % k === 0;
}

/** Sleep `us` in a race window when hookDelayDue() says so. */
function sleepUs(us: number | undefined): void {
  if (!us || !hookDelayDue()) return;
  Atomics.wait(SLEEP_CELL, 0, 0, us / 1000);
}

/**
 * Device completion, VIRTIO 1.2 §2.7.7: store used.idx (release), full fence, then
 * load the driver's suppression field `src[srcIndex]` (used_event = avail[2+size], or avail.flags = avail[0]).
 * Without the fence the load may be satisfied before the store is visible: the driver re-enables interrupts,
 * sees the old used.idx and sleeps while we read its stale "no interrupt" state: a lost call (DPDK 159793ac86,
 * Snabb c33cdd870, SPDK #3178).
 */
export function publishUsedIdx(used: Uint16Array, newIdx: number, src: Uint16Array, srcIndex: number): number {
  if (hooksActive) return publishHooked(used, newIdx, src, srcIndex);
  Atomics.store(used, 1, newIdx & 0xffff);
  fullFence();
  return src[srcIndex];
}

/**
 * Device re-arming kicks, VIRTIO 1.2 §2.7.10: store `value` at target[targetIndex]
 * (avail_event = used[2+4*size], or used.flags = used[0] to clear NO_NOTIFY), full fence, re-load avail.idx
 * (acquire). Without the fence the driver may publish in between, read the stale NO_NOTIFY/avail_event and skip
 * its kick while we read the old avail.idx and sleep: a lost kick (kernel vhost_enable_notify, cloud-hypervisor
 * PR #2179, DPDK d21d05c7a9).
 */
export function enableAndRecheck(target: Uint16Array, targetIndex: number, value: number, avail: Uint16Array): number {
  if (hooksActive) return enableHooked(target, targetIndex, value, avail);
  Atomics.store(target, targetIndex, value & 0xffff);
  fullFence();
  return Atomics.load(avail, 1);
}

function publishHooked(used: Uint16Array, newIdx: number, src: Uint16Array, srcIndex: number): number {
  const h = hooks;
  if (h.noFence) {
    const v = src[srcIndex];
    sleepUs(h.delayAfterPublishUs);
    h.onPublishWindow?.();
    Atomics.store(used, 1, newIdx & 0xffff);
    return v;
  }
  Atomics.store(used, 1, newIdx & 0xffff);
  fullFence();
  sleepUs(h.delayAfterPublishUs);
  h.onPublishWindow?.();
  return src[srcIndex];
}

function enableHooked(target: Uint16Array, targetIndex: number, value: number, avail: Uint16Array): number {
  const h = hooks;
  if (h.noFence) {
    const v = Atomics.load(avail, 1);
    sleepUs(h.delayAfterEnableUs);
    h.onEnableWindow?.();
    Atomics.store(target, targetIndex, value & 0xffff);
    return v;
  }
  Atomics.store(target, targetIndex, value & 0xffff);
  fullFence();
  sleepUs(h.delayAfterEnableUs);
  h.onEnableWindow?.();
  return Atomics.load(avail, 1);
}
