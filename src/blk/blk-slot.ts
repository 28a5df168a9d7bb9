/**
 * BlkSlot: one request's preallocated state in the virtio-blk device, pooled per queue with its DescriptorChain.
 * A read or write on a FastIo disk lives here from parse to completion: plain header fields, reused data views,
 * the submit timestamp; its completion is a method call into the device (ioDone), so nothing is allocated per
 * request on that path.
 */
import { DescriptorChain } from '../virtqueue/descriptor-chain.js';
import type { FastRequest } from './fast-io.js';

export type SlotDone<Q> = (slot: BlkSlot<Q>, err: Error | null) => void;

export class BlkSlot<Q> implements FastRequest {
  readonly chain: DescriptorChain;
  write = false;
  offset = 0;
  len = 0;
  readonly bufs: Uint8Array[] = [];
  nbufs = 0;
  /** performance.now() of the batch that submitted it. */
  t0 = 0;

  constructor(
    /** The queue state it belongs to. */
    readonly queue: Q,
    size: number,
    private readonly done: SlotDone<Q>,
  ) {
    this.chain = new DescriptorChain(size);
  }

  ioDone(err: Error | null): void {
    this.done(this, err);
  }
}
