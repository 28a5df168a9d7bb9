/**
 * NetRx: the RX side of a NetDevice (switch → guest, VIRTIO 1.2 §5.1.6.3), owned by the device. deliver() pops RX
 * chains and copies the frame once, straight from the sender's buffers into them (MRG_RXBUF: as many chains as needed,
 * num_buffers in the first header); guest-to-guest bytes are queued on the copy batch (memory/copy-batch.ts) and land
 * in one native call per burst, before any publish. flush() publishes the batch with one used.idx store and at most
 * one interrupt. A receiver without RX buffers drops the frame and counts it: the sender never waits on a receiver.
 * Offloads: a frame whose offload the guest negotiated (GUEST_CSUM, GUEST_TSO4/6) carries the sender's header; for
 * one it did not, SoftOffload (offload.ts) completes the checksum or segments it and each result is a plain frame.
 */
import type { DeviceQueue } from '../device/device.js';
import { DescriptorChain } from '../virtqueue/descriptor-chain.js';
import { SgList, sgCopyIn } from '../memory/sg-list.js';
import { copyBatch } from '../memory/copy-batch.js';
import type { RateLimitedLog } from '../util/log.js';
import { Frame, frameCopyTo } from './frame.js';
import type { NetCounters } from './net-device.js';
import { OFFLOAD_DROP, SoftOffload } from './offload.js';
import {
  NUM_BUFFERS_OFFSET,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
} from './virtio-net-hdr.js';

/** Most RX chains one frame may span with MRG_RXBUF (a 64 KiB frame in 1.5 KiB buffers needs 44). */
const MAX_RX_CHAINS = 64;

export class NetRx {
  /** virtio-net header length and MRG_RXBUF, as negotiated (configure()). */
  private hdrLen = 12;
  private mrg = false;
  /** Offloads the guest takes on RX. */
  private rxCsum = false;
  private rxTso4 = false;
  private rxTso6 = false;
  private rxQ: DeviceQueue | null = null;
  private rxPending = false;
  /** Reusable chains, sized for the queue when it starts (control path), so nothing is allocated per frame. */
  private rxChains: DescriptorChain[] = [];
  private rxChainSize = 0;
  private readonly rxHdr = new Uint8Array(12);
  /** Software offload scratch, made on first use (64 KiB × 2, only for ports that ever need it). */
  private soft: SoftOffload | null = null;
  private readonly softFrame = new Frame(new SgList(1));

  constructor(
    /** The device's counters (rx* fields are written here). */
    private readonly counters: NetCounters,
    private readonly guestErrors: RateLimitedLog,
  ) {}

  /** Negotiated features (SET_FEATURES; reset() passes all false). TSO implies CSUM, checked by the caller. */
  configure(hdrLen: number, mrg: boolean, csum: boolean, tso4: boolean, tso6: boolean): void {
    this.hdrLen = hdrLen;
    this.mrg = mrg;
    this.rxCsum = csum;
    this.rxTso4 = tso4;
    this.rxTso6 = tso6;
  }

  /** The RX queue started: chains sized for it (control path). */
  start(q: DeviceQueue): void {
    const size = q.queue.size;
    if (this.rxChains.length === 0 || this.rxChainSize !== size) {
      this.rxChains = Array.from({ length: MAX_RX_CHAINS }, () => new DescriptorChain(size));
      this.rxChainSize = size;
    }
    this.rxQ = q;
    // RX buffers are consumed when frames arrive, not on kicks: keep the guest from kicking RX.
    q.queue.disableNotification();
  }

  /** The RX queue stops: what is pending is published first. */
  stop(): void {
    copyBatch.run(); // queued copies into this ring land before its last publish
    if (this.rxQ && this.rxPending) this.rxQ.publish();
    this.rxPending = false;
    this.rxQ = null;
  }

  /** Device reset: the queue is gone, nothing is published. */
  reset(): void {
    this.rxQ = null;
    this.rxPending = false;
    this.rxCsum = this.rxTso4 = this.rxTso6 = false;
  }

  /** Port.deliver of the device: a plain frame, one the receiver takes with its offload, or the software path. */
  deliver(frame: Frame): boolean {
    if ((frame.vnetFlags | frame.gsoType) === 0) return this.fill(frame);
    const shift = SoftOffload.shift(frame);
    const gso = frame.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    const pass =
      gso === VIRTIO_NET_HDR_GSO_NONE ? this.rxCsum : gso === VIRTIO_NET_HDR_GSO_TCPV4 ? this.rxTso4 : gso === VIRTIO_NET_HDR_GSO_TCPV6 && this.rxTso6;
    if (pass) {
      // The receiver takes the offload: the sender's header travels with the frame (a 64 KiB TSO frame is one frame).
      const h = this.rxHdr;
      const hdrLen = frame.hdrLen === 0 ? 0 : frame.hdrLen + shift;
      const csumStart = frame.csumStart + shift;
      h[0] = frame.vnetFlags;
      h[1] = frame.gsoType;
      h[2] = hdrLen & 0xff;
      h[3] = (hdrLen >> 8) & 0xff;
      h[4] = frame.gsoSize & 0xff;
      h[5] = frame.gsoSize >> 8;
      h[6] = csumStart & 0xff;
      h[7] = (csumStart >> 8) & 0xff;
      h[8] = frame.csumOffset & 0xff;
      h[9] = frame.csumOffset >> 8;
      const ok = this.fill(frame);
      h.fill(0, 0, 10);
      return ok;
    }
    return this.deliverSoft(frame);
  }

