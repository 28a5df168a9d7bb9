/**
 * Frame: an Ethernet frame as the switch sees it, without the virtio-net header: a window
 * [offset, offset+length) of a scatter-gather list over the sender's buffers. The switch never copies the frame;
 * the egress port copies once, straight from the sender's buffers into its own, with frameCopyTo().
 * One Frame object per ingress port is reused for every frame (nothing allocated per frame).
 *
 * Single fetch (docs/security.md, "Switch: single fetch and hashing of guest MACs"): the sender's buffers are guest
 * memory another vCPU may rewrite at any time. The switch decides on a private copy of the header bytes it inspects
 * (`snap`, taken once per frame at ingress by frameSnapshot()), and frameCopyTo() writes those bytes from the copy
 * and only the rest from the sender's buffers, so the header forwarded is the header that was checked.
 *
 * 802.1Q rewrite without a copy: for the duration of one Port.deliver() call the
 * switch may set `stripTag` (the source bytes 12..15, an 802.1Q tag, are skipped) and/or `vlanTag` (a 4-byte tag
 * 0x8100 + TCI is inserted at byte 12), and sets `length` to the length as sent. Both together replace a tag.
 * Ports must copy with frameCopyTo(), which honours them; the switch restores the fields after deliver().
 */
import { SgList, sgCopy, sgCopyIn, sgCopyOut } from '../memory/sg-list.js';
import type { CopyBatch } from '../memory/copy-batch.js';
import { COPY_MAX_LEN } from '../native/types.js';
import { ETHER_HDR_LEN } from './ethernet.js';

/** "No tag to insert". */
export const NO_VLAN_TAG = -1;

export class Frame {
  /** Where the bytes are. */
  sg: SgList;
  /** Offset of the first Ethernet byte inside sg (e.g. 12 to skip a virtio-net header). */
  offset = 0;
  /** Ethernet frame length (destination MAC to end of payload, no FCS); during deliver(): as sent. */
  length = 0;
  /**
   * Destination and source MAC as 24-bit halves (MacKey = hi * 2^24 + lo), set by the switch at ingress: small
   * integers the hot path compares and passes to the MAC table, because a 48-bit number passed to a call V8 did not
   * inline is boxed (an allocation per frame), and even a store of one into a field costs a heap-number write.
   */
  dstHi = 0;
  dstLo = 0;
  srcHi = 0;
  srcLo = 0;
  /** Destination MAC as a 48-bit MacKey (see mac.ts macKeyAt), computed from the halves (rules, tests). */
  get dst(): number {
    return this.dstHi * 0x100_0000 + this.dstLo;
  }
  /** Source MAC as a 48-bit MacKey, computed from the halves. */
  get src(): number {
    return this.srcHi * 0x100_0000 + this.srcLo;
  }
  /** During deliver(): TCI (PCP/DEI/VID, 16 bits) of an 802.1Q tag to insert at byte 12, or NO_VLAN_TAG. */
  vlanTag = NO_VLAN_TAG;
  /** During deliver(): skip the source's 802.1Q tag (bytes 12..15). */
  stripTag = false;
  /**
   * The sender's virtio-net header, parsed once on ingress and reset for every frame; all zero for a
   * frame without offloads (and for frames from ports without virtio-net headers). Offsets are relative to the
   * sender's bytes: with a VLAN rewrite the egress shifts them (SoftOffload.shift).
   */
  vnetFlags = 0;
  gsoType = 0;
  gsoSize = 0;
  hdrLen = 0;
  csumStart = 0;
  csumOffset = 0;
  /** GSO frames: end of the TCP header as parsed (csum_start + data offset), for the egress MTU check; else 0. */
  gsoHdrEnd = 0;
  /**
   * Private copy of the frame's first `snapLen` bytes (as received, before any VLAN rewrite): what the switch's
   * checks read and what frameCopyTo() sends. 0 = no snapshot (a port's own scratch frames). Preallocated per Frame.
   */
  readonly snap = new Uint8Array(SNAP_MAX);
  snapLen = 0;

