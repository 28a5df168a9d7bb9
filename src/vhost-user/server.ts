/**
 * VhostUserServer: one listening unix socket per device (docs/protocol.md). It serves one front-end
 * at a time; when that front-end disconnects (QEMU restart, `reconnect=1`, a restarted DPDK process) everything
 * the connection held is released (rings stopped, memory unmapped, every fd closed) and the socket accepts the
 * next connection. A connection-fatal error drops that connection only, with one log line.
 *
 * accept4 failing (EMFILE/ENFILE when the fd table is full, ENOMEM, ...) pauses accepting: one log line per pause,
 * a counter, and a retry after ACCEPT_RETRY_MS; the pending connection waits in the listen backlog meanwhile.
 */
import fs from 'node:fs';
import type { FdWatcher, NativeBinding } from '../native/types.js';
import { POLL_READABLE } from '../native/types.js';
import { closeQuietly } from '../native/fd.js';
import type { VirtioDevice } from '../device/device.js';
import { RateLimitedLog, type Logger } from '../util/log.js';
import { BackendSession } from './backend.js';
import { DEFAULT_LIMITS, type FrontendLimits } from './fd-checks.js';
import { VhostUserConnection } from './connection.js';
import { VhostError } from '../util/errors.js';
import { unwatchFaults, watchFaults } from './fault-watch.js';
import { requestName, type Message } from './message.js';

/** How long accepting stays paused after accept4 failed. */
const ACCEPT_RETRY_MS = 200;

export class VhostUserServer {
  private listenFd = -1;
  private bound = false;
  private watcher: FdWatcher | null = null;
  private conn: VhostUserConnection | null = null;
  private session: BackendSession | null = null;
  /** Connections accepted so far and connections dropped because of a protocol error. */
  connections = 0;
  droppedConnections = 0;
  /** Times accept4 failed (the fd table was full, ...) and accepting paused. */
  acceptErrors = 0;
  /** Times reading a connection paused because its front-end did not read its replies. */
  replyBackpressure = 0;
  /** Connections dropped because their shared memory raised SIGBUS (truncated or unfillable file). */
  memoryFaults = 0;
  /** refusedRequests of the sessions that ended. */
  private refusedBefore = 0;
  private acceptRetry: NodeJS.Timeout | null = null;
  private readonly limitedLog: RateLimitedLog;

  constructor(
    private readonly native: NativeBinding,
    readonly socketPath: string,
    readonly device: VirtioDevice,
    private readonly log: Logger,
    private readonly limits: FrontendLimits = DEFAULT_LIMITS,
  ) {
    this.limitedLog = new RateLimitedLog(log);
  }

  get connected(): boolean {
    return this.conn !== null;
  }

  /** Requests refused or ignored, over every connection so far. */
  get refusedRequests(): number {
    return this.refusedBefore + (this.session?.refusedRequests ?? 0);
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
    watchFaults(this.native, this);
    this.log.info('listening');
  }

  /** Drop the connection if a SIGBUS hit its guest memory, log or inflight area (fault-watch.ts). */
  checkMemoryFaults(): void {
    const faulted = this.session?.faultedMapping();
    if (!faulted || !this.conn) return;
    this.memoryFaults++;
    this.conn.close(new VhostError('ERR_MEM_MAP', `SIGBUS on the ${faulted}: the front-end truncated its memory file, or its file system has no room for it`));
  }

  /** Stop listening, drop the connection and remove the socket file. */
  close(): void {
    unwatchFaults(this);
    if (this.acceptRetry) clearTimeout(this.acceptRetry);
    this.acceptRetry = null;
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
      let fd: number;
      try {
        fd = this.native.acceptUnix(this.listenFd);
      } catch (err) {
        this.pauseAccepting(err);
        return;
      }
      if (fd < 0) return;
      if (this.conn) {
        // vhost-user has one front-end per device; a second one would fight over the rings.
        this.limitedLog.warn('second-frontend', {}, 'refused a second front-end connection: the device is in use');
        closeQuietly(this.native, fd);
        continue;
      }
      this.connections++;
      try {
        this.startSession(fd);
      } catch (err) {
        // Out of memory or fds for the watcher: drop this connection, keep listening.
        closeQuietly(this.native, fd);
        this.droppedConnections++;
        this.log.error({ reason: (err as Error).message ?? String(err) }, 'front-end connection dropped');
      }
    }
  }

  /** Stop watching the listening socket (it stays readable: the loop would spin) and try again later. */
  private pauseAccepting(err: unknown): void {
    this.acceptErrors++;
    this.watcher?.stop();
    this.limitedLog.warn('accept', { reason: (err as Error).message ?? String(err), retryMs: ACCEPT_RETRY_MS, times: this.acceptErrors }, 'cannot accept a front-end connection; accepting paused');
    this.acceptRetry = setTimeout(() => {
      this.acceptRetry = null;
      if (!this.watcher) return; // closed meanwhile
      this.watcher.start(POLL_READABLE);
      this.acceptPending();
    }, ACCEPT_RETRY_MS);
    this.acceptRetry.unref();
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
        this.refusedBefore += session?.refusedRequests ?? 0;
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
      onBackpressure: (pendingBytes: number) => {
        this.replyBackpressure++;
        this.limitedLog.warn('backpressure', { pendingBytes, times: this.replyBackpressure }, 'front-end does not read its replies; reading its requests paused');
      },
    });
    session = new BackendSession(this.native, this.device, conn, this.log, this.limits);
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
