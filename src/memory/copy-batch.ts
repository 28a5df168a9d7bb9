/**
 * CopyBatch: frame copies between guest mappings, queued and run as one native call (copyBurst) per burst instead
 * of one `set(subarray())` per frame, which allocates a view each time. An op is five numbers in a preallocated
 * Float64Array: nothing is allocated per frame. The addon checks every op again (handle generation, bounds) before
 * its memmove; see docs/architecture.md "The frame copy" and docs/security.md "Copy handles".
 *
 * Rule for users: a queued copy has not happened yet. run() must come before anything that lets the guests see
 * the buffers: a used-ring publish of the RX chains written to, and of the TX chains read from (the sender could
 * reuse them), and before a dirty-log mark of the bytes (the bit must follow the write). Switch.endBatch() and
 * every publish path of the ports run it; a full batch runs at once.
 */
import { loadNative } from '../native/binding.js';
import { COPY_OP_FIELDS, type NativeBinding } from '../native/types.js';

/** Ops one batch holds: a TX burst of 256 frames of up to four pieces each. */
export const COPY_BATCH_OPS = 1024;

export class CopyBatch {
  /** (dst handle, dst offset, src handle, src offset, length) per op. */
  readonly ops: Float64Array;
  /** Ops queued and not run yet. */
  count = 0;
  /** Ops the addon refused (a TypeScript bug or a handle kept past its munmap: TypeScript checked them all). */
  refused = 0;
  /** copyBurst calls made. */
  runs = 0;
  private native: NativeBinding | null;

  constructor(
    readonly capacity = COPY_BATCH_OPS,
    native: NativeBinding | null = null,
  ) {
    this.ops = new Float64Array(capacity * COPY_OP_FIELDS);
    this.native = native;
  }

  /**
   * Queue a copy of `len` bytes from mapping `srcHandle` at `srcOff` to mapping `dstHandle` at `dstOff` (offsets
   * from the start of the mappings). The caller has checked both ranges. Runs the batch first when it is full.
   */
  add(dstHandle: number, dstOff: number, srcHandle: number, srcOff: number, len: number): void {
    let k = this.count;
    if (k === this.capacity) {
      this.run();
      k = 0;
    }
    const o = k * COPY_OP_FIELDS;
    const ops = this.ops;
    ops[o] = dstHandle;
    ops[o + 1] = dstOff;
    ops[o + 2] = srcHandle;
    ops[o + 3] = srcOff;
    ops[o + 4] = len;
    this.count = k + 1;
  }

  /** Do every queued copy (one native call). Cheap when nothing is queued. */
  run(): void {
    const n = this.count;
    if (n === 0) return;
    this.count = 0;
    this.runs++;
    // Only mappings of the addon have handles, so the addon is there whenever an op is.
    this.refused += (this.native ??= loadNative()).copyBurst(this.ops, n);
  }
}

/** The batch every port of this thread queues on (one per thread: the event loop runs one burst at a time). */
export const copyBatch = new CopyBatch();
