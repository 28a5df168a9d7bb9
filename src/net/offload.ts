/**
 * Software offloads: what vhostd does for a port that did not negotiate an offload the sender used.
 *  - Checksum completion (VIRTIO_NET_HDR_F_NEEDS_CSUM): the 16-bit ones'-complement sum from csum_start to the end
 *    of the frame (the checksum field holds the sender's pseudo-header sum), complemented, stored at
 *    csum_start + csum_offset (VIRTIO 1.2 §5.1.6.2).
 *  - TCP segmentation (GSO TCPv4/TCPv6): a frame of up to 64 KiB becomes frames of at most gso_size payload bytes.
 *    IPv4: total length, id + i, header checksum; IPv6: payload length; TCP: seq + i*mss, FIN/PSH only on the last
 *    segment, CWR only on the first, full checksum over the pseudo-header. Headers are always parsed from the
 *    frame: the header's hdr_len is a hint (Linux sets it to skb_headlen, which may include payload).
 *
 * Pure functions over Uint8Array (the frame already copied, as sent, into a scratch buffer), plus SoftOffload:
 * per-port preallocated scratch buffers and the per-frame plan, so the slow path allocates nothing per frame.
 */
import { sgByteAt, SgList } from '../memory/sg-list.js';
import { Frame, frameCopyTo } from './frame.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
} from './virtio-net-hdr.js';
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN } from './ethernet.js';

const IPPROTO_TCP = 6;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;
/** Largest frame a sender can hand over: IP 65535 + Ethernet + one 802.1Q tag (+ slack for a second tag). */
export const MAX_OFFLOAD_FRAME = 65535 + 14 + 8;
/** Most segments one GSO frame may become (a 64 KiB frame at an MSS of 64): more is a hostile header. */
export const MAX_SEGMENTS = 1024;

/** Ones'-complement sum of buf[off, off+len) (big-endian 16-bit words, odd tail padded), added to `sum`, unfolded. */
export function onesSum(buf: Uint8Array, off: number, len: number, sum = 0): number {
  const end = off + len;
  let i = off;
  // Accumulate in a double: 65535 * 2^37 words before losing precision; fold now and then anyway.
  for (; i + 1 < end; i += 2) {
    sum += (buf[i] << 8) | buf[i + 1];
    if (sum > 0x7fffffff) sum = (sum & 0xffff) + Math.floor(sum / 65536);
  }
  if (i < end) sum += buf[i] << 8;
  return sum;
}

/** Fold a sum to 16 bits (end-around carry). */
export function foldSum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 65536);
  return sum;
}

/** The Internet checksum (complement of the folded sum) of buf[off, off+len). */
export function inetChecksum(buf: Uint8Array, off: number, len: number, sum = 0): number {
  return ~foldSum(onesSum(buf, off, len, sum)) & 0xffff;
}

/**
 * Complete a partial checksum in place: sum buf[csumStart, len) (the field holds the pseudo-header sum) and store
 * the complement at csumStart + csumOffset. False (frame unchanged) when the offsets do not fit the frame.
 */
export function completeChecksum(buf: Uint8Array, len: number, csumStart: number, csumOffset: number): boolean {
  const at = csumStart + csumOffset;
  if (csumStart >= len || at + 2 > len) return false;
  const c = inetChecksum(buf, csumStart, len - csumStart);
  buf[at] = c >> 8;
  buf[at + 1] = c & 0xff;
  return true;
}

/** The parsed plan of one TCP segmentation (reused; see tsoParse). */
export class TsoPlan {
  v6 = false;
  l3 = 0;
  l4 = 0;
  /** Bytes of headers (Ethernet .. end of TCP options) copied into every segment. */
  hdrs = 0;
  payload = 0;
  mss = 0;
  count = 0;
  ipId = 0;
  seq = 0;
  tcpFlags = 0;
}

