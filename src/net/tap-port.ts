/**
 * TapPort: the host port (`vport "NAME"` in a switch block), a switch Port over a Linux TAP interface,
 * so the host's own stack joins the switch as OpenBSD's vport(4) does: the operator gives the
 * tap an address and may run a DHCP server on it (docs/vport.md).
 *
 * Host → switch: a uv_poll watcher on the tap fd; on each wakeup up to RX_BUDGET frames are read (one read() = one
 * frame, IFF_NO_PI), each wrapped in the one reusable Frame over a preallocated buffer and forwarded, then one
 * endBatch(). The watcher is level-triggered: frames left after the budget wake it again on the next loop turn.
 * Switch → host: deliver() copies the frame once (frameCopyTo: the header the switch checked, then the rest out of
 * the sender's buffers) into a preallocated buffer and write()s it to the tap. A full tap queue (EAGAIN) drops and
 * counts: the switch never waits on the host. flush() is a no-op (each write is already a complete delivery).
 * Nothing is allocated per frame: both buffers are addon mappings (memory/scratch.ts), so the copies between them
 * and guest memory are memmoves through the copy batch, run before the buffer is reused (read) or written.
 *
 * Checksums: the tap is opened without IFF_VNET_HDR and without offloads, so the kernel expects every frame it gets
 * from the tap to carry complete checksums. A guest frame with offloads (partial checksum, TSO: Frame.vnetFlags /
 * gsoType) goes through the software path (deliverSoft, offload.ts): the checksum is completed and a TSO
 * frame is segmented into MTU-sized frames, one write() each, before the host stack sees them.
 */
