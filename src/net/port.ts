/**
 * Port: what the switch forwards to. Owns only the contract; NetDevice (virtio), a TAP or a test fake implement it.
 * Design: egress is split into deliver() per frame (copy into the port's receive buffers, queue the used entry)
 * and flush() once per batch (one used-ring publish + at most one interrupt), docs/architecture.md §4 step 6.
 * The switch never copies a frame; the egress port does the one copy (frame.ts).
 */
import type { Frame } from './frame.js';

/** Small integer naming a port inside one Switch (index into its per-port arrays). */
export type PortId = number;

/** "No port": MacTable miss, and the id of a port that is not attached to a switch. */
export const NO_PORT: PortId = -1;

/** One switch port. */
export interface Port {
  /**
   * Assigned by `Switch.addPort` (smallest free id), reset to NO_PORT by `removePort`. Implementations declare it
   * as a plain `id = NO_PORT` field; only the switch writes it.
   */
  readonly id: PortId;
  /** Name for logs, display and metric labels. */
  readonly name: string;
  /**
   * IP MTU of this port: the largest Ethernet payload it takes. The switch drops (never truncates) a frame longer
   * than mtu + 14 (+ 4 for an 802.1Q tag) on egress to this port and counts it as dropMtu.
   */
  readonly mtu: number;
  /**
   * Egress: copy `frame` into this port's receive buffers and queue it. `false` = dropped (no buffer, too large,
   * link down...); the port counts its own reason, the switch counts `dropEgress`. Must not keep `frame`: the
   * caller reuses the object and its buffers after the call.
   */
  deliver(frame: Frame): boolean;
  /** End of a batch: publish what deliver() queued (e.g. one used-ring publish + one interrupt). */
  flush(): void;
}
