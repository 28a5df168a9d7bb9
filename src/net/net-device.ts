/**
 * NetDevice: a virtio-net device (VIRTIO 1.2 §5.1) that is also a switch Port.
 *
 * TX (guest → switch): pop a chain, skip the virtio-net header, hand the Frame (a window on the guest's own TX
 * buffers) to the switch, return the chain with used len 0. RX (switch → guest): deliver() and flush() are NetRx's
 * (net-rx.ts): one copy from the sender's buffers into RX chains, one publish per batch.
 *
 * Queue pairs: RX = 2q, TX = 2q+1 (§5.1.2). One pair is served today; the arrays are per pair for multiqueue.
 *
 * Offloads (VIRTIO 1.2 §5.1.6.2): CSUM/HOST_TSO4/6 let the guest send partial checksums and TCP frames up to 64 KiB;
 * processTx parses the TX header once into the Frame. The receiving port passes the header on when it negotiated
 * the same offload (GUEST_CSUM, GUEST_TSO4/6), or completes it in software (net-rx.ts, offload.ts).
 */
import type { DeviceQueue, VirtioDevice } from '../device/device.js';
import { DescriptorChain } from '../virtqueue/descriptor-chain.js';
import { SgList, sgCopyOut } from '../memory/sg-list.js';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_STATUS,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
  hasBit,
} from '../virtio/features.js';
import type { Logger } from '../util/log.js';
import { RateLimitedLog } from '../util/log.js';
import { Frame } from './frame.js';
import { formatMac, parseMac } from './mac.js';
import { NO_PORT, type Port, type PortId } from './port.js';
import type { Pollable } from './poller.js';
import type { Switch } from './switch.js';
import { gsoHeaderEnd } from './offload.js';
import { NetRx } from './net-rx.js';
import {
  VIRTIO_NET_CONFIG_LEN,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_S_LINK_UP,
  netHdrLen,
} from './virtio-net-hdr.js';

/** Chains processed per TX run before the next port's turn (fairness between ports on one switch poller). */
const TX_BUDGET = 256;
/**
 * RX is published (switch endBatch: one used.idx store per touched port) at least every this many TX frames of a
 * run, so the receiver sees the first frames of a 256-frame run, and its echo overlaps the rest of the run.
 */
const TX_PUBLISH_EVERY = 32;
/**
 * Empty polls (one per switch poller turn) before kicks are re-armed. While a guest is sending, polling with kicks
 * off saves an eventfd wakeup per burst here and an eventfd write per burst in the guest (vhost-net's busyloop
 * idea). It costs a few microseconds of polling after the last frame of a burst, never a clock read. In poll mode
 * (switch `poll`) kicks are never re-armed.
 */
const TX_IDLE_POLLS = 16;

/** Device counters (guest's view: tx = frames the guest sent, rx = frames the guest received). */
export interface NetCounters {
  txFrames: number;
  txBytes: number;
  /** TX chains that broke a descriptor rule or were shorter than the header. */
  txBadChain: number;
  rxFrames: number;
  rxBytes: number;
  /** No RX buffer was available (ring empty, or the RX queue is not running). */
  rxNoBuffer: number;
  /** The guest's RX buffers were too small for the frame. */
  rxBufferTooSmall: number;
  rxBadChain: number;
  /** TX frames with an offload header vhostd cannot process (malformed, unsupported GSO type): dropped. */
  txBadOffload: number;
  /** Egress frames whose software checksum/segmentation failed (malformed headers): dropped. */
  rxBadOffload: number;
  /** Egress frames completed (checksum) or segmented in software for this port. */
  rxSoftOffload: number;
}

export interface NetDeviceOptions {
  /** Port name, e.g. "vm1.net0". */
  name: string;
  sw: Switch;
  log: Logger;
  /** The guest's MAC (lladdr), reported in config space. */
  mac: string;
}

