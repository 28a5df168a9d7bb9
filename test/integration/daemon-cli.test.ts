/**
 * The vhostd binary as an operator runs it (build/src/bin/vhostd.js as a child process): -h, -n config checks with
 * file:line:col diagnostics, start-up in a tmp dir (sockets, JSON log lines, QEMU arguments per socket), clean
 * shutdown on SIGTERM/SIGINT, the embedded default configuration, and what happens to leftovers at socket paths.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import { packageRootFrom } from '../../src/util/package-root.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);

const root = packageRootFrom(import.meta.url);
const BIN = path.join(root, 'build/src/bin/vhostd.js');
const WAIT_MS = 20_000;

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run vhostd to completion (for -h, -n and failures to start). */
function run(args: string[], cwd: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A running daemon whose stdout is parsed line by line (every line must be one JSON object). */
class Daemon {
  readonly proc: ChildProcess;
  readonly lines: string[] = [];
  readonly logs: Record<string, unknown>[] = [];
  stderr = '';
  private partial = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(args: string[], cwd: string) {
    this.proc = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.partial += d.toString();
      const parts = this.partial.split('\n');
      this.partial = parts.pop()!;
      for (const l of parts) {
        this.lines.push(l);
        try {
          this.logs.push(JSON.parse(l) as Record<string, unknown>);
        } catch {
          this.logs.push({ unparsable: l });
        }
      }
    });
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.proc.on('close', (code, signal) => resolve({ code, signal })));
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async waitFor<T>(pred: () => T | undefined | false, what: string): Promise<T> {
    const end = Date.now() + WAIT_MS;
    for (;;) {
      const v = pred();
      if (v) return v;
      if (!this.running) throw new Error(`vhostd exited (${this.proc.exitCode}) while waiting for ${what}\nstderr: ${this.stderr}\nstdout:\n${this.lines.join('\n')}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}\nstdout:\n${this.lines.join('\n')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async started(): Promise<void> {
    await this.waitFor(() => this.logs.some((l) => l.msg === 'vhostd started'), 'vhostd started');
  }

  /** Send a signal and wait for the exit (SIGKILL after a generous grace period). */
  async signal(sig: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.proc.kill(sig);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 15_000);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }
}

/** "LINE:COL" of the first occurrence of `needle` in `text` (1-based, as the config diagnostics count). */
function posOf(text: string, needle: string): string {
  const i = text.indexOf(needle);
  if (i < 0) throw new Error(`${needle} not in text`);
  const before = text.slice(0, i).split('\n');
  return `${before.length}:${before[before.length - 1].length + 1}`;
}

function isSocket(p: string): boolean {
  try {
    return fs.lstatSync(p).isSocket();
  } catch {
    return false;
  }
}

/** Connect to a unix socket: resolves 'ok' or the error code (ECONNREFUSED for a stale socket file). */
function tryConnect(p: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.createConnection(p);
    s.once('connect', () => {
      s.destroy();
      resolve('ok');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

const GOOD_CONF = `# two vms on one switch
socket dir "sockets"

switch "lan" {
    mtu 1500
}

vm "alpha" {
    interface {
        switch "lan"
        lladdr fe:e1:bb:f1:c8:01
    }
    interface { switch "lan" }
}

vm "beta" {
    interface { switch "lan" }
}
`;

describe.skipIf(!native.ok)('vhostd command line', () => {
  const dirs: string[] = [];
  const daemons: Daemon[] = [];

  beforeAll(() => {
    if (!fs.existsSync(BIN)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  });

  afterEach(async () => {
    for (const d of daemons.splice(0)) await d.signal('SIGKILL');
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  function tmp(): string {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-cli-'));
    dirs.push(d);
    return d;
  }

  function daemon(args: string[], cwd: string): Daemon {
    const d = new Daemon(args, cwd);
    daemons.push(d);
    return d;
  }

  test('-h prints usage and exits 0', async () => {
    const r = await run(['-h'], tmp());
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: vhostd/);
    expect(r.stdout).toContain('-f file');
    expect(r.stdout).toContain('-n');
  });

  test('-n -f good.conf: configuration OK, exit 0, no sockets created', async () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, 'good.conf'), GOOD_CONF);
    const r = await run(['-n', '-f', 'good.conf'], dir);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('good.conf: configuration OK');
    expect(fs.existsSync(path.join(dir, 'sockets'))).toBe(false);
  });

  const badCases: { name: string; text: string; at: string; expect: RegExp }[] = [
    {
      name: 'bad MAC',
      text: 'switch "lan" { mtu 1500 }\nvm "vm1" {\n    interface {\n        switch "lan"\n        lladdr fe:e1:bb:zz:00:01\n    }\n}\n',
      at: 'fe:e1:bb:zz',
      expect: /expected a MAC address like [0-9a-f:]+, got "fe:e1:bb:zz:00:01"/,
    },
    {
      name: 'unknown switch',
      text: 'switch "lan" {\n    mtu 1500\n}\n\nvm "vm1" {\n    interface { switch "wan" }\n}\n',
      at: '"wan"',
      expect: /unknown switch "wan", expected one of: "lan"/,
    },
    {
      name: 'unknown keyword',
      text: 'switch "lan" {\n    mtu 1500\n    speed 10000\n}\n',
      at: 'speed',
      expect: /unknown keyword "speed" in the switch block, expected one of: mtu/,
    },
  ];
  for (const c of badCases) {
    test(`-n -f bad.conf (${c.name}): exit 1, stderr names bad.conf:LINE:COL and what was expected`, async () => {
      const dir = tmp();
      fs.writeFileSync(path.join(dir, 'bad.conf'), c.text);
      const r = await run(['-n', '-f', 'bad.conf'], dir);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      const line = r.stderr.split('\n').find((l) => l.includes(`bad.conf:${posOf(c.text, c.at)}: `));
      expect(line, r.stderr).toBeDefined();
      expect(line).toMatch(c.expect);
    });
  }

  test('a missing configuration file: exit 1 with a message naming the file', async () => {
    const dir = tmp();
    for (const args of [['-n', '-f', 'nope.conf'], ['-f', 'nope.conf']]) {
      const r = await run(args, dir);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('nope.conf');
      expect(r.stderr).toMatch(/cannot read configuration file: no such file/);
    }
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    test(`-f conf: sockets per interface (relative socket dir from the file's dir), JSON logs, QEMU args; ${sig} exits 0 and removes the sockets`, async () => {
      const confDir = tmp();
      const cwd = tmp(); // a different cwd: "sockets" must resolve against the config file's directory
      const conf = path.join(confDir, 'vhostd.conf');
      fs.writeFileSync(conf, GOOD_CONF);
      const d = daemon(['-f', conf], cwd);
      await d.started();
      const sockDir = path.join(confDir, 'sockets');
      const sockets = ['alpha.net0.sock', 'alpha.net1.sock', 'beta.net0.sock'].map((s) => path.join(sockDir, s));
      for (const s of sockets) expect(isSocket(s), s).toBe(true);
      // Plus the control socket, which defaults to <socket dir>/vhostd.sock (docs/control.md).
      expect(fs.readdirSync(sockDir).sort()).toEqual(['alpha.net0.sock', 'alpha.net1.sock', 'beta.net0.sock', 'vhostd.sock']);
      expect(fs.existsSync(path.join(cwd, 'sockets'))).toBe(false);
      for (const s of sockets) expect(await tryConnect(s)).toBe('ok');

      // One QEMU argument line per socket.
      const qemu = await d.waitFor(() => {
        const q = d.logs.filter((l) => typeof l.qemu === 'string');
        return q.length >= 3 && q;
      }, 'QEMU argument lines');
      expect(qemu).toHaveLength(3);
      const macs = new Set<string>();
      for (const s of sockets) {
        const line = qemu.find((l) => l.socket === s);
        expect(line, `QEMU line for ${s}`).toBeDefined();
        const args = String(line!.qemu);
        const esc = s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        expect(args).toMatch(new RegExp(`-chardev socket,[^ ]*path=${esc},reconnect=1`));
        expect(args).toMatch(/-netdev vhost-user,/);
        const mac = /-device virtio-net-pci,[^ ]*mac=([0-9a-f:]{17})/.exec(args);
        expect(mac, args).not.toBeNull();
        macs.add(mac![1]);
        if (s.endsWith('alpha.net0.sock')) expect(mac![1]).toBe('fe:e1:bb:f1:c8:01');
        else expect(mac![1]).toMatch(/^fe:e1:ba:/);
      }
      expect(macs.size).toBe(3);

      const { code, signal } = await d.signal(sig);
      expect(signal).toBeNull();
      expect(code).toBe(0);
      for (const s of [...sockets, path.join(sockDir, 'vhostd.sock')]) expect(fs.existsSync(s), s).toBe(false);
      // Every stdout line is one JSON object.
      expect(d.lines.length).toBeGreaterThan(3);
      for (const l of d.lines) expect(() => JSON.parse(l), l).not.toThrow();
      expect(d.logs.every((l) => typeof l === 'object' && l !== null && typeof l.msg === 'string')).toBe(true);
      expect(d.logs.some((l) => l.msg === 'shutting down' && l.signal === sig)).toBe(true);
    });
  }

  test('without -f: the embedded default configuration creates ./run/vm1.net0.sock and ./run/vm2.net0.sock', async () => {
    const cwd = tmp();
    const d = daemon([], cwd);
    await d.started();
    const s1 = path.join(cwd, 'run', 'vm1.net0.sock');
    const s2 = path.join(cwd, 'run', 'vm2.net0.sock');
    expect(isSocket(s1)).toBe(true);
    expect(isSocket(s2)).toBe(true);
    const { code } = await d.signal('SIGTERM');
    expect(code).toBe(0);
    expect(fs.existsSync(s1)).toBe(false);
    expect(fs.existsSync(s2)).toBe(false);
  });

  test("the README's `npm start` script runs the daemon on the embedded default", async () => {
    // scripts.start is "<build> && node build/src/bin/vhostd.js [args]": run that command line's daemon part.
    const start = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.start;
    const m = /node build\/src\/bin\/vhostd\.js(.*)$/.exec(start);
    expect(m, `scripts.start runs the daemon: ${start}`).not.toBeNull();
    const args = m![1].trim().split(/\s+/).filter(Boolean);
    const cwd = tmp();
    const d = daemon(args, cwd);
    await d.started();
    const qemu = d.logs.filter((l) => typeof l.qemu === 'string');
    expect(qemu.map((l) => l.socket)).toEqual([path.join(cwd, 'run', 'vm1.net0.sock'), path.join(cwd, 'run', 'vm2.net0.sock')]);
    expect((await d.signal('SIGINT')).code).toBe(0);
  });

  test('a stale socket left by a killed daemon is replaced on start', async () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, 'vhostd.conf'), GOOD_CONF);
    const first = daemon(['-f', 'vhostd.conf'], dir);
    await first.started();
    const s = path.join(dir, 'sockets', 'beta.net0.sock');
    expect(isSocket(s)).toBe(true);
    await first.signal('SIGKILL');
    expect(isSocket(s)).toBe(true); // left behind
    expect(await tryConnect(s)).toBe('ECONNREFUSED');

    const second = daemon(['-f', 'vhostd.conf'], dir);
    await second.started();
    expect(isSocket(s)).toBe(true);
    expect(await tryConnect(s)).toBe('ok');
    expect((await second.signal('SIGTERM')).code).toBe(0);
  });

  // The server only removes a socket it created itself (a failed start once deleted the refused file).
  test('a regular file at a socket path is not deleted; the daemon fails to start with a clear error (exit 1)', async () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, 'vhostd.conf'), GOOD_CONF);
    fs.mkdirSync(path.join(dir, 'sockets'));
    const victim = path.join(dir, 'sockets', 'alpha.net1.sock'); // not the first interface: others exist by then
    fs.writeFileSync(victim, 'precious\n');
    const r = await run(['-f', 'vhostd.conf'], dir);
    expect(r.code).toBe(1);
    const out = r.stdout + r.stderr;
    expect(out).toContain(victim);
    expect(out).toMatch(/not a socket/);
    expect(r.stdout.split('\n').filter(Boolean).some((l) => JSON.parse(l).msg === 'vhostd started')).toBe(false);
    // The file is untouched and nothing else is left behind.
    expect(fs.readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(fs.readdirSync(path.join(dir, 'sockets'))).toEqual(['alpha.net1.sock']);
  });
});
