/**
 * VhostUserConnection: one front-end connection on a non-blocking unix socket. It frames the byte stream
 * into messages (12-byte header, then exactly `size` payload bytes; fds belong to the message whose bytes
 * carried them), hands each message to the handler strictly in order (QEMU waits
 * for every reply), and sends replies. It owns the fds of a message only until the handler takes them; fds of
 * a message that fails before dispatch are closed here.
 *
 * Bounds (docs/security.md): a message may collect at most MAX_FDS_PER_MSG fds over all the recvmsg calls that read
 * its bytes; one more drops the connection (no front-end sends more: QEMU and DPDK cap themselves at 8). Replies the
 * front-end does not read are queued up to REPLY_BACKLOG_BYTES; past that the connection reads no more requests
 * until the queue drains, so a front-end that never reads cannot grow the daemon. REPLY_BACKLOG_MAX_BYTES (for sends
 * that are not replies to a request read here) drops the connection.
 */
import type { FdWatcher, NativeBinding } from '../native/types.js';
import { MAX_FDS_PER_MSG, POLL_READABLE, POLL_WRITABLE } from '../native/types.js';
import { closeAll } from '../native/fd.js';
import { VhostError } from '../util/errors.js';
import { HEADER_SIZE, MAX_PAYLOAD, decodeHeader, type Message } from './message.js';

/** Queued reply bytes past which no more requests are read. */
export const REPLY_BACKLOG_BYTES = 64 * 1024;
/** Queued bytes past which the connection is dropped. */
export const REPLY_BACKLOG_MAX_BYTES = 1024 * 1024;

export interface ConnectionHandler {
  /** Handle one message; a returned promise pauses reading until it settles. Throwing closes the connection. */
  onMessage(msg: Message): void | Promise<void>;
  /** The connection ended (EOF, error or close()); `err` is set when it was dropped because of an error. */
  onClose(err?: unknown): void;
  /** Reading paused because `pendingBytes` of replies are not read by the front-end (once per pause). */
  onBackpressure?(pendingBytes: number): void;
}

