/**
 * InflightQueue (vhost-user spec, "Inflight I/O tracking"): the take/publish protocol as it leaves the region, and the
 * ring-start recovery on hand-made regions.
 */
import { describe, expect, test } from 'vitest';
import { InflightQueue, inflightQueueBytes } from '../../../src/virtqueue/inflight.js';

const SIZE = 8;

function region(): { buf: ArrayBuffer; q: InflightQueue; dv: DataView } {
  const buf = new ArrayBuffer(2 * inflightQueueBytes(SIZE));
  const q = new InflightQueue(buf, inflightQueueBytes(SIZE), SIZE);
  return { buf, q, dv: new DataView(buf, inflightQueueBytes(SIZE)) };
}

/** Plant a region state as a crashed back-end would have left it. */
function plant(dv: DataView, s: { version?: number; lastBatchHead?: number; usedIdx?: number; inflight?: [number, number][]; next?: [number, number][] }): void {
  dv.setUint16(8, s.version ?? 1, true);
  dv.setUint16(10, SIZE, true);
  dv.setUint16(12, s.lastBatchHead ?? 0, true);
  dv.setUint16(14, s.usedIdx ?? 0, true);
  for (const [h, c] of s.inflight ?? []) {
    dv.setUint8(16 + 16 * h, 1);
    dv.setBigUint64(16 + 16 * h + 8, BigInt(c), true);
  }
  for (const [h, n] of s.next ?? []) dv.setUint16(16 + 16 * h + 6, n, true);
}

describe('inflight region', () => {
  test('per-queue size is ALIGN_UP(16 * queue_size + 16, 64)', () => {
    expect(inflightQueueBytes(128)).toBe(2112);
    expect(inflightQueueBytes(256)).toBe(4160);
    expect(inflightQueueBytes(1)).toBe(64);
  });

  test('version 0 (fresh): stamped, used_idx = used.idx, nothing resubmitted even if flags are set', () => {
    const { q, dv } = region();
    dv.setUint8(16 + 16 * 3, 1);
    const r = q.recover(5, () => 0);
    expect(r).toEqual({ fresh: true, resubmit: [], clearedBatch: 0, batchProblem: null });
    expect(q.version).toBe(1);
    expect(q.descNum).toBe(SIZE);
    expect(q.usedIdx).toBe(5);
    expect(q.isInflight(3)).toBe(false);
  });

  test('take/publish: in flight until published; batch linked through next; used_idx follows used.idx', () => {
    const { q } = region();
    q.recover(0, () => 0);
    q.take(2);
    q.take(5);
    q.take(6);
    expect([2, 5, 6].every((h) => q.isInflight(h))).toBe(true);
    expect(q.counterOf(5)).toBeGreaterThan(q.counterOf(2));
    q.addUsed(6);
    q.addUsed(2);
    q.prePublish();
    expect(q.lastBatchHead).toBe(2);
    expect(q.isInflight(2)).toBe(true); // a crash here: the batch is still recorded in flight
    q.postPublish(2);
    expect(q.isInflight(2)).toBe(false);
    expect(q.isInflight(6)).toBe(false);
    expect(q.isInflight(5)).toBe(true);
    expect(q.usedIdx).toBe(2);
  });

  test('crash between used.idx and used_idx: the published batch is cleared, the rest resubmitted by counter', () => {
    const { q, dv } = region();
    // Heads 4 (counter 9), 1 (counter 3), 7 (counter 5) in flight; batch {7 → 1} published: used.idx 12, used_idx 10.
    plant(dv, { usedIdx: 10, lastBatchHead: 7, inflight: [[4, 9], [1, 3], [7, 5], [0, 11]], next: [[7, 1]] });
    const used = new Map([[10, 1], [11, 7]]);
    const r = q.recover(12, (s) => used.get(s) ?? 99);
    expect(r.batchProblem).toBeNull();
    expect(r.clearedBatch).toBe(2);
    expect(r.resubmit).toEqual([4, 0]);
    expect(q.usedIdx).toBe(12);
  });

  test('entries resubmitted in ascending counter order (not head order)', () => {
    const { q, dv } = region();
    plant(dv, { usedIdx: 3, inflight: [[0, 30], [3, 10], [5, 20], [7, 5]] });
    const r = q.recover(3, () => 0);
    expect(r.resubmit).toEqual([7, 3, 5, 0]);
    q.take(7);
    expect(q.counterOf(7)).toBeGreaterThan(30);
  });

  test('a region that never completed anything does not lose desc[0] (last_batch_head defaults to 0)', () => {
    const { q, dv } = region();
    // used.idx moved to 3 while nothing was ever recorded as completed: used_idx 0, last_batch_head 0, next 0.
    plant(dv, { usedIdx: 0, lastBatchHead: 0, inflight: [[0, 1], [6, 2]] });
    const r = q.recover(3, (s) => [2, 3, 4][s] ?? 0);
    expect(r.batchProblem).toMatch(/revisits head 0/);
    expect(r.resubmit).toEqual([0, 6]);
    expect(q.usedIdx).toBe(3);
    // A single-entry "batch" at head 0 that the used ring does not confirm is refused too.
    const b = region();
    plant(b.dv, { usedIdx: 0, lastBatchHead: 0, inflight: [[0, 1]] });
    const r2 = b.q.recover(1, () => 5);
    expect(r2.batchProblem).toMatch(/not in the recorded batch/);
    expect(r2.resubmit).toEqual([0]);
  });

  test('a batch larger than desc_num is refused; a desc_num mismatch throws', () => {
    const { q, dv } = region();
    plant(dv, { usedIdx: 0, lastBatchHead: 1, inflight: [[1, 1]] });
    expect(q.recover(100, () => 1).batchProblem).toMatch(/exceeds desc_num/);
    const b = region();
    plant(b.dv, {});
    b.dv.setUint16(10, 16, true);
    expect(() => b.q.recover(0, () => 0)).toThrow(/desc_num 16/);
  });
});
