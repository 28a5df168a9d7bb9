/**
 * VhostUserConnection: one front-end connection on a non-blocking unix socket. It frames the byte stream
 * into messages (12-byte header, then exactly `size` payload bytes; fds belong to the message whose bytes
 * carried them, reference vhost-user.md §1.1), hands each message to the handler strictly in order (QEMU waits
 * for every reply), and sends replies. It owns the fds of a message only until the handler takes them; fds of
 * a message that fails before dispatch are closed here.
 */
import type { FdWatcher, NativeBinding } from '../native/types.js';
import { MAX_FDS_PER_MSG, POLL_READABLE, POLL_WRITABLE } from '../native/types.js';
import { closeAll } from '../native/fd.js';
import { HEADER_SIZE, MAX_PAYLOAD, decodeHeader, type Message } from './message.js';

export interface ConnectionHandler {
  /** Handle one message; a returned promise pauses reading until it settles. Throwing closes the connection. */
  onMessage(msg: Message): void | Promise<void>;
  /** The connection ended (EOF, error or close()); `err` is set when it was dropped because of an error. */
  onClose(err?: unknown): void;
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
      this.pendingOut.push(bytes);
      return;
    }
    const n = this.native.sendMsg(this.fd, bytes, 0, bytes.length, fds);
    if (n === bytes.length) return;
    this.pendingOut.push(n < 0 ? bytes : bytes.subarray(n));
    this.updateWatch();
  }

  close(err?: unknown): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    closeAll(this.native, this.fds);
    this.fds = [];
    try {
      this.native.close(this.fd);
    } catch {
      /* already gone */
    }
    this.handler.onClose(err);
  }

  private updateWatch(): void {
    if (!this.watcher) return;
    const events = (this.busy ? 0 : POLL_READABLE) | (this.pendingOut.length ? POLL_WRITABLE : 0);
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
      if (events & POLL_READABLE && !this.busy) this.readMessages();
    } catch (err) {
      this.close(err);
    }
  }

  private flushOut(): void {
    while (this.pendingOut.length) {
      const b = this.pendingOut[0];
      const n = this.native.sendMsg(this.fd, b, 0, b.length, []);
      if (n < 0) break;
      if (n < b.length) {
        this.pendingOut[0] = b.subarray(n);
        break;
      }
      this.pendingOut.shift();
    }
    this.updateWatch();
  }

  private readMessages(): void {
    while (!this.closed && !this.busy) {
      const n = this.native.recvMsg(this.fd, this.buf, this.have, this.need - this.have, this.fdsOut);
      for (let i = 1; i <= this.fdsOut[0]; i++) this.fds.push(this.fdsOut[i]);
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
