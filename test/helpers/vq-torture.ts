/**
 * vq-torture: one cell of the hang-regression matrix (docs/testing.md "The hang matrix")
 * against the real daemon (VhostdProcess) with VHOSTD_TEST_HOOKS sleeping, on a seeded 1 pass in K, inside both
 * store→load race windows (barrier.ts). Guest A streams sequence-numbered frames to guest B through the switch:
 *
 *  - A batches 1..32 frames per avail.idx store, with random spins before the store (D1) and before the kick
 *    decision (D2), kicks only when the device asks (NO_NOTIFY / avail_event), reaps TX at transmit time and sleeps
 *    on its TX interrupt only when it runs out of descriptors.
 *  - B is interrupt-only, NAPI-like: on a call it masks, polls up to a random budget, holds for a random time
 *    (none, one event-loop turn, 1-4 ms), re-arms (used_event / NO_INTERRUPT), spins (D3), fences, re-checks. It
 *    never polls otherwise, so a lost call is a stall.
 *  - The in-flight cap (frames sent, not yet received) changes per epoch: 1, 2-4, random, Q/2, Q. With cap 1 every
 *    lost notification is a hang; with larger caps batching and suppression paths run.
 *  - Lifecycle cells: guest resets during traffic (B, then A, then both: GET_VRING_BASE, new rings, start again) or
 *    SIGKILL + restart of vhostd with both guests reconnecting. Frames sent before the event completes may be lost
 *    (or, across a restart, duplicated); frames sent after it may not.
 *
 * An observer timer (not the driver: it consumes nothing) measures the pass criteria: max stall (a frame outstanding
 * and no progress), lost kicks (A legally skipped a kick, and the device did not consume within the stall threshold),
 * lost calls (B or A armed, used.idx moved past the armed index, no call within the threshold), and the ring and
 * sequence invariants (vq-torture-ring.ts, vq-torture-frame.ts). On a 1 s stall it classifies, dumps the rings and
 * recovers (forced kick / poll) so the cell continues; in mutant mode the first lost notification ends the cell.
 */
import { VhostdProcess } from '../e2e/support/vhostd-process.js';
import { Rng } from './driver-memory.js';
import { VIRTQ_DESC_F_WRITE } from '../../src/virtqueue/defs.js';
import { NET_HDR, RX_BUF, TorturePort } from './vq-torture-port.js';
import { FrameLedger, writeFrame } from './vq-torture-frame.js';
import { cellName, type CellResult, type CellSpec } from './vq-torture-matrix.js';

export type { CellResult, CellSpec, Lifecycle } from './vq-torture-matrix.js';
export { cellName } from './vq-torture-matrix.js';

const CONF = 'switch "s" {\n  mtu 1500\n}\nvm "a" {\n  interface { switch "s" }\n}\nvm "b" {\n  interface { switch "s" }\n}\n';
const AUDIT_MS = 25;
const MAX_VIOLATIONS = 50;

/** Run one cell to completion (or to the first lost notification in mutant mode). */
export async function runTortureCell(spec: CellSpec): Promise<CellResult> {
  const cell = new Cell(spec);
  try {
    return await cell.run();
  } finally {
    await cell.dispose();
  }
}

function spin(us: number): void {
  const end = performance.now() + us / 1000;
  while (performance.now() < end);
}

class Cell {
  private readonly rng: Rng;
  private readonly size: number;
  private readonly stallMs: number;
  private readonly hooks: string;
  private vhostd: VhostdProcess;
  private a!: TorturePort;
  private b!: TorturePort;
  private readonly res: CellResult;
  private readonly len = new Uint32Array(1);
  private readonly t0 = performance.now();
  private done!: () => void;
  private stopped = false;
  private audit: NodeJS.Timeout | null = null;
  private readonly ledger = new FrameLedger((w) => this.violation(w));
  private epochLeft = 0;
  private cap = 1;
  // Observer state.
  private waitingSince: number | null = null;
  private kickDebt: { idx: number; at: number } | null = null;
  private rxCrossedAt: number | null = null;
  private txCrossedAt: number | null = null;
  // Drivers.
  private aDown = false;
  private bDown = false;
  private lifecycle = false;
  private pumpQueued = false;
  private rxMasked = false;
  private rxArmed = false;
  private rxCallsAtArm = 0;
  private txArmed = false;
  private txCallsAtArm = 0;
  /** Bumped at every B reset: callbacks scheduled before it are void. */
  private bGen = 0;
  private nextEvent = 0;
  private eventNo = 0;
  private eventStart = 0;
  /** A sends nothing while the rings settle after a lifecycle event. */
  private draining = false;

