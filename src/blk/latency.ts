/**
 * Fixed-bucket latency histograms for virtio-blk requests (exported as Prometheus histograms by src/metrics/).
 * The device reads the clock once per batch on its allocation-free path (the submit time of a drained batch, the
 * completion time of a reaped batch) and once per request elsewhere; nothing is allocated per observation: the
 * buckets are a preallocated Float64Array and the bounds are shared.
 */

/**
 * Bucket upper bounds in seconds, 25 µs (page-cache hit) .. 10 s (a stalled flush), about ×2-2.5 per step up to
 * 100 ms; above the last one is +Inf. Few buckets on purpose: every bucket is a series per device and type.
 */
export const BLK_LATENCY_BOUNDS: readonly number[] = Object.freeze([
  0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1, 10,
]);

/** Request kinds that do I/O (GET_ID and rejected requests complete at once and are not timed). */
export type BlkIoKind = 'read' | 'write' | 'flush' | 'discard' | 'write-zeroes';
export const BLK_IO_KINDS: readonly BlkIoKind[] = ['read', 'write', 'flush', 'discard', 'write-zeroes'];

export class LatencyHistogram {
  /** Observations per bucket, not cumulative; index bounds.length is the +Inf bucket. */
  readonly counts: Float64Array;
  /** Sum of observed values (seconds) and number of observations. */
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[] = BLK_LATENCY_BOUNDS) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(seconds: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && seconds > b[i]) i++;
    this.counts[i]++;
    this.sum += seconds;
    this.count++;
  }
}

/** One histogram per I/O request kind. */
export type BlkLatency = Readonly<Record<BlkIoKind, LatencyHistogram>>;

export function newBlkLatency(): BlkLatency {
  return { read: new LatencyHistogram(), write: new LatencyHistogram(), flush: new LatencyHistogram(), discard: new LatencyHistogram(), 'write-zeroes': new LatencyHistogram() };
}
