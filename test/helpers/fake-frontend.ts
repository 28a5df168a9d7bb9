/**
 * FakeFrontend: plays the front-end (QEMU 7.2 or DPDK 22.11 virtio_user) over a real unix socket, for fast,
 * deterministic and adversarial tests of the back-end. It frames replies, checks their flags (exactly 0x5),
 * and replays the negotiation sequences of QEMU 7.2 net and DPDK 22.11 (docs/protocol.md §4).
 */
import { loadNative } from '../../src/native/binding.js';
import type { FdWatcher, NativeBinding } from '../../src/native/types.js';
import { POLL_READABLE } from '../../src/native/types.js';
import {
  FrontendRequest as R,
  HEADER_SIZE,
  REPLY_FLAGS,
  encodeMemTable,
  encodeRequest,
  encodeSingleRegion,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  requestName,
  u64Payload,
  type RegionDescriptor,
} from '../../src/vhost-user/message.js';
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
  VHOST_USER_PROTOCOL_F_MQ,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  bit,
} from '../../src/vhost-user/features.js';

export interface Reply {
  request: number;
  flags: number;
  payload: Uint8Array;
}

export class FakeFrontend {
  readonly native: NativeBinding;
  private readonly watcher: FdWatcher;
  private rbuf = new Uint8Array(0);
  private readonly replies: Reply[] = [];
  /** fds received with replies, not yet taken (GET_INFLIGHT_FD); closed when the connection closes. */
  private replyFds: number[] = [];
  private waiters: (() => void)[] = [];
  closed = false;
  /** Set when REPLY_ACK was negotiated: requests that QEMU sends with NEED_REPLY then carry it. */
  replyAck = false;

  private constructor(readonly fd: number) {
    this.native = loadNative();
    const fdsOut = new Int32Array(9);
    const chunk = new Uint8Array(8192);
    this.watcher = this.native.watch(fd, POLL_READABLE, () => {
      for (;;) {
        let n: number;
        try {
          n = this.native.recvMsg(fd, chunk, 0, chunk.length, fdsOut);
        } catch {
          this.markClosed(); // ECONNRESET: the back-end dropped us
          return;
        }
        for (let i = 1; i <= fdsOut[0]; i++) this.replyFds.push(fdsOut[i]);
        if (n < 0) break;
        if (n === 0) {
          this.markClosed();
          return;
        }
        const next = new Uint8Array(this.rbuf.length + n);
        next.set(this.rbuf);
        next.set(chunk.subarray(0, n), this.rbuf.length);
        this.rbuf = next;
        this.parse();
      }
      this.wake();
    });
  }

  static connect(path: string): FakeFrontend {
    return new FakeFrontend(loadNative().connectUnix(path));
  }

  private parse(): void {
    while (this.rbuf.length >= HEADER_SIZE) {
      const dv = new DataView(this.rbuf.buffer, this.rbuf.byteOffset);
      const size = dv.getUint32(8, true);
      if (this.rbuf.length < HEADER_SIZE + size) return;
      this.replies.push({
        request: dv.getUint32(0, true),
        flags: dv.getUint32(4, true),
        payload: this.rbuf.slice(HEADER_SIZE, HEADER_SIZE + size),
      });
      this.rbuf = this.rbuf.slice(HEADER_SIZE + size);
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** fds that came with the replies so far; the caller owns them. */
  takeReplyFds(): number[] {
    const f = this.replyFds;
    this.replyFds = [];
    return f;
  }

  private markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.takeReplyFds()) this.native.close(fd);
    this.watcher.close();
    try {
      this.native.close(this.fd);
    } catch {
      /* already closed */
    }
    this.wake();
  }

