/**
 * VIRTIO_F_EVENT_IDX arithmetic (VIRTIO 1.2 §2.7.7.2 / §2.7.10, Linux vring_need_event).
 * Indices run free modulo 2^16; never compare them with `<`, only through differences masked to 16 bits.
 * The notification fires when the index moves past `eventIdx` (crosses eventIdx + 1) within (old, new].
 */

/**
 * True if the other side asked to be notified when its event index is crossed by moving from `oldIdx` to
 * `newIdx`: (u16)(new − event − 1) < (u16)(new − old).
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}
