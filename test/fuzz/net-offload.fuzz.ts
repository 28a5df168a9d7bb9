/**
 * Fuzz target: virtio-net header handling and software offloads (src/net/offload.ts; VIRTIO 1.2 §5.1.6.2):
 * the sender's 10-byte header decoded as NetDevice.parseTxHdr does, gsoHeaderEnd on the sender's buffers, then
 * SoftOffload.prepare/output (checksum completion, TSO) with an optional 802.1Q strip/insert, as a receiver that
 * did not negotiate the offload gets it. Input: 12-byte virtio-net header (byte 10: bit 0 strip a tag, bit 1
 * insert one; byte 11: where the sender's buffer is split in two), then the Ethernet frame.
 * Contract: nothing throws; every output frame fits the scratch; TSO segments carry at most gso_size payload
 * bytes, add up to the frame's payload, and have valid IPv4 header and TCP checksums.
 */
import { SgList } from '../../src/memory/sg-list.js';
import { Frame, NO_VLAN_TAG } from '../../src/net/frame.js';
import { gsoHeaderEnd, inetChecksum, MAX_OFFLOAD_FRAME, MAX_SEGMENTS, OFFLOAD_DROP, onesSum, SoftOffload } from '../../src/net/offload.js';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_LEN } from '../../src/net/virtio-net-hdr.js';
import type { FuzzTarget } from './engine.js';

const soft = new SoftOffload();
const sg = new SgList(2);
const frame = new Frame(sg);

function fail(m: string): never {
  throw new Error(`offload contract: ${m}`);
}

export const target: FuzzTarget = {
  name: 'net-offload',
  maxLen: VIRTIO_NET_HDR_LEN + 9018,
  allowed: () => false,
  // Ethertypes, the 802.1Q TPID, IP versions/protocol, GSO types (network byte order where it applies).
  dictionary: [[0x08, 0x00], [0x86, 0xdd], [0x81, 0x00], [0x45], [0x60], [0x06], [0x11], [0x01, 0x01], [0x01, 0x04], [0x01, 0x81]].map((b) => new Uint8Array(b)),
  run(data) {
    if (data.length < VIRTIO_NET_HDR_LEN + 14) return;
    const h = data;
    // parseTxHdr (NetDevice, private): the fields as the guest wrote them.
    frame.vnetFlags = h[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM;
    frame.gsoType = h[1];
    frame.hdrLen = h[2] | (h[3] << 8);
    frame.gsoSize = h[4] | (h[5] << 8);
    frame.csumStart = h[6] | (h[7] << 8);
    frame.csumOffset = h[8] | (h[9] << 8);
    const split = Math.min(VIRTIO_NET_HDR_LEN + h[11] * 8, data.length);
    sg.reset();
    sg.push(data, 0, split);
    if (split < data.length) sg.push(data, split, data.length - split);
    frame.offset = VIRTIO_NET_HDR_LEN;
    const raw = data.length - VIRTIO_NET_HDR_LEN;
    frame.gsoHdrEnd = frame.gsoType === VIRTIO_NET_HDR_GSO_NONE ? 0 : gsoHeaderEnd(sg, frame.offset, frame.csumStart);
    if (!(frame.gsoHdrEnd >= 0 && frame.gsoHdrEnd <= frame.csumStart + 60)) fail(`gsoHeaderEnd ${frame.gsoHdrEnd}`);
    const tagged = raw >= 18 && data[VIRTIO_NET_HDR_LEN + 12] === 0x81 && data[VIRTIO_NET_HDR_LEN + 13] === 0x00;
    frame.stripTag = (h[10] & 1) !== 0 && tagged;
    frame.vlanTag = h[10] & 2 ? 0x0064 : NO_VLAN_TAG;
    frame.length = raw + (frame.vlanTag >= 0 ? 4 : 0) - (frame.stripTag ? 4 : 0);

    const n = soft.prepare(frame);
    if (n === OFFLOAD_DROP) return;
    if (!(n >= 1 && n <= MAX_SEGMENTS)) fail(`${n} output frames`);
    const plan = soft.plan;
    const gso = frame.gsoType !== VIRTIO_NET_HDR_GSO_NONE;
    let payload = 0;
    for (let i = 0; i < n; i++) {
      const len = soft.output(i);
      if (!(len > 0 && len <= MAX_OFFLOAD_FRAME)) fail(`output ${i} of ${len} bytes`);
      if (!gso) {
        if (len !== frame.length) fail(`checksum output of ${len} bytes for a ${frame.length}-byte frame`);
        continue;
      }
      const seg = len - plan.hdrs;
      if (seg < 0 || seg > plan.mss || (plan.payload > 0 && seg === 0)) fail(`segment ${i} carries ${seg} payload bytes (mss ${plan.mss})`);
      payload += seg;
      if (!plan.v6 && inetChecksum(soft.out, plan.l3, plan.l4 - plan.l3) !== 0) fail(`segment ${i} has a bad IPv4 header checksum`);
      // TCP checksum over the pseudo-header (addresses, protocol 6, TCP length) and the segment: sums to zero.
      const l4Len = len - plan.l4;
      const pseudo = (plan.v6 ? onesSum(soft.out, plan.l3 + 8, 32) : onesSum(soft.out, plan.l3 + 12, 8)) + 6 + l4Len;
      if (inetChecksum(soft.out, plan.l4, l4Len, pseudo) !== 0) fail(`segment ${i} has a bad TCP checksum`);
    }
    if (gso && payload !== plan.payload) fail(`segments carry ${payload} bytes of ${plan.payload}`);
  },
};
