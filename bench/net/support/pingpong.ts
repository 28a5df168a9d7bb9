/**
 * The measuring side of the latency benchmark: a driver-side virtio-net client (test/helpers/fake-net-driver.ts)
 * that sends frames carrying a sequence number and times the echoed replies. It is event-driven like a guest
 * kernel: it sleeps on its RX call eventfd (startEventDriven) and never polls. TX completions are reaped on the
 * next send, so TX interrupts are suppressed (NO_INTERRUPT, or used_event kept far ahead with EVENT_IDX,
 * virtio 1.2 §2.7.10), which leaves the RX interrupt the only wakeup of a round trip.
 *
 * Closed loop: one frame in flight; the next goes out from the reply's callback. Open loop: frames go out on a
 * fixed-rate schedule (SendClock) and latency runs from the intended send time, so a stall anywhere (backend,
 * client, scheduler) shows up in the histogram instead of pausing the sampling.
 */
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { ethFrame, type FakeNetDriver } from '../../../test/helpers/fake-net-driver.js';
import { SendClock } from './send-clock.js';

/** Payload layout after the 14-byte Ethernet header: sequence number, then the run's tag (both u32 LE). */
const SEQ_AT = 14;
const TAG_AT = 18;
/** No reply for this long (watchdog checks once a second) means a lost frame or a lost interrupt. */
const STALL_MS = 3000;

export interface LatencyRun {
  /** Round-trip times in ns (warm-up excluded). */
  hist: RecordableHistogram;
  /** Open loop: how late the client itself sent each frame after its intended time (ns). */
  sendLag?: RecordableHistogram;
  /** Open loop: round trips from the actual send (what a closed-loop client would have seen), ns. */
  fromSend?: RecordableHistogram;
  /** Replies checked (warm-up included): every one in order with the right sequence number. */
  replies: number;
  seconds: number;
}

const u32 = (f: Uint8Array, at: number): number => (f[at] | (f[at + 1] << 8) | (f[at + 2] << 16) | (f[at + 3] << 24)) >>> 0;
function putU32(f: Uint8Array, at: number, v: number): void {
  f[at] = v & 0xff;
  f[at + 1] = (v >>> 8) & 0xff;
  f[at + 2] = (v >>> 16) & 0xff;
  f[at + 3] = v >>> 24;
}
const macBytes = (mac: string): number[] => mac.split(':').map((h) => parseInt(h, 16));

export class PingPongClient {
  private readonly frame: Uint8Array;
  private readonly macA: number[];
  private readonly macB: number[];
  private readonly base = process.hrtime.bigint();
  private tag = 0;
  /** Called for each checked reply (seq, arrival ns); set per run. */
  private onReply: ((seq: number, t: number) => void) | null = null;
  private failure: Error | null = null;
  private fail: (e: Error) => void = () => {};

  /** `drv` must have been start()ed; frames go to `macB`, replies come back to `macA` (MACs swapped). */
  constructor(
    readonly drv: FakeNetDriver,
    macA: string,
    macB: string,
    readonly frameLen = 64,
  ) {
    this.frame = ethFrame(macB, macA, frameLen);
    this.macA = macBytes(macA);
    this.macB = macBytes(macB);
    if (drv.tx.eventIdx) this.quietTx();
    else drv.tx.setNoInterrupt(true);
    drv.startEventDriven((frames) => {
      for (const f of frames) this.check(f);
    });
  }

  /** ns since this client was made. */
  now(): number {
    return Number(process.hrtime.bigint() - this.base);
  }

  private quietTx(): void {
    this.drv.tx.setUsedEvent((this.drv.tx.availIdx + 0x8000) & 0xffff);
  }

  private send(seq: number, kick: boolean): void {
    putU32(this.frame, SEQ_AT, seq);
    putU32(this.frame, TAG_AT, this.tag);
    if (this.drv.tx.eventIdx) this.quietTx();
    if (!this.drv.send(this.frame, { kick })) this.abort(new Error(`TX ring full at seq ${seq}: the backend stopped consuming`));
  }

