/**
 * VhostUserServer: one listening unix socket per device (reference vhost-user.md §4). It serves one front-end
 * at a time; when that front-end disconnects (QEMU restart, `reconnect=1`, a restarted DPDK process) everything
 * the connection held is released (rings stopped, memory unmapped, every fd closed) and the socket accepts the
 * next connection. A connection-fatal error drops that connection only, with one log line.
 */
import fs from 'node:fs';
import type { FdWatcher, NativeBinding } from '../native/types.js';
import { POLL_READABLE } from '../native/types.js';
import { closeQuietly } from '../native/fd.js';
import type { VirtioDevice } from '../device/device.js';
import type { Logger } from '../util/log.js';
import { BackendSession } from './backend.js';
import { VhostUserConnection } from './connection.js';
import { requestName, type Message } from './message.js';

export class VhostUserServer {
  private listenFd = -1;
  private bound = false;
  private watcher: FdWatcher | null = null;
  private conn: VhostUserConnection | null = null;
  private session: BackendSession | null = null;
  /** Connections accepted so far and connections dropped because of a protocol error. */
  connections = 0;
  droppedConnections = 0;

  constructor(
    private readonly native: NativeBinding,
    readonly socketPath: string,
    readonly device: VirtioDevice,
    private readonly log: Logger,
  ) {}

  get connected(): boolean {
    return this.conn !== null;
  }

  get currentSession(): BackendSession | null {
    return this.session;
  }

  listen(): void {
    removeStaleSocket(this.socketPath);
    this.listenFd = this.native.listenUnix(this.socketPath, 4);
    this.bound = true;
    this.watcher = this.native.watch(this.listenFd, POLL_READABLE, (status) => {
      if (status >= 0) this.acceptPending();
    });
    this.log.info('listening');
  }

  /** Stop listening, drop the connection and remove the socket file. */
  close(): void {
    this.conn?.close();
    this.watcher?.close();
    this.watcher = null;
    if (this.listenFd >= 0) closeQuietly(this.native, this.listenFd);
    this.listenFd = -1;
    // Only remove the socket this server created: never a file that listen() refused to replace.
    if (!this.bound) return;
    this.bound = false;
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      /* already gone */
    }
  }

  private acceptPending(): void {
    for (;;) {
      const fd = this.native.acceptUnix(this.listenFd);
      if (fd < 0) return;
      if (this.conn) {
        // vhost-user has one front-end per device; a second one would fight over the rings.
        this.log.warn('refused a second front-end connection: the device is in use');
        closeQuietly(this.native, fd);
        continue;
      }
      this.connections++;
      this.startSession(fd);
    }
  }

  private startSession(fd: number): void {
    let session: BackendSession | null = null;
    const conn = new VhostUserConnection(this.native, fd, {
      onMessage: (msg: Message) => {
        if (this.log.isLevelEnabled('trace')) this.log.trace({ req: requestName(msg.request), size: msg.size, fds: msg.fds.length }, 'request');
        return session!.handle(msg);
      },
      onClose: (err?: unknown) => {
        session?.release();
        if (this.conn === conn) {
          this.conn = null;
          this.session = null;
        }
        if (err) {
          this.droppedConnections++;
          this.log.error({ reason: (err as Error).message ?? String(err) }, 'front-end connection dropped');
        } else {
          this.log.info('front-end disconnected');
        }
      },
    });
    session = new BackendSession(this.native, this.device, conn, this.log);
    this.conn = conn;
    this.session = session;
    this.log.info('front-end connected');
  }
}

/** Remove a socket left by a previous run; never remove anything that is not a socket. */
function removeStaleSocket(path: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  fs.unlinkSync(path);
}
