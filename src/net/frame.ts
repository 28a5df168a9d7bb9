/**
 * Frame: an Ethernet frame as the switch sees it, without the virtio-net header: a window
 * [offset, offset+length) of a scatter-gather list over the sender's buffers. The switch never copies;
 * the egress port copies once, straight from the sender's buffers into its own (sgCopy).
 * One Frame object per ingress port is reused for every frame (nothing allocated per frame).
 */
import { SgList } from '../memory/sg-list.js';

export class Frame {
  /** Where the bytes are. */
  sg: SgList;
  /** Offset of the first Ethernet byte inside sg (e.g. 12 to skip a virtio-net header). */
  offset = 0;
  /** Ethernet frame length (destination MAC to end of payload, no FCS). */
  length = 0;
  /** Destination and source MAC as 48-bit integers (see mac.ts macKeyAt). */
  dst = 0;
  src = 0;

  constructor(sg: SgList) {
    this.sg = sg;
  }
}