import { loadNative } from '../native/binding.js';
import type { FdWatcher, NativeBinding } from '../native/types.js';
import { POLL_READABLE } from '../native/types.js';
import { SgList } from '../memory/sg-list.js';
import { copyBatch } from '../memory/copy-batch.js';
import { mapScratch, unmapScratch, type Scratch } from '../memory/scratch.js';
import { VhostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { RateLimitedLog } from '../util/log.js';
import { Frame, frameCopyTo } from './frame.js';
import { OFFLOAD_DROP, SoftOffload } from './offload.js';
import { NO_PORT, type Port, type PortId } from './port.js';
import type { Switch } from './switch.js';

/** Frames read from the tap per wakeup before yielding to the event loop (fairness with the guests' ports). */
export const RX_BUDGET = 64;
/** Linux interface names are at most IFNAMSIZ - 1 = 15 bytes. */
export const MAX_IFNAME = 15;
/** Ethernet header + one 802.1Q tag: the largest frame the switch hands a port is mtu + this. */
const MAX_L2_OVERHEAD = 18;
/**
 * Read buffer size: the largest frame a tap can hand us (IP MTU up to 65535 + header + tag). Sized for the maximum,
 * not the switch MTU, because the operator may raise the tap's MTU: a read into a smaller buffer would silently
 * truncate, whereas an oversized frame read whole is dropped by the switch on egress and counted (dropMtu).
 */
const RX_BUF_SIZE = 65535 + MAX_L2_OVERHEAD;

/** Counters from the host stack's view, like NetDevice's guest view and `ip -s link show NAME`. */
export interface TapCounters {
  /** Frames the host sent into the switch (read from the tap). */
  txFrames: number;
  txBytes: number;
  /** Frames the host received from the switch (written to the tap). */
  rxFrames: number;
  rxBytes: number;
  /** Dropped: the tap's queue was full (write() returned EAGAIN). */
  rxDropFull: number;
  /** Dropped: longer than this port's MTU allows (the switch checks first; defensive). */
  rxDropTooBig: number;
  /** Dropped: the interface is down (write() fails with EIO), e.g. just after it moved to another namespace. */
  rxDropDown: number;
  /** Dropped: write() failed otherwise (logged, rate-limited). */
  rxDropError: number;
  /** Guest frames whose checksum was completed / that were segmented in software before the write. */
  rxSoftOffload: number;
  /** Dropped: malformed offload headers (the checksum could not be completed or the frame segmented). */
  rxBadOffload: number;
}

export interface TapPortOptions {
  /** Open tap fd (non-blocking); the port owns it from now on and closes it in close(). */
  fd: number;
  /** Interface name (the vport name). */
  name: string;
  sw: Switch;
  log: Logger;
  native?: NativeBinding;
}

export class TapPort implements Port {
  id: PortId = NO_PORT;
  readonly name: string;
  /** The switch MTU: the tap is set to it when opened by openVport(). */
  readonly mtu: number;
  readonly counters: TapCounters = {
    txFrames: 0, txBytes: 0, rxFrames: 0, rxBytes: 0, rxDropFull: 0, rxDropTooBig: 0, rxDropDown: 0, rxDropError: 0,
    rxSoftOffload: 0, rxBadOffload: 0,
  };
  private fd: number;
  private readonly sw: Switch;
  private readonly log: Logger;
  private readonly native: NativeBinding;
  private readonly errors: RateLimitedLog;
  private watcher: FdWatcher | null = null;
  private readonly rx: Scratch;
  private readonly rxBuf: Uint8Array;
  private readonly rxFrame = new Frame(new SgList(1));
  private readonly tx: Scratch;
  private readonly txBuf: Uint8Array;
  /** txBuf as a one-entry SgList, the target of frameCopyTo(). */
  private readonly txSg = new SgList(1);
  /** Software offload scratch, made on the first guest frame with offloads. */
  private soft: SoftOffload | null = null;

  constructor(opts: TapPortOptions) {
    this.fd = opts.fd;
    this.name = opts.name;
    this.sw = opts.sw;
    this.log = opts.log;
    this.native = opts.native ?? loadNative();
    this.errors = new RateLimitedLog(opts.log);
    this.mtu = this.sw.mtu;
    this.rx = mapScratch(this.native, 'vport-rx', RX_BUF_SIZE);
    try {
      this.tx = mapScratch(this.native, 'vport-tx', this.mtu + MAX_L2_OVERHEAD);
    } catch (err) {
      unmapScratch(this.native, this.rx);
      throw err;
    }
    this.rxBuf = this.rx.u8;
    this.txBuf = this.tx.u8;
    this.txSg.push(this.txBuf, 0, this.txBuf.length, -1, this.tx.handle);
    try {
      this.sw.addPort(this);
      this.watcher = this.native.watch(this.fd, POLL_READABLE, (status) => this.onReadable(status));
    } catch (err) {
      // The caller closes the fd on a throw: a port left on the switch would write frames to whatever reuses it.
      if (this.id !== NO_PORT) this.sw.removePort(this);
      unmapScratch(this.native, this.rx);
      unmapScratch(this.native, this.tx);
      throw err;
    }
  }

  get switchName(): string {
    return this.sw.name;
  }

  /** Whether the port still reads its tap (false after close() or a fatal read error). */
  get running(): boolean {
    return this.watcher !== null;
  }

  // ---------------------------------------------------------------- host → switch

  private onReadable(status: number): void {
    if (status < 0) {
      this.fail(`poll status ${status}`);
      return;
    }
    const buf = this.rxBuf;
    const frame = this.rxFrame;
    const sg = frame.sg;
    let n = 0;
    for (; n < RX_BUDGET && this.fd >= 0; n++) {
      let len: number;
      try {
        len = this.native.read(this.fd, buf, 0, buf.length);
      } catch (err) {
        // EBADFD/EIO: the interface was deleted under us (ip link del). Nothing more will come.
        this.fail((err as Error).message);
        break;
      }
      if (len <= 0) break; // -1: EAGAIN, drained
      this.counters.txFrames++;
      this.counters.txBytes += len;
      sg.reset();
      sg.push(buf, 0, len, -1, this.rx.handle);
      frame.offset = 0;
      frame.length = len;
      this.sw.forward(this, frame);
      copyBatch.run(); // the copies out of buf land before the next read() reuses it
    }
    if (n > 0) this.sw.endBatch();
  }

  private fail(reason: string): void {
    if (this.watcher === null) return;
    this.log.error({ vport: this.name, reason }, 'vport read failed; the host port stops receiving');
    this.watcher.close();
    this.watcher = null;
  }

  // ---------------------------------------------------------------- switch → host

  deliver(frame: Frame): boolean {
    if ((frame.vnetFlags | frame.gsoType) !== 0) return this.deliverSoft(frame);
    const len = frame.length;
    if (len > this.txBuf.length) {
      this.counters.rxDropTooBig++;
      return false;
    }
    if (this.fd < 0) {
      this.counters.rxDropError++;
      return false;
    }
    // frameCopyTo, not a plain copy: the checked header comes from the switch's snapshot, VLAN rewrite applied.
    frameCopyTo(frame, 0, this.txSg, 0, len, copyBatch);
    copyBatch.run(); // the bytes are in txBuf before the write()
    return this.write(this.txBuf, len);
  }

  /**
   * A guest frame with a partial checksum or TSO: the tap takes neither, so complete the checksum / segment it in
   * the scratch (the VLAN rewrite applied by the copy) and write each resulting frame.
   */
  private deliverSoft(frame: Frame): boolean {
    if (this.fd < 0) {
      this.counters.rxDropError++;
      return false;
    }
    const soft = (this.soft ??= new SoftOffload());
    const n = soft.prepare(frame);
    if (n === OFFLOAD_DROP) {
      this.counters.rxBadOffload++;
      return false;
    }
    this.counters.rxSoftOffload++;
    let all = true;
    for (let i = 0; i < n; i++) {
      const len = soft.output(i);
      if (len > this.txBuf.length) {
        this.counters.rxDropTooBig++;
        all = false;
      } else if (!this.write(soft.out, len)) {
        all = false;
      }
    }
    return all;
  }

  /** One write() of one frame to the tap; counts the outcome. */
  private write(buf: Uint8Array, len: number): boolean {
    let n: number;
    try {
      n = this.native.write(this.fd, buf, 0, len);
    } catch (err) {
      // A tap that is down refuses writes with EIO: an operator state, not an error (the kernel counts nothing).
      if ((err as { code?: string }).code === 'EIO') {
        this.counters.rxDropDown++;
        return false;
      }
      this.counters.rxDropError++;
      this.errors.warn('write', { vport: this.name, err: (err as Error).message }, 'vport write failed; frame dropped');
      return false;
    }
    if (n < 0) {
      this.counters.rxDropFull++;
      return false;
    }
    this.counters.rxFrames++;
    this.counters.rxBytes += len;
    return true;
  }

  flush(): void {
    // Every deliver() is one write(): nothing is batched, so there is nothing to publish.
  }

  // ---------------------------------------------------------------- control path

  /** Leave the switch, stop reading and close the tap fd (a non-persistent tap interface disappears). Idempotent. */
  close(): void {
    this.watcher?.close();
    this.watcher = null;
    this.sw.removePort(this);
    if (this.fd >= 0) {
      unmapScratch(this.native, this.rx);
      unmapScratch(this.native, this.tx);
      const fd = this.fd;
      this.fd = -1;
      try {
        this.native.close(fd);
      } catch (err) {
        this.log.warn({ vport: this.name, err: (err as Error).message }, 'vport close failed');
      }
    }
  }
}

/**
 * `vport "NAME"` on switch `sw`: create (or attach to) the TAP interface NAME, set its MTU to the switch MTU, bring
 * it up and attach it to the switch. Addresses, DHCP servers and firewalling on it are the operator's (docs/vport.md).
 * Throws the addon's system error (e.g. EPERM without CAP_NET_ADMIN, EBUSY if NAME is a tap already in use by
 * another process, EINVAL if NAME is some other kind of interface) with the interface named in the message.
 */
export function openVport(sw: Switch, name: string, log: Logger, native: NativeBinding = loadNative()): TapPort {
  if (name.length === 0 || Buffer.byteLength(name) > MAX_IFNAME || /[\s/:]/.test(name)) {
    throw new VhostError('ERR_CONFIG', `vport "${name}": an interface name is 1..${MAX_IFNAME} bytes without spaces, '/' or ':'`);
  }
  let tap: { fd: number; name: string };
  try {
    tap = native.tapOpen(name, sw.mtu);
  } catch (err) {
    const e = err as Error & { code?: string };
    const hint = e.code === 'EPERM' || e.code === 'EACCES' ? ' (needs CAP_NET_ADMIN)' : '';
    throw Object.assign(new Error(`vport "${name}" on switch "${sw.name}": ${e.message}${hint}`, { cause: err }), { code: e.code });
  }
  try {
    const port = new TapPort({ fd: tap.fd, name: tap.name, sw, log, native });
    log.info({ vport: tap.name, switch: sw.name, mtu: sw.mtu, port: port.id }, 'vport attached');
    return port;
  } catch (err) {
    native.close(tap.fd);
    throw err;
  }
}
