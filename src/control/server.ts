/**
 * ControlServer: the control socket (docs/control.md). A Unix stream socket, created mode 0660 (umask set around
 * bind(2), so it is never reachable by others, then applySocketOwner), serving any number of clients; each sends
 * newline-delimited JSON requests and gets one answer line per request, in order. A request line longer than
 * MAX_REQUEST_BYTES is answered with an error and skipped up to its newline; malformed JSON and unknown commands
 * get an error answer; the connection stays usable in every case. Start-up replaces a stale socket file (nobody
 * answers) and refuses a live one: that is another vhostd using the same control path.
 */
import fs from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import type { SocketOwner } from '../config/model.js';
import { applySocketOwner } from '../util/socket-owner.js';
import type { Logger } from '../util/log.js';
import { ControlError, MAX_REQUEST_BYTES, parseRequest, type ControlRequest, type ControlResponse } from './protocol.js';

/** Answer lines not yet read by a client before the server stops reading its requests (backpressure). */
const MAX_PENDING_LINES = 32;
/** How long start-up waits for an existing socket to answer before calling it stale. */
const PROBE_TIMEOUT_MS = 1000;

/** Answers one checked request: a result, a promise of one, or a throw (sent as the error). */
export type RequestHandler = (req: ControlRequest) => unknown;

/** The listening control socket and its clients. */
export class ControlServer {
  private server: net.Server | null = null;
  private readonly conns = new Set<net.Socket>();
  /** dev:ino of the socket file this server created: close() removes that file and nothing else. */
  private created: string | null = null;

  constructor(
    readonly path: string,
    private readonly handler: RequestHandler,
    private readonly log: Logger,
    private owner?: SocketOwner,
  ) {}

  /** Bind and listen; rejects when another process answers on the path or the path is not a socket. */
  async listen(): Promise<void> {
    fs.mkdirSync(dirname(this.path), { recursive: true });
    await removeStale(this.path);
    // Half-open: a client may send its requests and shut down its side (`printf ... | nc -U`) before the answers.
    const server = net.createServer({ allowHalfOpen: true }, (sock) => this.accept(sock));
    server.maxConnections = 1024;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const restore = setUmask(0o117);
      try {
        server.listen(this.path, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        restore();
      }
    });
    server.on('error', (err) => this.log.error({ err }, 'control socket error'));
    this.server = server;
    const st = fs.statSync(this.path);
    this.created = `${st.dev}:${st.ino}`;
    try {
      applySocketOwner(this.path, this.owner);
    } catch (err) {
      this.close();
      throw new Error(`control socket ${this.path}: cannot set its owner: ${(err as Error).message}`, { cause: err });
    }
    this.log.info({ socket: this.path }, 'control socket listening');
  }

  /** Re-apply the owner (after a reload changed `socket owner`). */
  setOwner(owner: SocketOwner | undefined): void {
    this.owner = owner;
    if (this.server) applySocketOwner(this.path, owner);
  }

  /** Stop accepting, drop the clients and remove the socket file. */
  close(): void {
    this.server?.close();
    this.server = null;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    if (this.created === null) return;
    try {
      const st = fs.lstatSync(this.path);
      if (`${st.dev}:${st.ino}` === this.created) fs.unlinkSync(this.path);
    } catch {
      /* already gone */
    }
    this.created = null;
  }

  private accept(sock: net.Socket): void {
    this.conns.add(sock);
    sock.on('close', () => this.conns.delete(sock));
    sock.on('error', () => sock.destroy()); // a client that went away; nothing to report
    const pending: (string | null)[] = []; // null: a line that was too long
    let parts: Buffer[] = [];
    let partLen = 0;
    let skipping = false; // inside an over-long line: drop bytes up to its newline
    let busy = false;
    let ended = false; // the client shut down its side: answer what is pending, then close ours

    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      while (pending.length > 0 && !sock.destroyed) {
        const answer = await this.answer(pending.shift()!);
        if (sock.destroyed) break;
        if (!sock.write(`${JSON.stringify(answer)}\n`)) {
          await new Promise<void>((r) => {
            const done = (): void => {
              sock.off('drain', done);
              sock.off('close', done);
              r();
            };
            sock.on('drain', done);
            sock.on('close', done);
          });
        }
      }
      busy = false;
      if (sock.destroyed) return;
      if (ended) sock.end();
      else if (sock.isPaused()) sock.resume();
    };

    const push = (line: string): void => {
      if (line.trim() !== '') pending.push(line);
    };

    sock.on('data', (chunk: Buffer) => {
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf(0x0a, start);
        const end = nl < 0 ? chunk.length : nl;
        if (!skipping) {
          if (partLen + end - start > MAX_REQUEST_BYTES) {
            pending.push(null);
            skipping = true;
            parts = [];
            partLen = 0;
          } else if (end > start) {
            parts.push(chunk.subarray(start, end));
            partLen += end - start;
          }
        }
        if (nl < 0) break;
        if (!skipping) push(Buffer.concat(parts, partLen).toString('utf8'));
        skipping = false;
        parts = [];
        partLen = 0;
        start = nl + 1;
      }
      if (pending.length >= MAX_PENDING_LINES) sock.pause();
      void pump();
    });
    sock.on('end', () => {
      if (!skipping && partLen > 0) push(Buffer.concat(parts, partLen).toString('utf8')); // a last line without \n
      ended = true;
      void pump();
    });
  }

  private async answer(line: string | null): Promise<ControlResponse> {
    if (line === null) return { ok: false, error: `request line longer than ${MAX_REQUEST_BYTES} bytes` };
    try {
      const req = parseRequest(line);
      this.log.debug({ cmd: req.cmd }, 'control request');
      return { ok: true, result: await this.handler(req) };
    } catch (err) {
      if (!(err instanceof ControlError)) this.log.warn({ err }, 'control request failed');
      return { ok: false, error: err instanceof Error ? err.message : String(err) };
    }
  }
}

/** Set the process umask and return a function restoring it (no-op where umask cannot be set, e.g. a worker). */
function setUmask(mask: number): () => void {
  try {
    const old = process.umask(mask);
    return () => process.umask(old);
  } catch {
    return () => undefined;
  }
}

/** Remove a socket file nobody answers on; refuse a live one and anything that is not a socket. */
async function removeStale(path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`control socket ${path}: the path exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const c = net.createConnection(path);
    const t = setTimeout(() => {
      c.destroy();
      resolve(true); // accepted into the backlog but silent: still a live listener
    }, PROBE_TIMEOUT_MS);
    c.once('connect', () => {
      clearTimeout(t);
      c.destroy();
      resolve(true);
    });
    c.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
  if (live) throw new Error(`control socket ${path} is in use: another vhostd is running with it (stop that one, or give this one another control "PATH")`);
  fs.unlinkSync(path);
}