  constructor(private readonly spec: CellSpec) {
    this.rng = new Rng(spec.seed);
    this.size = spec.queueSize;
    this.stallMs = spec.stallMs ?? 1000;
    const d = spec.hookDelayUs ?? 200;
    this.hooks = `delay-after-publish-us=${d},delay-after-enable-us=${d},delay-one-in=${spec.hookOneIn ?? 4},hook-seed=${spec.seed}${spec.mutant ? ',no-fence' : ''}`;
    this.vhostd = new VhostdProcess(CONF, { env: { VHOSTD_TEST_HOOKS: this.hooks } });
    this.res = {
      cell: cellName(spec), seed: spec.seed, hooks: this.hooks, buffers: 0, sent: 0, elapsedMs: 0, maxStallMs: 0, lostKicks: 0,
      lostCalls: 0, stalls: 0, invariantViolations: [], caughtAfter: null, lifecycleEvents: 0, maxRecoveryMs: 0, lostAcrossLifecycle: 0,
      duplicatesAcrossLifecycle: 0, kicks: { sent: 0, skipped: 0, rxSent: 0, rxSkipped: 0 }, calls: { rx: 0, tx: 0, spurious: 0 }, dumps: [],
    };
    this.nextEvent = spec.lifecycle === 'steady' ? Infinity : this.eventAt(1);
  }

  private eventAt(k: number): number {
    const n = this.spec.lifecycle === 'reset' ? 3 : 2;
    return k > n ? Infinity : Math.floor((this.spec.buffers * k) / (n + 1));
  }

  private violation(what: string): void {
    const v = this.res.invariantViolations;
    if (v.length < MAX_VIOLATIONS) v.push(what);
    if (v.length === 1) this.spec.log?.(`[${this.res.cell}] invariant violation: ${what}`);
  }

  async run(): Promise<CellResult> {
    const finished = new Promise<void>((r) => (this.done = r));
    await this.vhostd.start();
    const onViolation = (w: string) => this.violation(w);
    const opts = { queueSize: this.size, eventIdx: this.spec.eventIdx, onViolation };
    this.a = new TorturePort({ ...opts, name: 'A', seed: this.spec.seed * 2 + 1 });
    this.b = new TorturePort({ ...opts, name: 'B', seed: this.spec.seed * 2 + 2 });
    this.a.onCall[1] = () => this.txInterrupt();
    this.b.onCall[0] = () => this.rxInterrupt();
    await this.b.connect(this.vhostd.socket('b'));
    await this.a.connect(this.vhostd.socket('a'));
    this.a.tx.mask(); // A wants TX interrupts only when it runs out of descriptors
    this.rxUnmask(this.bGen);
    this.newEpoch();
    this.audit = setInterval(() => this.observe(), AUDIT_MS);
    if (this.spec.deadlineMs) setTimeout(() => this.finish(`cell did not finish within ${this.spec.deadlineMs} ms`), this.spec.deadlineMs).unref();
    this.pump();
    await finished;
    return this.res;
  }

  private finish(why?: string): void {
    if (this.stopped) return;
    if (why) this.violation(why);
    this.stopped = true;
    if (this.waitingSince !== null) this.res.maxStallMs = Math.max(this.res.maxStallMs, performance.now() - this.waitingSince);
    this.res.elapsedMs = Math.round(performance.now() - this.t0);
    this.res.sent = this.ledger.nextSeq;
    this.res.buffers = this.ledger.received;
    this.res.lostAcrossLifecycle = this.ledger.lostAcrossLifecycle;
    this.res.duplicatesAcrossLifecycle = this.ledger.duplicatesAcrossLifecycle;
    if (this.a) this.res.kicks = { ...this.res.kicks, sent: this.a.tx.kicksSent, skipped: this.a.tx.kicksSkipped };
    if (this.b) this.res.kicks = { ...this.res.kicks, rxSent: this.b.rx.kicksSent, rxSkipped: this.b.rx.kicksSkipped };
    this.res.calls.rx = this.b?.calls[0] ?? 0;
    this.res.calls.tx = this.a?.calls[1] ?? 0;
    this.res.maxStallMs = Math.round(this.res.maxStallMs * 10) / 10;
    this.done();
  }