export class NetDevice implements VirtioDevice, Port, Pollable {
  readonly kind = 'net' as const;
  readonly maxQueues = 2;
  id: PortId = NO_PORT;
  readonly name: string;
  /**
   * This port's MTU (docs/configuration.md): the switch MTU, or the smaller one the guest set with NET_SET_MTU when it
   * accepted VIRTIO_NET_F_MTU. A guest that renegotiates without F_MTU gets the switch MTU back.
   */
  mtu: number;
  readonly mac: string;
  readonly counters: NetCounters = {
    txFrames: 0, txBytes: 0, txBadChain: 0, rxFrames: 0, rxBytes: 0, rxNoBuffer: 0, rxBufferTooSmall: 0, rxBadChain: 0,
    txBadOffload: 0, rxBadOffload: 0, rxSoftOffload: 0,
  };
  /** Negotiated virtio features (for status output). */
  acked = 0n;
  /** Called with true when the guest starts its TX queue (before any frame is forwarded), false on reset(). */
  onLinkChange?: (up: boolean) => void;
  private hdrLen = 12;
  private readonly sw: Switch;
  private readonly log: Logger;
  private readonly guestErrors: RateLimitedLog;
  private txQ: DeviceQueue | null = null;
  /** In the switch poller's list (written by the poller only). */
  pollActive = false;
  private txIdlePolls = 0;
  /** Reusable chains, sized for the queue when it starts (control path), so nothing is allocated per frame. */
  private txChain = new DescriptorChain(256);
  private txChainSize = 256;
  private readonly txFrame = new Frame(new SgList(1));
  /** TX: the sender's header bytes (10: num_buffers is not read). */
  private readonly txHdr = new Uint8Array(10);
  /** Offloads the guest negotiated: it sends partial checksums / TSO frames (TX; RX ones: NetRx). */
  private txCsum = false;
  private txTso4 = false;
  private txTso6 = false;
  /** The RX side: chains, header, software offload (net-rx.ts). */
  private readonly rx: NetRx;

  constructor(opts: NetDeviceOptions) {
    this.name = opts.name;
    this.sw = opts.sw;
    this.log = opts.log;
    this.mac = opts.mac;
    parseMac(opts.mac); // validated by the config; throws on garbage
    this.guestErrors = new RateLimitedLog(opts.log);
    this.rx = new NetRx(this.counters, this.guestErrors);
    this.mtu = this.sw.mtu;
    this.sw.addPort(this);
  }

  features(): bigint {
    return (
      bit(VIRTIO_F_VERSION_1) |
      bit(VIRTIO_NET_F_MRG_RXBUF) |
      bit(VIRTIO_RING_F_INDIRECT_DESC) |
      bit(VIRTIO_RING_F_EVENT_IDX) |
      bit(VIRTIO_NET_F_MAC) |
      bit(VIRTIO_NET_F_STATUS) |
      bit(VIRTIO_NET_F_MTU) |
      bit(VIRTIO_NET_F_CSUM) |
      bit(VIRTIO_NET_F_GUEST_CSUM) |
      bit(VIRTIO_NET_F_HOST_TSO4) |
      bit(VIRTIO_NET_F_HOST_TSO6) |
      bit(VIRTIO_NET_F_GUEST_TSO4) |
      bit(VIRTIO_NET_F_GUEST_TSO6)
    );
  }

  queueNum(): number {
    return this.maxQueues / 2;
  }

  setFeatures(acked: bigint): void {
    this.acked = acked;
    const mrg = hasBit(acked, VIRTIO_NET_F_MRG_RXBUF);
    this.hdrLen = netHdrLen(hasBit(acked, VIRTIO_F_VERSION_1), mrg);
    // TSO needs the matching checksum offload (VIRTIO 1.2 §5.1.3.1); a driver that acks one without the other
    // gets the TSO bit ignored.
    this.txCsum = hasBit(acked, VIRTIO_NET_F_CSUM);
    this.txTso4 = this.txCsum && hasBit(acked, VIRTIO_NET_F_HOST_TSO4);
    this.txTso6 = this.txCsum && hasBit(acked, VIRTIO_NET_F_HOST_TSO6);
    const rxCsum = hasBit(acked, VIRTIO_NET_F_GUEST_CSUM);
    this.rx.configure(this.hdrLen, mrg, rxCsum, rxCsum && hasBit(acked, VIRTIO_NET_F_GUEST_TSO4), rxCsum && hasBit(acked, VIRTIO_NET_F_GUEST_TSO6));
    const f = this.txFrame; // a guest without CSUM sends plain frames: no stale offload fields
    f.vnetFlags = f.gsoType = f.gsoSize = f.hdrLen = f.csumStart = f.csumOffset = f.gsoHdrEnd = 0;
    // QEMU sends NET_SET_MTU just before SET_FEATURES when the guest accepted F_MTU (docs/protocol.md §2); a
    // guest that did not (OpenBSD vio(4) renegotiating above 65435) runs at the switch MTU.
    if (!hasBit(acked, VIRTIO_NET_F_MTU)) this.mtu = this.sw.mtu;
  }