export class VhostUserConnection {
  private readonly buf = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD);
  private readonly fdsOut = new Int32Array(1 + MAX_FDS_PER_MSG);
  private have = 0;
  private need = HEADER_SIZE;
  private header: { request: number; flags: number; size: number } | null = null;
  private fds: number[] = [];
  private watcher: FdWatcher | null;
  private pendingOut: Uint8Array[] = [];
  private pendingBytes = 0;
  /** Reading is paused until the reply queue drains below REPLY_BACKLOG_BYTES. */
  private backlogged = false;
  private busy = false;
  closed = false;

  constructor(
    private readonly native: NativeBinding,
    readonly fd: number,
    private readonly handler: ConnectionHandler,
  ) {
    this.watcher = native.watch(fd, POLL_READABLE, (status, events) => this.onReady(status, events));
  }

  /** Send a reply or request; if the socket is full the rest is queued and sent when writable. */
  send(bytes: Uint8Array, fds: number[] = []): void {
    if (this.closed) return;
    if (this.pendingOut.length > 0) {
      if (fds.length > 0) throw new Error('cannot queue a message with fds behind a partial write');
      this.queue(bytes);
      return;
    }
    const n = this.native.sendMsg(this.fd, bytes, 0, bytes.length, fds);
    if (n === bytes.length) return;
    this.queue(n < 0 ? bytes : bytes.subarray(n));
    this.updateWatch();
  }

  private queue(bytes: Uint8Array): void {
    this.pendingOut.push(bytes);
    this.pendingBytes += bytes.length;
    if (this.pendingBytes > REPLY_BACKLOG_MAX_BYTES) {
      throw new VhostError('ERR_VU_PROTOCOL', `front-end does not read its replies: ${this.pendingBytes} bytes queued`);
    }
  }

  close(err?: unknown): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    closeAll(this.native, this.fds);
    this.fds = [];
    this.pendingOut = [];
    this.pendingBytes = 0;
    try {
      this.native.close(this.fd);
    } catch {
      /* already gone */
    }
    this.handler.onClose(err);
  }

  private updateWatch(): void {
    if (!this.watcher) return;
    const events = (this.busy || this.backlogged ? 0 : POLL_READABLE) | (this.pendingOut.length ? POLL_WRITABLE : 0);
    if (events) this.watcher.start(events);
    else this.watcher.stop();
  }

  private onReady(status: number, events: number): void {
    if (this.closed) return;
    if (status < 0) {
      this.close(new Error(`socket poll error ${status}`));
      return;
    }
    try {
      if (events & POLL_WRITABLE) this.flushOut();
      if (events & POLL_READABLE && !this.busy && !this.backlogged) this.readMessages();
    } catch (err) {
      this.close(err);
    }
  }

  private flushOut(): void {
    while (this.pendingOut.length) {
      const b = this.pendingOut[0];
      const n = this.native.sendMsg(this.fd, b, 0, b.length, []);
      if (n < 0) break;
      this.pendingBytes -= n;
      if (n < b.length) {
        this.pendingOut[0] = b.subarray(n);
        break;
      }
      this.pendingOut.shift();
    }
    if (this.backlogged && this.pendingBytes < REPLY_BACKLOG_BYTES) this.backlogged = false;
    this.updateWatch();
  }

  private readMessages(): void {
    while (!this.closed && !this.busy) {
      if (this.pendingBytes >= REPLY_BACKLOG_BYTES) {
        if (this.backlogged) return;
        this.backlogged = true;
        this.updateWatch();
        this.handler.onBackpressure?.(this.pendingBytes);
        return;
      }
      const n = this.native.recvMsg(this.fd, this.buf, this.have, this.need - this.have, this.fdsOut);
      for (let i = 1; i <= this.fdsOut[0]; i++) this.fds.push(this.fdsOut[i]);
      if (this.fds.length > MAX_FDS_PER_MSG) {
        // A message whose every byte carries fds would make us hold thousands; close() closes them at once.
        throw new VhostError('ERR_VU_BAD_FDS', `more than ${MAX_FDS_PER_MSG} fds attached to one message (${this.fds.length} so far, after ${this.have + Math.max(n, 0)} bytes)`);
      }
      if (n < 0) return; // EAGAIN: wait for more
      if (n === 0) {
        this.close(this.have > 0 ? new Error('front-end closed the connection in the middle of a message') : undefined);
        return;
      }
      this.have += n;
      if (this.have < this.need) continue;
      if (!this.header) {
        this.header = decodeHeader(this.buf); // throws on bad version/oversize: connection-fatal
        this.need = HEADER_SIZE + this.header.size;
        if (this.have < this.need) continue;
      }
      const h = this.header;
      const msg: Message = { ...h, payload: this.buf.slice(HEADER_SIZE, this.need), fds: this.fds };
      this.fds = [];
      this.header = null;
      this.have = 0;
      this.need = HEADER_SIZE;
      this.dispatch(msg);
    }
  }

  /** The handler takes the fds it keeps out of msg.fds (splice); whatever is left is closed here. */
  private dispatch(msg: Message): void {
    let r: void | Promise<void>;
    try {
      r = this.handler.onMessage(msg);
    } catch (err) {
      closeAll(this.native, msg.fds);
      throw err;
    }
    if (!r || typeof (r as Promise<void>).then !== 'function') {
      closeAll(this.native, msg.fds);
      return;
    }
    this.busy = true;
    this.updateWatch();
    (r as Promise<void>).then(
      () => {
        closeAll(this.native, msg.fds);
        this.busy = false;
        if (this.closed) return;
        try {
          this.updateWatch();
          this.readMessages();
        } catch (err) {
          this.close(err);
        }
      },
      (err) => {
        closeAll(this.native, msg.fds);
        this.close(err);
      },
    );
  }
}