  async dispose(): Promise<void> {
    this.stopped = true;
    if (this.audit) clearInterval(this.audit);
    this.a?.close();
    this.b?.close();
    await this.vhostd.stop();
    this.vhostd.cleanup();
  }

  private outstanding(): number {
    return this.ledger.outstanding();
  }

  private newEpoch(): void {
    const r = this.rng.int(0, 99);
    const q = this.size;
    this.cap = r < 15 ? 1 : r < 30 ? this.rng.int(2, Math.min(4, q)) : r < 60 ? this.rng.int(1, q) : r < 70 ? q / 2 : q;
    this.epochLeft = this.cap <= 4 ? this.rng.int(16, 256) : this.rng.int(256, 4096);
  }

  // ---------------------------------------------------------------- A: sender

  private schedulePump(): void {
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    const r = this.rng.int(0, 4095);
    const go = () => {
      this.pumpQueued = false;
      this.pump();
    };
    if (r < 4) setTimeout(go, this.rng.int(1, 4));
    else setImmediate(go);
  }

  private pump(): void {
    if (this.stopped || this.aDown || this.draining) return;
    const a = this.a;
    const tx = a.tx;
    this.reapTx();
    const now = performance.now();
    for (;;) {
      const want = Math.min(this.cap - this.outstanding(), this.spec.buffers - this.ledger.received - this.outstanding());
      if (want <= 0) return;
      if (a.txFreeCount === 0) {
        this.armTx();
        return;
      }
      const burst = 1 + (this.rng.u32() % Math.min(want, a.txFreeCount, 32));
      if (this.outstanding() === 0 && this.waitingSince === null && !this.lifecycle) this.waitingSince = now;
      for (let k = 0; k < burst; k++) {
        const head = a.txFree[--a.txFreeCount];
        const mem = a.bufMem[1][head];
        const o = a.bufOff[1][head];
        mem.fill(0, o, o + NET_HDR);
        const len = writeFrame(mem, o + NET_HDR, this.ledger.nextSeq++);
        tx.writeDesc(head, a.bufAddr(1, head), NET_HDR + len, 0);
        tx.push(head);
      }
      if ((this.rng.u32() & 63) === 0) spin(this.rng.int(1, 30)); // D1: ring written, avail.idx not yet
      tx.storeAvailIdx();
      if ((this.rng.u32() & 63) === 0) spin(this.rng.int(1, 30)); // D2: published, kick not yet decided
      if (tx.needsKick()) {
        a.kick(1);
        this.kickDebt = null;
      } else if (this.kickDebt === null) this.kickDebt = { idx: tx.availIdx, at: now };
      else this.kickDebt.idx = tx.availIdx;
      this.epochLeft -= burst;
      if (this.epochLeft <= 0) this.newEpoch();
      if ((this.rng.u32() & 7) === 0) {
        this.schedulePump(); // the guest is busy elsewhere for a while
        return;
      }
    }
  }

  /**
   * Free TX descriptors the device completed (Linux free_old_xmit at transmit time). Consuming them while armed
   * disarms: a later arm writes a fresh used_event, so "owed" always means "owed since this arm".
   */
  private reapTx(): void {
    const a = this.a;
    const n = a.tx.pendingUsed();
    if (n < 0) return this.finish('A.tx used ring is corrupt');
    if (n > 0 && this.txArmed) {
      this.txArmed = false;
      this.txCrossedAt = null;
      a.tx.mask();
    }
    for (let i = 0; i < n; i++) {
      const head = a.tx.takeUsed(this.len);
      if (head >= 0) a.txFree[a.txFreeCount++] = head;
    }
  }

  private armTx(): void {
    if (this.txArmed) return;
    this.txArmed = true;
    this.txCallsAtArm = this.a.calls[1];
    // A waits for its TX descriptors: a stall too if the completion interrupt never comes.
    if (this.waitingSince === null && !this.lifecycle) this.waitingSince = performance.now();
    if (this.a.tx.arm(() => undefined)) {
      // Completions arrived while arming: no interrupt needed.
      this.txArmed = false;
      this.a.tx.mask();
      this.schedulePump();
    }
  }