  /** Slow path: complete the checksum / segment in the scratch, then fill each result as a plain frame. */
  private deliverSoft(frame: Frame): boolean {
    const soft = (this.soft ??= new SoftOffload());
    const n = soft.prepare(frame);
    if (n === OFFLOAD_DROP) {
      this.counters.rxBadOffload++;
      this.guestErrors.warn('rx-offload', { flags: frame.vnetFlags, gsoType: frame.gsoType, csumStart: frame.csumStart, len: frame.length }, 'frame with malformed offload headers dropped');
      return false;
    }
    this.counters.rxSoftOffload++;
    const sf = this.softFrame;
    const h = this.rxHdr;
    if (this.rxCsum) h[0] = VIRTIO_NET_HDR_F_DATA_VALID; // vhostd computed every checksum itself
    let all = true;
    for (let i = 0; i < n; i++) {
      const len = soft.output(i);
      sf.sg.reset();
      sf.sg.push(soft.out, 0, len);
      sf.offset = 0;
      sf.length = len;
      if (!this.fill(sf)) all = false;
    }
    h[0] = 0;
    return all;
  }

  /** Pop RX chains for `frame`, write this.rxHdr (num_buffers set here) and copy the frame once. */
  private fill(frame: Frame): boolean {
    const q = this.rxQ;
    if (!q) {
      this.counters.rxNoBuffer++;
      return false;
    }
    const vq = q.queue;
    const hdrLen = this.hdrLen;
    const need = hdrLen + frame.length;
    const chains = this.rxChains;
    let n = 0;
    let room = 0;
    let skipped = 0;
    while (room < need) {
      if (n === (this.mrg ? MAX_RX_CHAINS : 1)) break;
      const ch = chains[n];
      if (!vq.pop(ch)) break;
      if (ch.error !== null || ch.writableBytes < (n === 0 ? hdrLen : 1)) {
        // Return a bad chain at once with len 0 (before this frame's entries, so num_buffers stays contiguous).
        this.counters.rxBadChain++;
        this.guestErrors.warn('rx-chain', { vq: q.index, head: ch.head, reason: ch.error ?? 'no writable space' }, 'bad RX descriptor chain returned unused');
        vq.addUsed(ch.head, 0);
        this.rxPending = true;
        skipped++;
        continue;
      }
      room += ch.writableBytes;
      n++;
    }
    if (vq.broken) {
      // The guest broke its RX ring (avail idx jump, head out of range): publish reports it (log, err eventfd)
      // and stops the queue; the frame is dropped.
      this.counters.rxNoBuffer++;
      copyBatch.run(); // earlier frames' copies into this ring land before the publish
      q.publish();
      return false;
    }
    if (room < need) {
      const tooSmall = n === (this.mrg ? MAX_RX_CHAINS : 1);
      if (tooSmall) this.counters.rxBufferTooSmall++;
      else this.counters.rxNoBuffer++;
      if (n > 0 && skipped === 0 && this.mrg) {
        // Give the chains back untouched (libvhost-user vu_queue_rewind): they serve the next frames.
        vq.unpop(chains, n);
      } else {
        // A buffer the frame cannot fit (no MRG_RXBUF), or chains around a bad one: return them unused.
        for (let i = 0; i < n; i++) vq.addUsed(chains[i].head, 0);
        if (n > 0) this.rxPending = true;
      }
      return false;
    }
    // Header: all zero but num_buffers, unless deliver() set the offload fields for this frame.
    const hdr = this.rxHdr;
    hdr[NUM_BUFFERS_OFFSET] = n & 0xff;
    hdr[NUM_BUFFERS_OFFSET + 1] = n >> 8;
    const first = chains[0].writable;
    const at = first.offs[0];
    if (first.lens[0] >= hdrLen && at <= 0x7fff_0000) {
      // Usual case, the header inside the first entry: unrolled stores (a byte loop costs a bounds check per byte).
      // Not shared with frame.ts's unrolled header stores: a common helper measured slower per frame on the rig.
      const b = first.bufs[0];
      const o = at | 0;
      b[o] = hdr[0];
      b[o + 1] = hdr[1];
      b[o + 2] = hdr[2];
      b[o + 3] = hdr[3];
      b[o + 4] = hdr[4];
      b[o + 5] = hdr[5];
      b[o + 6] = hdr[6];
      b[o + 7] = hdr[7];
      b[o + 8] = hdr[8];
      b[o + 9] = hdr[9];
      if (hdrLen === 12) {
        b[o + 10] = hdr[10];
        b[o + 11] = hdr[11];
      }
    } else {
      sgCopyIn(first, 0, hdr, 0, hdrLen);
    }
    // Guest-to-guest bytes past the snapshot are queued on copyBatch and land, one native call per burst, before
    // any publish of these chains or of the sender's (Switch.endBatch, flush, queueStop).
    let done = 0;
    const dirtyLog = vq.mem.dirtyLog;
    for (let i = 0; i < n; i++) {
      const ch = chains[i];
      const start = i === 0 ? hdrLen : 0;
      const take = Math.min(ch.writableBytes - start, frame.length - done);
      frameCopyTo(frame, done, ch.writable, start, take, copyBatch); // the frame as sent (VLAN tag inserted/stripped)
      if (dirtyLog !== null) {
        // Live migration: mark what was written, after the write (vhost-user spec, "Migration"): copies land now.
        copyBatch.run();
        dirtyLog.logSg(ch.writable, start + take);
      }
      done += take;
      vq.addUsed(ch.head, start + take);
    }
    this.rxPending = true;
    this.counters.rxFrames++;
    this.counters.rxBytes += frame.length;
    return true;
  }

  /** Publish what fill() added since the last flush (Port.flush, once per switch batch). */
  flush(): void {
    if (!this.rxPending) return;
    this.rxPending = false;
    copyBatch.run(); // a no-op after Switch.endBatch; here for a flush from anywhere else
    this.rxQ?.publish();
  }
}