  queueStart(q: DeviceQueue): void {
    if (q.index % 2 === 0) {
      this.rx.start(q);
    } else {
      if (this.txChainSize !== q.queue.size) {
        this.txChain = new DescriptorChain(q.queue.size);
        this.txChainSize = q.queue.size;
      }
      this.txQ = q;
      this.txIdlePolls = 0;
      this.onLinkChange?.(true);
      this.processTx();
    }
  }

  queueStop(index: number): void {
    if (index % 2 === 0) {
      this.rx.stop();
    } else {
      this.txQ = null;
    }
  }

  queueKick(index: number): void {
    // Already on the poller: it runs the queue on its next turn (a kick that raced with disabling is spurious).
    if (index % 2 === 1 && !this.pollActive) this.processTx();
  }

  getConfig(offset: number, size: number): Uint8Array {
    const cfg = new Uint8Array(Math.max(VIRTIO_NET_CONFIG_LEN, offset + size));
    const key = parseMac(this.mac);
    for (let i = 0; i < 6; i++) cfg[i] = Math.floor(key / 2 ** (8 * (5 - i))) & 0xff;
    const dv = new DataView(cfg.buffer);
    dv.setUint16(6, VIRTIO_NET_S_LINK_UP, true);
    dv.setUint16(8, this.maxQueues / 2, true);
    dv.setUint16(10, this.sw.mtu, true);
    return cfg.slice(offset, offset + size);
  }

  setConfig(): boolean {
    return false; // the driver writes nothing we act on (mac writes are handled by QEMU)
  }

  setMtu(mtu: number): string | null {
    if (mtu < 68 || mtu > 65535) return `guest MTU ${mtu} is outside 68..65535`;
    if (mtu > this.sw.mtu) return `guest MTU ${mtu} is above the MTU ${this.sw.mtu} of switch "${this.sw.name}" (raise the switch mtu or lower host_mtu)`;
    this.mtu = mtu;
    return null;
  }

  reset(): void {
    this.mtu = this.sw.mtu;
    this.rx.reset();
    this.txQ = null;
    this.acked = 0n;
    this.txCsum = this.txTso4 = this.txTso6 = false;
    // The guest is gone: forget where its MACs were.
    this.sw.macTable.remove(this.id);
    this.onLinkChange?.(false);
  }

  /** Stop being a switch port (device removed from the configuration or daemon shutdown). */
  detach(): void {
    this.sw.poller.remove(this);
    this.sw.removePort(this);
  }

  /** The guest has started its TX queue (link up for the switch: statics of a locked port are installed). */
  get linkUp(): boolean {
    return this.txQ !== null;
  }

  get switchName(): string {
    return this.sw.name;
  }

  get description(): string {
    return `${this.name} (${formatMac(parseMac(this.mac))})`;
  }

  // ---------------------------------------------------------------- TX: guest → switch

  /** A kick or a queue start: run the TX queue now, and hand it to the switch poller if it has more to do. */
  private processTx(): void {
    if (this.txRun()) this.sw.poller.wake(this);
  }

  /** Switch poller turn (Pollable). */
  poll(): boolean {
    return this.txRun();
  }