  private txInterrupt(): void {
    if (this.stopped || this.aDown) return;
    if (!this.txArmed) {
      this.res.calls.spurious++;
      return;
    }
    this.txArmed = false;
    this.txCrossedAt = null;
    this.a.tx.mask();
    this.progress();
    this.pump();
  }

  // ---------------------------------------------------------------- B: interrupt-only NAPI receiver

  private rxInterrupt(): void {
    if (this.stopped || this.bDown) return;
    if (this.rxMasked) {
      this.res.calls.spurious++;
      return;
    }
    this.rxMasked = true;
    this.rxArmed = false;
    this.rxCrossedAt = null;
    this.b.rx.mask();
    this.napiPoll(this.bGen);
  }

  private napiPoll(gen: number): void {
    if (this.stopped || gen !== this.bGen) return;
    const b = this.b;
    const rx = b.rx;
    const n = rx.pendingUsed();
    if (n < 0) return this.finish('B.rx used ring is corrupt');
    const budget = this.rng.int(0, 3) === 0 ? this.rng.int(1, 64) : 64;
    const take = Math.min(n, budget);
    let progress = false;
    for (let i = 0; i < take; i++) {
      const head = rx.takeUsed(this.len);
      if (head < 0) continue;
      if (this.ledger.receive(b.bufMem[0][head], b.bufOff[0][head], this.len[0], this.lifecycle)) progress = true;
      rx.writeDesc(head, b.bufAddr(0, head), RX_BUF, VIRTQ_DESC_F_WRITE);
      rx.push(head);
    }
    if (take > 0) {
      rx.storeAvailIdx();
      if (rx.needsKick()) b.kick(0);
    }
    if (progress) this.progress();
    if (this.stopped) return;
    if (take > 0) this.pump();
    if (n > take) {
      setImmediate(() => this.napiPoll(gen)); // budget spent: NAPI reschedules, interrupts stay masked
      return;
    }
    const r = this.rng.int(0, 99);
    if (r < 65) this.rxUnmask(gen);
    else if (r < 95) setImmediate(() => this.rxUnmask(gen));
    else setTimeout(() => this.rxUnmask(gen), r < 99 ? 1 : this.rng.int(2, 4));
  }

  /** napi_complete + virtqueue_enable_cb: re-arm, fence, re-check; poll again if completions slipped in. */
  private rxUnmask(gen: number): void {
    if (this.stopped || gen !== this.bGen) return;
    const d3 = (this.rng.u32() & 63) === 0 ? this.rng.int(1, 30) : 0;
    if (this.b.rx.arm(() => d3 && spin(d3))) {
      this.b.rx.mask();
      setImmediate(() => this.napiPoll(gen));
      return;
    }
    this.rxMasked = false;
    this.rxArmed = true;
    this.rxCallsAtArm = this.b.calls[0];
  }

  private progress(): void {
    const now = performance.now();
    if (this.waitingSince !== null) this.res.maxStallMs = Math.max(this.res.maxStallMs, now - this.waitingSince);
    // Downtime of a lifecycle event is not a stall: the clock restarts when the event completes.
    this.waitingSince = !this.lifecycle && (this.outstanding() > 0 || this.txArmed) ? now : null;
    if (this.ledger.received >= this.spec.buffers) return this.finish();
    if (this.ledger.received >= this.nextEvent && !this.lifecycle) void this.lifecycleEvent();
  }

  // ---------------------------------------------------------------- observer

