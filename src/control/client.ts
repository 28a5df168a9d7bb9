/**
 * The control client (vhostctl's side of docs/control.md): connect to the control socket, send one request line,
 * read one answer line. Connection failures become one-line messages an operator can act on.
 */
import fs from 'node:fs';
import net from 'node:net';
import { ControlError, type ControlRequest, type ControlResponse } from './protocol.js';

/** Where vhostctl looks when not told (-s): $VHOSTD_CONTROL, ./run/vhostd.sock (the default configuration's), /run/vhostd/vhostd.sock. */
export function defaultControlPath(env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): string {
  if (env.VHOSTD_CONTROL) return env.VHOSTD_CONTROL;
  const local = `${cwd}/run/vhostd.sock`;
  return fs.existsSync(local) ? local : '/run/vhostd/vhostd.sock';
}

const WHY: Readonly<Record<string, string>> = {
  ENOENT: 'no such file (is vhostd running?)',
  ECONNREFUSED: 'connection refused (is vhostd running?)',
  EACCES: 'permission denied (see socket owner in vhostd.conf)',
  EPERM: 'permission denied (see socket owner in vhostd.conf)',
  ENOTSOCK: 'not a socket',
};

/** Send one request and return its result; throws ControlError with the daemon's message or a connection problem. */
export function controlRequest(path: string, req: ControlRequest, timeoutMs = 120_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(path);
    let buf = '';
    let settled = false;
    const finish = (err: Error | null, value?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => finish(new ControlError(`no answer from ${path} within ${timeoutMs / 1000} s`)), timeoutMs);
    sock.setEncoding('utf8');
    sock.once('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let answer: ControlResponse;
      try {
        answer = JSON.parse(buf.slice(0, nl)) as ControlResponse;
      } catch {
        finish(new ControlError(`malformed answer from ${path}`));
        return;
      }
      if (answer.ok) finish(null, answer.result);
      else finish(new ControlError(answer.error));
    });
    let connected = false;
    sock.once('connect', () => (connected = true));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (connected) return finish(new ControlError(`${path}: ${err.message}`));
      const why = (err.code && WHY[err.code]) ?? err.message;
      finish(new ControlError(`cannot connect to ${path}: ${why}`));
    });
    sock.on('close', () => finish(new ControlError(`${path}: vhostd closed the connection without answering`)));
  });
}
