/**
 * Fixed-rate send schedule for open-loop latency runs (measure from the intended
 * send time so coordinated omission cannot hide stalls). A worker thread (send-clock-worker.ts) sleeps until each
 * intended time and wakes the main thread through an eventfd watched on its event loop; the main thread sends
 * every frame that is due, however late it runs, and the lateness counts as latency.
 */
import { Worker } from 'node:worker_threads';
import type { FdWatcher, NativeBinding } from '../../../src/native/types.js';
import { POLL_READABLE } from '../../../src/native/types.js';

export class SendClock {
  private readonly shared = new Int32Array(new SharedArrayBuffer(8));
  private readonly efd: number;
  private readonly watcher: FdWatcher;
  private readonly worker: Worker;
  private readonly exited: Promise<unknown>;
  /** A failure of the worker thread (rethrown by close()). */
  error: Error | null = null;
  /** Frames already handed to onDue. */
  private sent = 0;

  /**
   * Calls onDue(seq) once per scheduled send, in order, from the event loop; intended(seq) is its intended time
   * (ns after `base`, process.hrtime.bigint()).
   */
  constructor(
    private readonly native: NativeBinding,
    readonly base: bigint,
    readonly startNs: number,
    readonly periodNs: number,
    readonly count: number,
    onDue: (seq: number) => void,
    onBatchEnd: () => void,
  ) {
    this.efd = native.eventfd(0);
    this.watcher = native.watch(this.efd, POLL_READABLE, () => {
      native.eventfdRead(this.efd);
      const due = Atomics.load(this.shared, 0);
      while (this.sent < due) onDue(this.sent++);
      onBatchEnd();
    });
    this.worker = new Worker(new URL('./send-clock-worker.js', import.meta.url), {
      workerData: { shared: this.shared, efd: this.efd, base, startNs, periodNs, count },
    });
    this.exited = new Promise((resolve) => this.worker.once('exit', resolve));
    this.worker.on('error', (e) => (this.error = e));
  }

  intended(seq: number): number {
    return this.startNs + seq * this.periodNs;
  }

  async close(): Promise<void> {
    Atomics.store(this.shared, 1, 1);
    await this.exited; // the worker sees the stop flag within one period
    this.watcher.close();
    this.native.close(this.efd);
    if (this.error) throw this.error;
  }
}