  /** Timer: lost kicks and calls that outlive the threshold, and stalls. Reads rings, consumes nothing. */
  private observe(): void {
    if (this.stopped || this.lifecycle) return;
    const now = performance.now();
    const T = this.stallMs;
    const tx = this.a.tx;
    if (this.kickDebt !== null) {
      const used = tx.usedIdx();
      const debt = this.kickDebt;
      if (((used - debt.idx) & 0xffff) <= ((tx.availIdx - debt.idx) & 0xffff)) {
        // The device consumed past the skipped publish: it is alive. Frames published since are the new debt.
        this.kickDebt = used === tx.availIdx ? null : { idx: tx.availIdx, at: now };
      } else if (now - debt.at >= T) return this.detect('lost kick', now);
    }
    const rxOwed = this.rxArmed && this.b.calls[0] === this.rxCallsAtArm && this.b.rx.usedIdx() !== this.b.rx.reaped;
    this.rxCrossedAt = rxOwed ? (this.rxCrossedAt ?? now) : null;
    if (this.rxCrossedAt !== null && now - this.rxCrossedAt >= T) return this.detect('lost call (B.rx)', now);
    const txOwed = this.txArmed && this.a.calls[1] === this.txCallsAtArm && tx.usedIdx() !== tx.reaped;
    this.txCrossedAt = txOwed ? (this.txCrossedAt ?? now) : null;
    if (this.txCrossedAt !== null && now - this.txCrossedAt >= T) return this.detect('lost call (A.tx)', now);
    if (this.waitingSince !== null && now - this.waitingSince >= T) this.detect(this.classify(), now);
  }

  /** What a stall of the threshold is: the state of both rings says who owes a notification. */
  private classify(): string {
    const tx = this.a.tx;
    if (this.kickDebt !== null) return 'lost kick';
    if (this.rxArmed && this.b.calls[0] === this.rxCallsAtArm && this.b.rx.usedIdx() !== this.b.rx.reaped) return 'lost call (B.rx)';
    if (this.txArmed && this.a.calls[1] === this.txCallsAtArm && tx.usedIdx() !== tx.reaped) return 'lost call (A.tx)';
    if (tx.usedIdx() !== tx.availIdx) return 'stall: A kicked, the device did not consume';
    return 'stall: A.tx consumed, nothing owed to B (frames vanished)';
  }

  private detect(kind: string, now: number): void {
    const dump = `[${this.res.cell}] ${kind} after ${this.ledger.received} frames (seed ${this.spec.seed}, cap ${this.cap}, outstanding ${this.outstanding()}): ${this.a.tx.state()} ${this.b.rx.state()} B ${this.rxMasked ? 'masked' : this.rxArmed ? 'armed' : 'idle'}, A.tx ${this.txArmed ? 'armed' : 'masked'}`;
    const proc = this.vhostd.proc;
    const alive = proc?.exitCode === null && proc?.signalCode === null;
    const daemon = this.res.dumps.length === 0 ? `\n  vhostd ${alive ? 'running' : 'exited'}; last log lines:\n  ${this.vhostd.tail(6).split('\n').map((l) => l.slice(0, 200)).join('\n  ')}` : '';
    this.res.dumps.push(dump + daemon);
    this.spec.log?.(dump + daemon);
    if (alive && this.res.dumps.length === 1 && !this.spec.mutant) {
      const log = this.spec.log;
      void this.vhostd.stats().then((st) => log?.(`[${this.res.cell}] vhostd counters: ${JSON.stringify(st)}`), () => undefined);
    }
    if (this.waitingSince !== null) this.res.maxStallMs = Math.max(this.res.maxStallMs, now - this.waitingSince);
    // Not a notification problem: the daemon crashed (or something on the machine killed it).
    if (!alive) return this.finish(`vhostd exited during the cell (code ${proc?.exitCode}, signal ${proc?.signalCode}): ${this.vhostd.stderr.slice(-500)}`);
    const lost = kind.startsWith('lost');
    if (kind.startsWith('lost kick')) this.res.lostKicks++;
    else if (lost) this.res.lostCalls++;
    else this.res.stalls++;
    if (lost && this.res.caughtAfter === null) this.res.caughtAfter = this.ledger.received;
    if (this.spec.mutant && lost) return this.finish();
    if (this.res.stalls > 5) return this.finish('more than 5 stalls: the cell does not recover');
    // Recover so the cell goes on: force the kick and the interrupts that were owed.
    this.kickDebt = null;
    this.rxCrossedAt = this.txCrossedAt = null;
    this.waitingSince = this.outstanding() > 0 || this.txArmed ? now : null;
    this.a.kick(1);
    if (!this.rxMasked) this.rxInterrupt();
    if (this.txArmed) this.txInterrupt();
    if (kind.includes('vanished')) {
      this.violation(`frames ${this.ledger.lastRecv + 1}..${this.ledger.nextSeq - 1} vanished: A.tx consumed, nothing in B.rx`);
      this.ledger.settle();
    }
    this.pump();
  }

