/**
 * Runs the real daemon (build/src/bin/vhostd.js, built by `npm test`) as a child process on a generated
 * configuration in a tmp dir, and reads its JSON log lines: e2e tests talk to vhostd exactly as users do.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRootFrom } from '../../../src/util/package-root.js';

const root = packageRootFrom(import.meta.url);
export const VHOSTD_BIN = path.join(root, 'build/src/bin/vhostd.js');

export interface VhostdLogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export class VhostdProcess {
  proc: ChildProcess | null = null;
  readonly logs: VhostdLogLine[] = [];
  stderr = '';
  readonly dir: string;
  readonly confPath: string;

  /**
   * `conf` is the configuration text; `socket dir` defaults to the tmp dir.
   */
  constructor(conf: string, opts: { dir?: string; env?: Record<string, string> } = {}) {
    this.dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-e2e-'));
    this.confPath = path.join(this.dir, 'vhostd.conf');
    this.writeConfig(conf);
    this.env = opts.env ?? {};
  }

  private readonly env: Record<string, string>;

  /** (Re)write the configuration file (`socket dir` defaults to the tmp dir), e.g. before `vhostctl reload`. */
  writeConfig(conf: string): void {
    fs.writeFileSync(this.confPath, conf.includes('socket dir') ? conf : `socket dir "${this.dir}"\n${conf}`);
  }

  socket(vm: string, n = 0): string {
    return path.join(this.dir, `${vm}.net${n}.sock`);
  }

  diskSocket(vm: string, n = 0): string {
    return path.join(this.dir, `${vm}.disk${n}.sock`);
  }

  /** The control socket when the configuration has no `control` statement. */
  get controlSocket(): string {
    return path.join(this.dir, 'vhostd.sock');
  }

  async start(timeoutMs = 20_000): Promise<void> {
    if (!fs.existsSync(VHOSTD_BIN)) throw new Error(`${VHOSTD_BIN} missing: run npm run build`);
    const argv = [process.execPath, VHOSTD_BIN, '-f', this.confPath];
    const proc = spawn(argv[0], argv.slice(1), {
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    let partial = '';
    proc.stdout!.on('data', (d: Buffer) => {
      partial += d.toString();
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const l of lines) {
        try {
          this.logs.push(JSON.parse(l) as VhostdLogLine);
        } catch {
          this.logs.push({ level: 30, msg: l });
        }
      }
    });
    proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    await this.waitLog((l) => l.msg === 'vhostd started', timeoutMs, 'vhostd to start');
  }

  async waitLog(pred: (l: VhostdLogLine) => boolean, timeoutMs: number, what: string): Promise<VhostdLogLine> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.logs.find(pred);
      if (hit) return hit;
      if (this.proc?.exitCode !== null) throw new Error(`vhostd exited (${this.proc?.exitCode}) while waiting for ${what}: ${this.stderr}${this.tail()}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; vhostd log:\n${this.tail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Ask for per-port counters (SIGUSR2) and return the fresh lines, one per port. */
  async stats(): Promise<Record<string, { device: Record<string, number>; switchPort: Record<string, number> | null; connected: boolean }>> {
    const from = this.logs.length;
    this.proc!.kill('SIGUSR2');
    const end = Date.now() + 10_000;
    for (;;) {
      const fresh = this.logs.slice(from).filter((l) => l.msg === 'port counters');
      const expected = this.logs.filter((l) => l.msg === 'listening').length;
      if (fresh.length >= expected && expected > 0) {
        const out: Record<string, never> = {};
        for (const l of fresh) (out as Record<string, unknown>)[(l.stats as { port: string }).port] = l.stats;
        return out;
      }
      if (Date.now() > end) throw new Error('no counters from vhostd');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  tail(n = 30): string {
    return this.logs.slice(-n).map((l) => JSON.stringify(l)).join('\n');
  }

  /** SIGKILL: a crash, for restart tests. */
  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  async stop(): Promise<number | null> {
    return this.signal('SIGTERM');
  }

  private async signal(sig: NodeJS.Signals): Promise<number | null> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null;
    const done = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
    p.kill(sig);
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    const code = await done;
    clearTimeout(t);
    return code;
  }

  cleanup(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