  /**
   * One TX turn: up to TX_BUDGET chains with kicks off, RX published every TX_PUBLISH_EVERY frames. True: poll again
   * next turn (budget spent, kicks still off while the guest may be busy, or poll mode). False: kicks were re-armed
   * with nothing pending (enable, fence, re-check: VIRTIO 1.2 §2.7.10), or the queue is gone or broken.
   */
  private txRun(): boolean {
    const q = this.txQ;
    if (!q) return false;
    const vq = q.queue;
    const chain = this.txChain;
    const frame = this.txFrame;
    const hdrLen = this.hdrLen;
    const sw = this.sw;
    let budget = TX_BUDGET;
    for (;;) {
      vq.disableNotification();
      const start = budget;
      let sincePublish = 0;
      while (budget > 0 && vq.pop(chain)) {
        budget--;
        const len = chain.readableBytes - hdrLen;
        if (chain.error !== null || len < 0) {
          this.counters.txBadChain++;
          this.guestErrors.warn('tx-chain', { vq: q.index, head: chain.head, reason: chain.error ?? 'shorter than the virtio-net header' }, 'bad TX descriptor chain dropped');
        } else {
          frame.sg = chain.readable;
          frame.offset = hdrLen;
          frame.length = len;
          this.counters.txFrames++;
          this.counters.txBytes += len;
          if (this.txCsum ? this.parseTxHdr(frame) : true) sw.forward(this, frame);
        }
        vq.addUsed(chain.head, 0);
        if (++sincePublish === TX_PUBLISH_EVERY) {
          sincePublish = 0;
          sw.endBatch();
        }
      }
      sw.endBatch();
      q.publish();
      if (this.txQ !== q || vq.broken) return false;
      if (budget === 0) {
        // Kicks stay off: the poller comes back after the other ports had their turn.
        this.txIdlePolls = 0;
        return true;
      }
      this.txIdlePolls = budget < start ? 0 : this.txIdlePolls + 1;
      // Kicks stay off while the guest is busy (or for good in poll mode): look again on the next turn.
      if (this.txIdlePolls < TX_IDLE_POLLS || sw.poller.spin) return true;
      this.txIdlePolls = 0;
      // Re-enable kicks, then re-check: a buffer published in between is processed now, not lost (VIRTIO 1.2 §2.7.10).
      if (!vq.enableNotification()) return false;
    }
  }

  /**
   * Read the sender's virtio-net header into the frame's offload fields (only for a guest that negotiated CSUM).
   * False: an offload vhostd cannot honour (GSO type not negotiated or unknown): dropped and counted.
   */
  private parseTxHdr(frame: Frame): boolean {
    const h = this.txHdr;
    sgCopyOut(frame.sg, 0, h, 0, 10);
    const flags = h[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM;
    const gsoType = h[1];
    frame.vnetFlags = flags;
    frame.gsoType = gsoType;
    frame.gsoHdrEnd = 0;
    if ((flags | gsoType) === 0) {
      frame.gsoSize = frame.hdrLen = frame.csumStart = frame.csumOffset = 0;
      return true;
    }
    frame.hdrLen = h[2] | (h[3] << 8);
    frame.gsoSize = h[4] | (h[5] << 8);
    frame.csumStart = h[6] | (h[7] << 8);
    frame.csumOffset = h[8] | (h[9] << 8);
    if (gsoType === VIRTIO_NET_HDR_GSO_NONE) return true;
    const base = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    const ok =
      (base === VIRTIO_NET_HDR_GSO_TCPV4 && this.txTso4) || (base === VIRTIO_NET_HDR_GSO_TCPV6 && this.txTso6);
    if (!ok || flags === 0 || frame.gsoSize === 0) {
      this.counters.txBadOffload++;
      this.guestErrors.warn('tx-gso', { gsoType, gsoSize: frame.gsoSize, flags }, 'TX frame with an unsupported GSO header dropped');
      return false;
    }
    frame.gsoHdrEnd = gsoHeaderEnd(frame.sg, frame.offset, frame.csumStart);
    return true;
  }

  // ---------------------------------------------------------------- RX: switch → guest (net-rx.ts)

  deliver(frame: Frame): boolean {
    return this.rx.deliver(frame);
  }

  flush(): void {
    this.rx.flush();
  }
}