  private check(f: Uint8Array): void {
    const t = this.now();
    const bad =
      f.length !== this.frameLen ? `length ${f.length}` :
      this.macA.some((b, i) => f[i] !== b) || this.macB.some((b, i) => f[6 + i] !== b) ? 'MAC addresses not swapped' :
      u32(f, TAG_AT) !== this.tag ? `tag ${u32(f, TAG_AT)} (a frame of another run)` : null;
    if (bad) return this.abort(new Error(`bad reply: ${bad}`));
    this.onReply?.(u32(f, SEQ_AT), t);
  }

  private abort(e: Error): void {
    this.failure ??= e;
    this.fail(e);
  }

  /** Runs until `done` resolves or a check fails; the watchdog fails the run when `progress()` stops moving. */
  private async run(progress: () => number, body: (done: () => void) => void): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        this.fail = reject;
        let last = -1;
        let stillSince = Date.now();
        timer = setInterval(() => {
          const p = progress();
          if (p !== last) {
            last = p;
            stillSince = Date.now();
          } else if (Date.now() - stillSince > STALL_MS) {
            const why = this.drv.rx.usedIdx() !== this.drv.rxState().seen ? 'lost interrupt' : 'lost frame or kick';
            reject(new Error(`no reply for ${STALL_MS} ms after ${p} (${why}): rx ${JSON.stringify(this.drv.rxState())} tx ${JSON.stringify(this.drv.txState())}`));
          }
        }, 1000);
        body(resolve);
      });
    } finally {
      clearInterval(timer);
      this.onReply = null;
      this.fail = () => {};
    }
    if (this.failure) throw this.failure;
  }

  /** `count` round trips after `warmup` unrecorded ones, one frame in flight. */
  async closedLoop(count: number, warmup: number): Promise<LatencyRun> {
    const hist = createHistogram();
    const total = warmup + count;
    this.tag++;
    let expected = 0;
    let sentAt = 0;
    const t0 = this.now();
    await this.run(
      () => expected,
      (done) => {
        this.onReply = (seq, t) => {
          if (seq !== expected) return this.abort(new Error(`closed loop: reply ${seq}, expected ${expected}`));
          if (seq >= warmup) hist.record(Math.max(1, t - sentAt));
          if (++expected === total) return done();
          sentAt = this.now();
          this.send(expected, true);
        };
        sentAt = this.now();
        this.send(0, true);
      },
    );
    return { hist, replies: expected, seconds: (this.now() - t0) / 1e9 };
  }

  /** `warmup + count` frames at `rate` per second on a fixed schedule; latency from each frame's intended time. */
  async openLoop(rate: number, count: number, warmup: number): Promise<LatencyRun> {
    const hist = createHistogram();
    const sendLag = createHistogram();
    const fromSend = createHistogram();
    const total = warmup + count;
    const sentAt = new Float64Array(total);
    this.tag++;
    let expected = 0;
    const t0 = this.now();
    const clock = new SendClock(
      this.drv.native,
      this.base,
      t0 + 20e6,
      1e9 / rate,
      total,
      (seq) => {
        sentAt[seq] = this.now();
        sendLag.record(Math.max(1, sentAt[seq] - clock.intended(seq)));
        this.send(seq, false);
      },
      () => this.drv.flushTx(),
    );
    try {
      await this.run(
        () => expected,
        (done) => {
          this.onReply = (seq, t) => {
            if (seq !== expected) return this.abort(new Error(`open loop: reply ${seq}, expected ${expected}`));
            if (seq >= warmup) {
              hist.record(Math.max(1, t - clock.intended(seq)));
              fromSend.record(Math.max(1, t - sentAt[seq]));
            }
            if (++expected === total) done();
          };
        },
      );
    } finally {
      await clock.close();
    }
    return { hist, sendLag, fromSend, replies: expected, seconds: (this.now() - t0) / 1e9 };
  }
}