  constructor(sg: SgList) {
    this.sg = sg;
  }
}

/**
 * Bytes the ingress snapshot always covers: the Ethernet header (addresses, ethertype). Checks that look further
 * extend it with frameSnapshot(): an 802.1Q tag and the ethertype behind it (18, enough to see a second tag: the
 * double-tagged check), an ARP body for ARP rules (up to 18 + 28).
 */
export const SNAP_HDR = 14;
/** Snapshot capacity: an ARP body behind a tag (18 + 28) and room to spare, rounded up. */
export const SNAP_MAX = 64;

/**
 * Make `snap` hold the frame's first min(n, length, SNAP_MAX) bytes, copying from the sender's buffers only the
 * bytes not copied yet (each byte is fetched at most once per frame). Returns snapLen. A port starts every frame
 * with snapLen = 0 (the switch's forward() does it); the snapshot then grows, never changes.
 */
export function frameSnapshot(frame: Frame, n: number): number {
  const have = frame.snapLen;
  let want = n < frame.length ? n : frame.length;
  if (want > SNAP_MAX) want = SNAP_MAX;
  if (want <= have) return have;
  const sg = frame.sg;
  const pos = frame.offset + have;
  const at = sg.count !== 0 ? sg.offs[0] + pos : 0;
  if (sg.count !== 0 && pos + (want - have) <= sg.lens[0] && at <= 0x7fff_ffff) {
    // Usual case, the header inside the first entry at an int32 offset: a plain loop with small-integer indices.
    const b = sg.bufs[0];
    const o = (at | 0) - have;
    const d = frame.snap;
    let k = have;
    if (have === 0 && want >= ETHER_HDR_LEN) {
      // The Ethernet header unrolled: a byte loop costs V8 a bounds check per byte.
      d[0] = b[o];
      d[1] = b[o + 1];
      d[2] = b[o + 2];
      d[3] = b[o + 3];
      d[4] = b[o + 4];
      d[5] = b[o + 5];
      d[6] = b[o + 6];
      d[7] = b[o + 7];
      d[8] = b[o + 8];
      d[9] = b[o + 9];
      d[10] = b[o + 10];
      d[11] = b[o + 11];
      d[12] = b[o + 12];
      d[13] = b[o + 13];
      k = ETHER_HDR_LEN;
    }
    for (; k < want; k++) d[k] = b[o + k];
    frame.snapLen = want;
    return want;
  }
  frame.snapLen = have + sgCopyOut(sg, pos, frame.snap, have, want - have);
  return frame.snapLen;
}

/**
 * Copy source bytes [pos, pos+len) of the frame (as received) to `dst` at `dstPos`: the snapshot part from `snap`,
 * the rest from the sender's buffers. Returns bytes copied.
 */
