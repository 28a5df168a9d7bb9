/**
 * A back-end under test in this process: one Switch, N NetDevices with their VhostUserServers in a tmp dir,
 * and a logger that records every line so tests can assert on what the operator would read.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { loadNative } from '../../src/native/binding.js';
import { Switch } from '../../src/net/switch.js';
import { NetDevice } from '../../src/net/net-device.js';
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { createLogger, type Logger } from '../../src/util/log.js';

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export class NetBackendFixture {
  readonly dir: string;
  readonly sw: Switch;
  readonly devices: NetDevice[] = [];
  readonly servers: VhostUserServer[] = [];
  readonly logs: LogLine[] = [];
  readonly log: Logger;

  constructor(ports = 2, opts: { mtu?: number } = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-test-'));
    const sink = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        for (const line of chunk.toString().split('\n')) if (line) this.logs.push(JSON.parse(line) as LogLine);
        cb();
      },
    });
    this.log = createLogger({ level: 'debug', destination: sink });
    this.sw = new Switch('test', { mtu: opts.mtu ?? 1500 });
    const native = loadNative();
    for (let i = 0; i < ports; i++) {
      const name = `vm${i + 1}.net0`;
      const socket = path.join(this.dir, `${name}.sock`);
      const log = this.log.child({ dev: name, socket });
      const mac = `fe:e1:ba:00:00:${(i + 1).toString(16).padStart(2, '0')}`;
      const dev = new NetDevice({ name, sw: this.sw, log, mac });
      const srv = new VhostUserServer(native, socket, dev, log);
      srv.listen();
      this.devices.push(dev);
      this.servers.push(srv);
    }
  }

  socket(i: number): string {
    return this.servers[i].socketPath;
  }

  /** Log lines at warn or above whose message or fields mention `text`. */
  problems(text?: string): LogLine[] {
    return this.logs.filter((l) => l.level >= 40 && (!text || JSON.stringify(l).includes(text)));
  }

  close(): void {
    for (const s of this.servers) s.close();
    for (const d of this.devices) d.detach();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Resolve after the event loop has run pending I/O callbacks a few times. */
export async function settle(rounds = 3): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setTimeout(r, 5));
}

/** Poll `pred` until true (event-driven tests use this to wait for the back-end, with a generous bound). */
export async function waitFor(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