const rd16 = (b: Uint8Array, o: number): number => (b[o] << 8) | b[o + 1];
const wr16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = (v >> 8) & 0xff;
  b[o + 1] = v & 0xff;
};

/**
 * Parse the headers of a TCP GSO frame buf[0, len) and fill `plan`. `csumStart` (the sender's, or -1) locates the
 * TCP header behind IPv6 extension headers. False for anything that is not a well-formed TCPv4/TCPv6 frame of the
 * announced type, a zero gso_size or more than MAX_SEGMENTS segments: the caller drops and counts it.
 */
export function tsoParse(buf: Uint8Array, len: number, gsoType: number, gsoSize: number, csumStart: number, plan: TsoPlan): boolean {
  const type = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  if (gsoSize <= 0 || len < 14) return false;
  let l3 = 14;
  let et = rd16(buf, 12);
  if (et === ETHERTYPE_VLAN) {
    if (len < 18) return false;
    et = rd16(buf, 16);
    l3 = 18;
  }
  let l4: number;
  if (type === VIRTIO_NET_HDR_GSO_TCPV4) {
    if (et !== ETHERTYPE_IPV4 || len < l3 + 20 || buf[l3] >> 4 !== 4) return false;
    const ihl = (buf[l3] & 0x0f) * 4;
    if (ihl < 20 || buf[l3 + 9] !== IPPROTO_TCP) return false;
    l4 = l3 + ihl;
    plan.v6 = false;
    plan.ipId = rd16(buf, l3 + 4);
  } else if (type === VIRTIO_NET_HDR_GSO_TCPV6) {
    if (et !== ETHERTYPE_IPV6 || len < l3 + 40 || buf[l3] >> 4 !== 6) return false;
    if (buf[l3 + 6] === IPPROTO_TCP) l4 = l3 + 40;
    else if (csumStart > l3 + 40) l4 = csumStart; // extension headers: trust the sender's csum_start
    else return false;
    plan.v6 = true;
  } else {
    return false;
  }
  if (len < l4 + 20) return false;
  const doff = (buf[l4 + 12] >> 4) * 4;
  if (doff < 20 || len < l4 + doff) return false;
  plan.l3 = l3;
  plan.l4 = l4;
  plan.hdrs = l4 + doff;
  plan.payload = len - plan.hdrs;
  plan.mss = gsoSize;
  plan.count = plan.payload === 0 ? 1 : Math.ceil(plan.payload / gsoSize);
  if (plan.count > MAX_SEGMENTS) return false;
  plan.seq = ((buf[l4 + 4] << 24) | (buf[l4 + 5] << 16) | (buf[l4 + 6] << 8) | buf[l4 + 7]) >>> 0;
  plan.tcpFlags = buf[l4 + 13];
  return true;
}

/** Build segment `i` of `plan` from buf into out (from 0); returns its length. */
export function tsoSegment(buf: Uint8Array, plan: TsoPlan, i: number, out: Uint8Array): number {
  const { hdrs, l3, l4, mss } = plan;
  const from = hdrs + i * mss;
  const plen = Math.min(mss, plan.payload - i * mss);
  out.set(buf.subarray(0, hdrs), 0);
  out.set(buf.subarray(from, from + plen), hdrs);
  const segLen = hdrs + plen;
  const l4Len = segLen - l4;
  // IP
  let pseudo: number;
  if (!plan.v6) {
    wr16(out, l3 + 2, segLen - l3);
    wr16(out, l3 + 4, (plan.ipId + i) & 0xffff);
    wr16(out, l3 + 10, 0);
    const ihl = l4 - l3;
    wr16(out, l3 + 10, inetChecksum(out, l3, ihl));
    pseudo = onesSum(out, l3 + 12, 8) + IPPROTO_TCP + l4Len;
  } else {
    wr16(out, l3 + 4, segLen - l3 - 40);
    pseudo = onesSum(out, l3 + 8, 32) + IPPROTO_TCP + l4Len;
  }
  // TCP
  const seq = (plan.seq + i * mss) >>> 0;
  out[l4 + 4] = seq >>> 24;
  out[l4 + 5] = (seq >>> 16) & 0xff;
  out[l4 + 6] = (seq >>> 8) & 0xff;
  out[l4 + 7] = seq & 0xff;
  let flags = plan.tcpFlags;
  if (i !== plan.count - 1) flags &= ~(TCP_FIN | TCP_PSH);
  if (i !== 0) flags &= ~TCP_CWR;
  out[l4 + 13] = flags;
  wr16(out, l4 + 16, 0);
  wr16(out, l4 + 16, inetChecksum(out, l4, l4Len, pseudo));
  return segLen;
}