function srcCopy(frame: Frame, pos: number, dst: SgList, dstPos: number, len: number, batch: CopyBatch | null): number {
  const sn = frame.snapLen;
  if (pos >= sn) return sgCopy(dst, dstPos, frame.sg, frame.offset + pos, len, batch);
  const at = dst.count !== 0 ? dst.offs[0] + dstPos : 0;
  if (pos === 0 && sn >= ETHER_HDR_LEN && len >= sn && dst.count !== 0 && dstPos + sn <= dst.lens[0] && at <= 0x7fff_ffff) {
    // Usual case: the whole snapshot into the receiver's first entry. The Ethernet header unrolled (a byte loop
    // costs V8 a bounds check per byte), a tag or ARP body after it in a loop.
    const b = dst.bufs[0];
    const o = at | 0;
    const h = frame.snap;
    b[o] = h[0];
    b[o + 1] = h[1];
    b[o + 2] = h[2];
    b[o + 3] = h[3];
    b[o + 4] = h[4];
    b[o + 5] = h[5];
    b[o + 6] = h[6];
    b[o + 7] = h[7];
    b[o + 8] = h[8];
    b[o + 9] = h[9];
    b[o + 10] = h[10];
    b[o + 11] = h[11];
    b[o + 12] = h[12];
    b[o + 13] = h[13];
    for (let i = ETHER_HDR_LEN; i < sn; i++) b[o + i] = h[i];
    if (len === sn) return sn;
    const src = frame.sg;
    const rest = len - sn;
    const from = frame.offset + sn;
    if (batch !== null && rest <= COPY_MAX_LEN && dstPos + len <= dst.lens[0] && from + rest <= src.lens[0] && dst.handles[0] >= 0 && src.handles[0] >= 0) {
      // Usual case of the rest: one piece, guest to guest (sgCopy does the same, with a walk over both lists).
      batch.add(dst.handles[0], at + sn, src.handles[0], src.offs[0] + from, rest);
      return len;
    }
    return sn + sgCopy(dst, dstPos + sn, src, from, rest, batch);
  }
  const k = sn - pos < len ? sn - pos : len;
  const d = sgCopyIn(dst, dstPos, frame.snap, pos, k);
  if (d < k || k === len) return d; // done, or the receiver's list ends inside the head
  return k + sgCopy(dst, dstPos + k, frame.sg, frame.offset + pos + k, len - k, batch);
}

/** Scratch for the inserted tag bytes (module-level: nothing allocated per frame). */
const tagBytes = new Uint8Array(4);
const TAG_AT = 12;

/**
 * Copy bytes [pos, pos+len) of `frame` as sent (tag inserted/stripped as the frame's fields say) into `dst` at
 * logical offset `dstPos`: the one copy of a frame into a receiver's buffers. Returns bytes copied. The snapshot
 * bytes come from `snap` (what the switch checked), the rest straight from the sender's buffers.
 * With a `batch`, the rest (guest memory to guest memory) is queued on it and lands at batch.run(), which the
 * caller runs before the receiver or the sender can see the buffers; the snapshot and tag bytes are written now.
 */
export function frameCopyTo(frame: Frame, pos: number, dst: SgList, dstPos: number, len: number, batch: CopyBatch | null = null): number {
  // Kept small (the rewrite is out of line) so that V8 inlines the plain copy into the ports' deliver().
  if (frame.vlanTag < 0 && !frame.stripTag) return srcCopy(frame, pos, dst, dstPos, len, batch);
  return copyRewritten(frame, pos, dst, dstPos, len, batch);
}

/** frameCopyTo() with an 802.1Q tag inserted and/or stripped. */
function copyRewritten(frame: Frame, pos: number, dst: SgList, dstPos: number, len: number, batch: CopyBatch | null): number {
  const ins = frame.vlanTag >= 0 ? 4 : 0;
  const skip = frame.stripTag ? 4 : 0;
  let done = 0;
  const end = pos + len;
  // [0, 12): addresses, from the source as is.
  if (pos < TAG_AT) {
    const n = Math.min(end, TAG_AT) - pos;
    done += srcCopy(frame, pos, dst, dstPos, n, batch);
    pos += n;
  }
  // [12, 12+ins): the inserted tag.
  if (ins !== 0 && pos < TAG_AT + ins && pos < end) {
    const tci = frame.vlanTag;
    tagBytes[0] = 0x81;
    tagBytes[1] = 0x00;
    tagBytes[2] = (tci >> 8) & 0xff;
    tagBytes[3] = tci & 0xff;
    const n = Math.min(end, TAG_AT + ins) - pos;
    done += sgCopyIn(dst, dstPos + done, tagBytes, pos - TAG_AT, n);
    pos += n;
  }
  // The rest: source byte (i - ins + skip).
  if (pos < end) done += srcCopy(frame, pos - ins + skip, dst, dstPos + done, end - pos, batch);
  return done;
}