  // ---------------------------------------------------------------- lifecycle

  private async lifecycleEvent(): Promise<void> {
    this.lifecycle = true;
    this.waitingSince = null;
    this.kickDebt = null;
    this.rxCrossedAt = this.txCrossedAt = null;
    const k = ++this.eventNo;
    this.eventStart = performance.now();
    try {
      if (this.spec.lifecycle === 'reset') {
        const who = k === 1 ? [this.b] : k === 2 ? [this.a] : [this.a, this.b];
        this.spec.log?.(`[${this.res.cell}] guest reset of ${who.map((p) => p.name).join('+')} after ${this.ledger.received} frames`);
        await Promise.all(who.map((p) => this.resetPort(p)));
      } else {
        this.spec.log?.(`[${this.res.cell}] vhostd SIGKILL + restart after ${this.ledger.received} frames`);
        await this.restartDaemon();
      }
    } catch (err) {
      this.finish(`lifecycle event ${k} failed: ${(err as Error).message}`);
      return;
    }
    this.res.lifecycleEvents++;
    await this.drain();
    this.ledger.settle();
    this.lifecycle = false;
    this.nextEvent = this.eventAt(k + 1);
    this.waitingSince = this.outstanding() > 0 || this.txArmed ? performance.now() : null;
    if (this.stopped) return;
    this.pump();
  }

  /**
   * After an event, A holds new frames until what it sent before is settled: its TX ring consumed and B's RX used
   * ring read. Otherwise those frames and a full cap of new ones would compete for B's RX buffers (a drop that
   * says nothing about notifications). A ring that does not settle within the stall threshold after the event is
   * a hang after recovery: classified, counted and recovered like any other; twice is a failed event.
   */
  private async drain(): Promise<void> {
    this.draining = true;
    let start = performance.now();
    let retried = false;
    for (;;) {
      if (this.stopped) return;
      const tx = this.a.tx;
      const rx = this.b.rx;
      const now = performance.now();
      if (tx.usedIdx() === tx.availIdx && rx.usedIdx() === rx.reaped) break;
      if (now - start >= this.stallMs) {
        if (retried) {
          this.finish(`rings did not settle after lifecycle event ${this.eventNo}: ${tx.state()} ${rx.state()}`);
          return;
        }
        const owed = this.rxArmed && this.b.calls[0] === this.rxCallsAtArm && rx.usedIdx() !== rx.reaped;
        this.detect(tx.usedIdx() !== tx.availIdx ? 'lost kick (A.tx not processed after the event)' : owed ? 'lost call (B.rx)' : 'stall: B.rx not read after the event', now);
        retried = true;
        start = now;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    this.res.maxRecoveryMs = Math.max(this.res.maxRecoveryMs, Math.round(performance.now() - this.eventStart));
    this.draining = false;
  }

  /** Guest reset of one port during traffic; the other keeps going. */
  private async resetPort(p: TorturePort): Promise<void> {
    const isB = p === this.b;
    if (isB) {
      this.bDown = true;
      this.bGen++;
      this.rxMasked = this.rxArmed = false;
    } else {
      this.aDown = true;
      this.txArmed = false;
    }
    await p.reset();
    if (isB) {
      this.bDown = false;
      this.rxUnmask(this.bGen);
    } else {
      this.aDown = false;
      this.a.tx.mask();
    }
  }

  /** SIGKILL vhostd mid-traffic, start it again on the same sockets; both guests reconnect (in random order). */
  private async restartDaemon(): Promise<void> {
    await this.vhostd.kill();
    // The guests keep running meanwhile: A fills its ring, its kicks go nowhere; B waits for calls.
    const dir = this.vhostd.dir;
    this.vhostd = new VhostdProcess(CONF, { dir, env: { VHOSTD_TEST_HOOKS: this.hooks } });
    await this.vhostd.start();
    const order = this.rng.bool() ? [this.a, this.b] : [this.b, this.a];
    for (const p of order) await p.reconnect(this.vhostd.socket(p === this.a ? 'a' : 'b'));
  }
}