/** What SoftOffload.prepare() made of a frame. */
export const OFFLOAD_DROP = -1;

/**
 * Per-port software offload engine: preallocated scratch for one whole frame and one segment. prepare() copies the
 * frame as sent (VLAN rewrite applied) into the scratch and returns the number of output frames (1 for a completed
 * checksum, n for TSO) or OFFLOAD_DROP; output(i) then gives frame i's length in `out` (its bytes from 0).
 */
export class SoftOffload {
  readonly buf = new Uint8Array(MAX_OFFLOAD_FRAME);
  readonly seg = new Uint8Array(MAX_OFFLOAD_FRAME);
  private readonly sg = new SgList(1);
  readonly plan = new TsoPlan();
  private gso = false;
  private len = 0;
  /** The bytes of the last output(). */
  out: Uint8Array = this.buf;

  constructor() {
    this.sg.push(this.buf, 0, this.buf.length);
  }

  /** Offset shift of the frame as sent vs the sender's bytes (VLAN tag inserted: +4, stripped: -4). */
  static shift(frame: Frame): number {
    return (frame.vlanTag >= 0 ? 4 : 0) - (frame.stripTag ? 4 : 0);
  }

  prepare(frame: Frame): number {
    const len = frame.length;
    if (len > this.buf.length) return OFFLOAD_DROP;
    frameCopyTo(frame, 0, this.sg, 0, len);
    this.len = len;
    const csumStart = frame.csumStart + SoftOffload.shift(frame);
    const needsCsum = (frame.vnetFlags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
    if (frame.gsoType === VIRTIO_NET_HDR_GSO_NONE) {
      this.gso = false;
      if (needsCsum && !completeChecksum(this.buf, len, csumStart, frame.csumOffset)) return OFFLOAD_DROP;
      return 1;
    }
    this.gso = true;
    if (!tsoParse(this.buf, len, frame.gsoType, frame.gsoSize, needsCsum ? csumStart : -1, this.plan)) return OFFLOAD_DROP;
    // The switch checked the MTU with the TCP header end read at ingress (gsoHdrEnd); headers that parse to another
    // end in this copy were rewritten since (or never matched csum_start): segments would not be what was checked.
    if (frame.gsoHdrEnd !== 0 && this.plan.hdrs !== frame.gsoHdrEnd + SoftOffload.shift(frame)) return OFFLOAD_DROP;
    return this.plan.count;
  }

  output(i: number): number {
    if (!this.gso) {
      this.out = this.buf;
      return this.len;
    }
    this.out = this.seg;
    return tsoSegment(this.buf, this.plan, i, this.seg);
  }
}

/**
 * End of the TCP header of a GSO frame, read from the sender's buffers (TX side, once per GSO frame): csum_start +
 * data offset. The switch checks gso_size + this against the egress MTU. 0 when unreadable (the frame is then
 * checked as is, and the egress drops it as malformed).
 */
export function gsoHeaderEnd(sg: SgList, offset: number, csumStart: number): number {
  const b = sgByteAt(sg, offset + csumStart + 12);
  if (b < 0) return 0;
  return csumStart + (b >> 4) * 4;
}
