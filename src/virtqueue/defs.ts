/**
 * Split-virtqueue constants and layout, spelled as in the spec so they grep against it and QEMU.
 * Layout (VIRTIO 1.2 §2.7, all little-endian):
 *   desc[i]  16 B: u64 addr | u32 len | u16 flags | u16 next                   (align 16, 16*size bytes)
 *   avail       : u16 flags | u16 idx | u16 ring[size] | u16 used_event       (align 2, 6 + 2*size bytes)
 *   used        : u16 flags | u16 idx | {u32 id, u32 len}[size] | u16 avail_event (align 4, 6 + 8*size bytes)
 */

/** §2.7.5: buffer continues via the next field. */
export const VIRTQ_DESC_F_NEXT = 1;
/** §2.7.5: buffer is device write-only (otherwise device read-only). */
export const VIRTQ_DESC_F_WRITE = 2;
/** §2.7.5.3: buffer contains a table of descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** §2.7.6: driver asks the device not to interrupt (ignored with EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** §2.7.8: device asks the driver not to kick (ignored with EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** §2.7: queue size is a power of 2, at most 32768. */
export const MAX_QUEUE_SIZE = 32768;

/** §2.7 table "Virtqueue Part Alignment". */
export const DESC_ALIGN = 16;
export const AVAIL_ALIGN = 2;
export const USED_ALIGN = 4;

/** Bytes of one descriptor / one used element. */
export const DESC_SIZE = 16;
export const USED_ELEM_SIZE = 8;

/** §2.7 "Virtqueue Part Sizes" (the event fields are counted whether or not EVENT_IDX is negotiated). */
export function descTableSize(size: number): number {
  return 16 * size;
}
export function availRingSize(size: number): number {
  return 6 + 2 * size;
}
export function usedRingSize(size: number): number {
  return 6 + 8 * size;
}