  /** Send raw bytes (adversarial tests). */
  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    const n = this.native.sendMsg(this.fd, bytes, 0, bytes.length, fds);
    if (n !== bytes.length) throw new Error(`short send ${n}/${bytes.length}`);
  }

  /** Send a request without waiting for anything. */
  send(request: number, payload: Uint8Array = new Uint8Array(0), opts: { fds?: number[]; needReply?: boolean } = {}): void {
    this.sendRaw(encodeRequest(request, payload, opts.needReply ?? false), opts.fds ?? []);
  }

  /** Wait for the next reply (rejects if the back-end closes the connection or after timeoutMs). */
  async nextReply(timeoutMs = 5000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.replies.shift();
      if (r) return r;
      if (this.closed) throw new Error('back-end closed the connection');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a reply');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Send a request that always has a reply and return the reply payload (checks id and flags). */
  async call(request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): Promise<Uint8Array> {
    this.send(request, payload, { fds });
    const r = await this.nextReply();
    if (r.request !== request) throw new Error(`reply to ${requestName(r.request)}, expected ${requestName(request)}`);
    if (r.flags !== REPLY_FLAGS) throw new Error(`reply flags 0x${r.flags.toString(16)}, expected 0x5`);
    return r.payload;
  }

  /** Send with NEED_REPLY (when REPLY_ACK is on) and check the u64 ack; returns the ack value. */
  async ack(request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): Promise<bigint> {
    if (!this.replyAck) {
      this.send(request, payload, { fds });
      return 0n;
    }
    this.send(request, payload, { fds, needReply: true });
    const r = await this.nextReply();
    if (r.request !== request || r.flags !== REPLY_FLAGS || r.payload.length !== 8) {
      throw new Error(`bad ack for ${requestName(request)}: ${requestName(r.request)} flags 0x${r.flags.toString(16)} size ${r.payload.length}`);
    }
    return new DataView(r.payload.buffer, r.payload.byteOffset).getBigUint64(0, true);
  }

  /** Wait until the back-end drops the connection. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('back-end did not close the connection');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.markClosed();
  }

  // ---------------------------------------------------------------- typed requests

  async getFeatures(): Promise<bigint> {
    return u64(await this.call(R.GET_FEATURES));
  }
  async getProtocolFeatures(): Promise<bigint> {
    return u64(await this.call(R.GET_PROTOCOL_FEATURES));
  }
  async setProtocolFeatures(v: bigint): Promise<void> {
    this.send(R.SET_PROTOCOL_FEATURES, u64Payload(v));
    this.replyAck = (v & bit(VHOST_USER_PROTOCOL_F_REPLY_ACK)) !== 0n;
  }
  setFeatures(v: bigint): void {
    this.send(R.SET_FEATURES, u64Payload(v));
  }
  setOwner(): void {
    this.send(R.SET_OWNER);
  }
  async setMemTable(regions: RegionDescriptor[], fds: number[]): Promise<bigint> {
    return this.ack(R.SET_MEM_TABLE, encodeMemTable(regions), fds);
  }
  async addMemReg(region: RegionDescriptor, fd: number): Promise<bigint> {
    return this.ack(R.ADD_MEM_REG, encodeSingleRegion(region), [fd]);
  }
  async remMemReg(region: RegionDescriptor): Promise<bigint> {
    return this.ack(R.REM_MEM_REG, encodeSingleRegion(region));
  }
  setVringNum(index: number, num: number): void {
    this.send(R.SET_VRING_NUM, encodeVringState({ index, num }));
  }
  setVringBase(index: number, num: number): void {
    this.send(R.SET_VRING_BASE, encodeVringState({ index, num }));
  }
  setVringAddr(index: number, a: { descUva: number; availUva: number; usedUva: number }): void {
    this.send(R.SET_VRING_ADDR, encodeVringAddr({ index, flags: 0, logGuestAddr: 0, ...a }));
  }
  setVringKick(index: number, fd: number | null): void {
    this.send(R.SET_VRING_KICK, encodeVringFile(index, fd === null), { fds: fd === null ? [] : [fd] });
  }
  setVringCall(index: number, fd: number | null): void {
    this.send(R.SET_VRING_CALL, encodeVringFile(index, fd === null), { fds: fd === null ? [] : [fd] });
  }
  setVringErr(index: number, fd: number | null): void {
    this.send(R.SET_VRING_ERR, encodeVringFile(index, fd === null), { fds: fd === null ? [] : [fd] });
  }
  setVringEnable(index: number, on: boolean): void {
    this.send(R.SET_VRING_ENABLE, encodeVringState({ index, num: on ? 1 : 0 }));
  }
  async getVringBase(index: number): Promise<{ index: number; num: number }> {
    const p = await this.call(R.GET_VRING_BASE, encodeVringState({ index, num: 0 }));
    const dv = new DataView(p.buffer, p.byteOffset);
    return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
  }
  async getQueueNum(): Promise<bigint> {
    return u64(await this.call(R.GET_QUEUE_NUM));
  }
  async getMaxMemSlots(): Promise<bigint> {
    return u64(await this.call(R.GET_MAX_MEM_SLOTS));
  }

  /**
   * QEMU 7.2 vhost_dev_init for a net device, up to the guest's feature write: features,
   * protocol features (masked to 17 bits, CONFIG stripped), queue count, mem slots, SET_OWNER, features again, and
   * each queue's call fd (err fds none). Returns the offered features and whether memory goes by ADD_MEM_REG.
   */
  async qemuNetInit(callFds: readonly number[]): Promise<{ offered: bigint; memSlots: boolean }> {
    const offered = await this.getFeatures();
    const pf = await this.getProtocolFeatures();
    await this.setProtocolFeatures(pf & 0x1ffffn & ~bit(9));
    if (pf & bit(VHOST_USER_PROTOCOL_F_MQ)) await this.getQueueNum();
    const memSlots = (pf & bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) !== 0n;
    if (memSlots) await this.getMaxMemSlots();
    this.setOwner();
    await this.getFeatures();
    for (const [q, fd] of callFds.entries()) {
      this.setVringCall(q, fd);
      this.setVringErr(q, null);
    }
    return { offered, memSlots };
  }
}

export function u64(p: Uint8Array): bigint {
  if (p.length !== 8) throw new Error(`expected an 8-byte reply, got ${p.length}`);
  return new DataView(p.buffer, p.byteOffset).getBigUint64(0, true);
}

export { VHOST_USER_F_PROTOCOL_FEATURES };
