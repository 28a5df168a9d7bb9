/**
 * vhostctl against a live vhostd (docs/control.md): the real daemon as a child process (VhostdProcess) and the real
 * vhostctl binary (build/src/bin/vhostctl.js) for every command, fake virtio drivers as guests. Also the control
 * protocol itself over a raw socket (malformed lines, an over-long line, many clients at once), the control socket
 * life cycle (stale file replaced, a live one refused), `socket owner` permissions (a user outside the group is
 * refused by the control socket and by the vhost-user sockets) and `vhostctl reload`.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import { controlRequest } from '../../src/control/client.js';
import type { ControlRequest, DeviceStatus, QemuArgsResult, StatusResult, SwitchView } from '../../src/control/protocol.js';
import { packageRootFrom } from '../../src/util/package-root.js';
import { FakeNetDriver, ethFrame } from '../helpers/fake-net-driver.js';
import { FakeBlkDriver } from '../helpers/fake-blk-driver.js';
import { VhostdProcess } from '../e2e/support/vhostd-process.js';
import { callAsUser } from '../helpers/as-user.js';
import { runVhostctl, type VhostctlRun } from '../helpers/vhostctl-cli.js';

/** The disk I/O engine the daemon under test runs (it inherits VHOSTD_DISK_ENGINE; io_uring is available here). */
const ENGINE = process.env.VHOSTD_DISK_ENGINE === 'threads' ? 'threads' : 'io_uring';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === 'true') throw new Error('the socket owner test needs root (groupadd, spawn as nobody) in CI');

const CLIENT = path.join(packageRootFrom(import.meta.url), 'build/src/control/client.js');
const MAC1 = 'fe:e1:bb:00:00:01';
const MAC2 = 'fe:e1:bb:00:00:02';
const NOBODY = 65534;

/** Run the vhostctl binary. */
function vhostctl(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<VhostctlRun> {
  return runVhostctl(args, opts);
}

async function ctlJson<T>(sock: string, ...args: string[]): Promise<T> {
  const r = await vhostctl(['-s', sock, '--json', ...args]);
  expect(r, r.err).toMatchObject({ code: 0, err: '' });
  return JSON.parse(r.out) as T;
}

/** Poll the daemon (through the client library, cheaper than a process) until `pred` holds. */
async function until<T>(sock: string, req: ControlRequest, pred: (r: T) => boolean, what: string): Promise<T> {
  const end = Date.now() + 15_000;
  for (;;) {
    const r = (await controlRequest(sock, req)) as T;
    if (pred(r)) return r;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(r)}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

const device = (s: StatusResult, name: string): DeviceStatus => {
  const d = s.devices.find((x) => x.name === name);
  if (!d) throw new Error(`no device ${name} in ${s.devices.map((x) => x.name).join(' ')}`);
  return d;
};

/**
 * Send raw bytes on one connection and collect `n` answer lines. With `halfClose`, shut down the sending side after
 * the payload and collect every answer until the daemon closes its side.
 */
function rawExchange(sock: string, payload: string | Buffer, n: number, halfClose = false): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection({ path: sock, allowHalfOpen: true });
    let buf = '';
    const t = setTimeout(() => reject(new Error(`only got: ${buf}`)), 15_000);
    if (halfClose) {
      c.on('end', () => {
        clearTimeout(t);
        c.destroy();
        resolve(buf.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>));
      });
      c.on('data', (d) => (buf += d.toString()));
      c.on('error', reject);
      c.end(payload);
      return;
    }
    c.on('data', (d) => {
      buf += d.toString();
      const lines = buf.split('\n').filter((l) => l !== '');
      if (buf.endsWith('\n') && lines.length >= n) {
        clearTimeout(t);
        c.destroy();
        resolve(lines.map((l) => JSON.parse(l) as Record<string, unknown>));
      }
    });
    c.on('error', reject);
    c.write(payload);
  });
}

const CONF = `switch "s0" { mtu 1500 }
vm "vm1" {
  interface { switch "s0"; lladdr ${MAC1} }
  disk "disk.img"
}
vm "vm2" {
  interface { switch "s0"; lladdr ${MAC2}; -learn; blocknonip; protected 3; tagged 10-12 }
}
`;

describe.skipIf(!native.ok)('vhostctl against a live vhostd', () => {
  let vhostd: VhostdProcess;
  let sock: string;
  const drivers: { close(): void }[] = [];

  beforeAll(async () => {
    vhostd = new VhostdProcess(CONF);
    fs.writeFileSync(path.join(vhostd.dir, 'disk.img'), Buffer.alloc(1 << 20));
    await vhostd.start();
    sock = vhostd.controlSocket;
  });

  afterAll(async () => {
    for (const d of drivers) d.close();
    await vhostd?.stop();
    vhostd?.cleanup();
  });

  test('status lists every device; a connecting driver shows as connected with its features, queues and MTU', async () => {
    const before = await ctlJson<StatusResult>(sock, 'status');
    expect(before.devices.map((d) => [d.name, d.kind, d.connected])).toEqual([
      ['vm1.net0', 'net', false],
      ['vm1.disk0', 'disk', false],
      ['vm2.net0', 'net', false],
    ]);
    expect(device(before, 'vm1.net0')).toMatchObject({ vm: 'vm1', socket: vhostd.socket('vm1'), features: [], queues: [], net: { switch: 's0', mac: MAC1, mtu: 1500 } });
    expect(device(before, 'vm1.disk0')).toMatchObject({
      socket: vhostd.diskSocket('vm1'),
      // The daemon inherits VHOSTD_DISK_ENGINE: the blk tests run on both engines.
      disk: { image: path.join(vhostd.dir, 'disk.img'), format: 'raw', readOnly: false, sizeBytes: 1 << 20, engine: ENGINE },
    });

    const a = new FakeNetDriver({ socket: vhostd.socket('vm1'), eventIdx: true, mtu: 1400 });
    drivers.push(a);
    await a.start();
    const blk = new FakeBlkDriver({ socket: vhostd.diskSocket('vm1') });
    drivers.push(blk);
    await blk.realize();
    await blk.start();
    const after = await ctlJson<StatusResult>(sock, 'status');
    const net0 = device(after, 'vm1.net0');
    expect(net0).toMatchObject({ connected: true, connections: 1, net: { mtu: 1400 } });
    expect(net0.features).toEqual(expect.arrayContaining(['VERSION_1', 'MRG_RXBUF', 'EVENT_IDX', 'MTU', 'PROTOCOL_FEATURES']));
    expect(net0.protocolFeatures).toEqual(expect.arrayContaining(['MQ', 'REPLY_ACK', 'NET_MTU']));
    expect(net0.queues.map((q) => [q.index, q.started, q.enabled])).toEqual([[0, true, true], [1, true, true]]);
    const disk0 = device(after, 'vm1.disk0');
    expect(disk0.connected).toBe(true);
    expect(disk0.features).toEqual(expect.arrayContaining(['VERSION_1', 'FLUSH', 'MQ', 'DISCARD', 'WRITE_ZEROES']));
    expect(disk0.features).not.toContain('GUEST_CSUM'); // blk bit 1 is SIZE_MAX, not a net name
    expect(disk0.features).toContain('SIZE_MAX');
    expect(device(after, 'vm2.net0').connected).toBe(false);

    const human = await vhostctl(['-s', sock, 'status']);
    expect(human.code).toBe(0);
    expect(human.out).toMatch(/vm1\.net0 +net +connected +\S+vm1\.net0\.sock/);
    expect(human.out).toMatch(/switch s0 +lladdr fe:e1:bb:00:00:01 +mtu 1400/);
    expect(human.out).toMatch(/features: .*MRG_RXBUF.*EVENT_IDX.*VERSION_1/);
    expect(human.out).toMatch(new RegExp(`image \\S+disk\\.img +raw +read-write +1 MiB +writeback +engine ${ENGINE}`));
    expect(human.out).toMatch(/vm2\.net0 +net +not connected/);
  });

  test('show switch: ports with flags, and the MAC table with the driver\'s address and its age', async () => {
    const a = drivers[0] as FakeNetDriver;
    a.send(ethFrame('ff:ff:ff:ff:ff:ff', MAC1, 60));
    await until<SwitchView>(sock, { cmd: 'show-switch', switch: 's0' }, (v) => v.addresses.some((e) => e.mac === MAC1), 'the MAC to be learned');
    const v = await ctlJson<SwitchView>(sock, 'show', 'switch', 's0');
    expect(v).toMatchObject({ name: 's0', mtu: 1500, maxAddr: 4096, timeoutSec: 240, poll: false });
    expect(v.addresses).toEqual([{ mac: MAC1, port: 'vm1.net0', ageSec: expect.any(Number), static: false }]);
    expect(v.ports.map((p) => [p.name, p.flags])).toEqual([
      ['vm1.net0', ['LEARNING', 'DISCOVER']],
      ['vm2.net0', ['DISCOVER', 'BLOCKNONIP']],
    ]);
    expect(v.ports[1]).toMatchObject({ protected: [3], tagged: [10, 11, 12], connected: false });
    expect(v.ports[0]!.counters).toMatchObject({ rxFrames: 1, floodFrames: 1, macLearned: 1 });

    const human = await vhostctl(['-s', sock, 'show', 'switch', 's0']);
    expect(human.code).toBe(0);
    expect(human.out).toMatch(/^ {2}vm1\.net0 flags=<LEARNING,DISCOVER>$/m);
    expect(human.out).toMatch(/^ {2}vm2\.net0 flags=<DISCOVER,BLOCKNONIP>$/m);
    expect(human.out).toMatch(/tagged 10-12 +protected 3/);
    expect(human.out).toMatch(/^ {2}fe:e1:bb:00:00:01 vm1\.net0 +age \d+s$/m);
  });

  test('switch flush, static and deladdr change what show switch reports', async () => {
    const flush = await vhostctl(['-s', sock, 'switch', 's0', 'flush']);
    expect(flush).toMatchObject({ code: 0, out: 'switch s0: 1 dynamic addresses flushed\n' });
    expect((await ctlJson<SwitchView>(sock, 'show', 'switch', 's0')).addresses).toEqual([]);

    const add = await vhostctl(['-s', sock, 'switch', 's0', 'static', 'FE:E1:BB:00:00:99', 'on', 'vm2.net0']);
    expect(add).toMatchObject({ code: 0, out: 'switch s0: static fe:e1:bb:00:00:99 on vm2.net0\n' });
    expect((await ctlJson<SwitchView>(sock, 'show', 'switch', 's0')).addresses).toEqual([{ mac: 'fe:e1:bb:00:00:99', port: 'vm2.net0', ageSec: 0, static: true }]);
    // A static entry survives flush (veb semantics).
    await vhostctl(['-s', sock, 'switch', 's0', 'flush']);
    expect((await ctlJson<SwitchView>(sock, 'show', 'switch', 's0')).addresses).toHaveLength(1);

    const del = await vhostctl(['-s', sock, 'switch', 's0', 'deladdr', 'fe:e1:bb:00:00:99']);
    expect(del).toMatchObject({ code: 0, out: 'switch s0: fe:e1:bb:00:00:99 deleted\n' });
    expect((await ctlJson<SwitchView>(sock, 'show', 'switch', 's0')).addresses).toEqual([]);
  });

  test('errors: a clear message on stderr and exit status 1', async () => {
    const cases: [string[], RegExp][] = [
      [['show', 'switch', 'nope'], /^vhostctl: unknown switch "nope", expected one of: "s0"$/],
      [['switch', 's0', 'deladdr', 'fe:e1:bb:00:00:99'], /^vhostctl: switch "s0" has no entry for fe:e1:bb:00:00:99$/],
      [['switch', 's0', 'static', 'zz:zz', 'on', 'vm1.net0'], /^vhostctl: expected a MAC address like fe:e1:bb:f1:c8:01, got "zz:zz"$/],
      [['switch', 's0', 'static', '01:00:5e:00:00:01', 'on', 'vm1.net0'], /^vhostctl: expected a unicast MAC address, got multicast/],
      [['switch', 's0', 'static', 'fe:e1:bb:00:00:98', 'on', 'vm9.net0'], /^vhostctl: switch "s0" has no port "vm9.net0", expected one of: "vm1.net0", "vm2.net0"$/],
      [['qemu-args', 'vm9'], /^vhostctl: unknown vm "vm9", expected one of: "vm1", "vm2"$/],
      [['log', 'level', 'loud'], /^vhostctl: expected a log level \(fatal, error, warn, info, debug, trace\), got "loud"$/],
      [['frobnicate'], /^vhostctl: unknown command "frobnicate"\nusage:/],
      [['switch', 's0', 'static', 'fe:e1:bb:00:00:98'], /^vhostctl: expected: vhostctl switch NAME static MAC on PORT\nusage:/],
    ];
    for (const [args, re] of cases) {
      const r = await vhostctl(['-s', sock, ...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.out, args.join(' ')).toBe('');
      expect(r.err.trimEnd(), args.join(' ')).toMatch(re);
    }
    const none = path.join(vhostd.dir, 'nothing.sock');
    expect(await vhostctl(['-s', none, 'status'])).toEqual({ code: 1, out: '', err: `vhostctl: cannot connect to ${none}: no such file (is vhostd running?)\n` });
    // The socket is found through $VHOSTD_CONTROL when -s is not given.
    const viaEnv = await vhostctl(['status'], { env: { ...process.env, VHOSTD_CONTROL: none } });
    expect(viaEnv.err).toBe(`vhostctl: cannot connect to ${none}: no such file (is vhostd running?)\n`);
  });

  test('qemu-args: shared memory backend, reconnecting chardevs, host_mtu and the socket paths', async () => {
    const r = await vhostctl(['-s', sock, 'qemu-args', 'vm1']);
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split(' \\\n  ');
    expect(lines).toEqual([
      '-object memory-backend-memfd,id=mem,size=512M,share=on',
      '-machine memory-backend=mem',
      `-chardev socket,id=vm1-net0,path=${vhostd.socket('vm1')},reconnect=1`,
      '-netdev vhost-user,id=vm1-net0,chardev=vm1-net0',
      `-device virtio-net-pci,netdev=vm1-net0,mac=${MAC1},host_mtu=1500`,
      `-chardev socket,id=vm1-disk0,path=${vhostd.diskSocket('vm1')},reconnect=1`,
      '-device vhost-user-blk-pci,chardev=vm1-disk0',
    ]);
    const j = await ctlJson<QemuArgsResult>(sock, 'qemu-args', 'vm1', '--tcg', '-m', '1G');
    expect(j.vm).toBe('vm1');
    expect(j.args.slice(0, 2)).toEqual(['-object', 'memory-backend-memfd,id=mem,size=1G,share=on']);
    expect(j.args.filter((a) => a.includes('vectors=0'))).toHaveLength(2);
  });

  test('log level: child (device) loggers follow, debug lines appear and disappear', async () => {
    const debugOf = (dev: string) => vhostd.logs.filter((l) => l.level === 20 && l.dev === dev);
    const up = await vhostctl(['-s', sock, 'log', 'level', 'debug']);
    expect(up).toMatchObject({ code: 0, out: 'log level debug (was info)\n' });
    const b = new FakeNetDriver({ socket: vhostd.socket('vm2') });
    drivers.push(b);
    await b.start();
    await vhostd.waitLog((l) => l.level === 20 && l.dev === 'vm2.net0' && l.msg === 'features set', 10_000, 'a debug line of vm2.net0');
    drivers.splice(drivers.indexOf(b), 1);
    b.close();
    await until<StatusResult>(sock, { cmd: 'status' }, (s) => !device(s, 'vm2.net0').connected, 'vm2 to disconnect');

    expect((await vhostctl(['-s', sock, 'log', 'level', 'info'])).code).toBe(0);
    const seen = debugOf('vm2.net0').length;
    const c = new FakeNetDriver({ socket: vhostd.socket('vm2') });
    drivers.push(c);
    await c.start();
    await until<StatusResult>(sock, { cmd: 'status' }, (s) => device(s, 'vm2.net0').connections === 2 && device(s, 'vm2.net0').queues.length === 2, 'vm2 to reconnect');
    // The negotiation has been handled (both queues started). An info line logged now follows any line logged during
    // it on the daemon's stdout, so once it is read, a debug line of the negotiation would have been read too.
    const marks = vhostd.logs.filter((l) => l.msg === 'log level changed').length;
    expect((await vhostctl(['-s', sock, 'log', 'level', 'info'])).code).toBe(0);
    await vhostd.waitLog(() => vhostd.logs.filter((l) => l.msg === 'log level changed').length > marks, 10_000, 'the marker line');
    expect(debugOf('vm2.net0')).toHaveLength(seen);
    expect(vhostd.logs.filter((l) => l.msg === 'front-end connected' && l.dev === 'vm2.net0')).toHaveLength(2);
  });

  test('malformed requests get an error answer and the connection stays usable', async () => {
    const long = `{"cmd":"status","pad":"${'x'.repeat(70_000)}"}\n`;
    const answers = await rawExchange(sock, `not json\n{"cmd":"nope"}\n[1]\n{"cmd":"show-switch"}\n${long}{"cmd":"status"}\n`, 6);
    expect(answers.slice(0, 5)).toEqual([
      { ok: false, error: expect.stringMatching(/^malformed request: .*expected one JSON object per line/) },
      { ok: false, error: expect.stringMatching(/^unknown command "nope", expected one of: status, show-switch, /) },
      { ok: false, error: 'malformed request: expected a JSON object like {"cmd":"status"}' },
      { ok: false, error: 'show-switch: missing field "switch"' },
      { ok: false, error: 'request line longer than 65536 bytes' },
    ]);
    expect(answers[5]).toMatchObject({ ok: true, result: { devices: expect.any(Array) } });
  });

  test('a client that shuts down its side after sending still gets every answer, then the daemon closes', async () => {
    // The last request has no newline: the end of the stream ends it.
    const answers = await rawExchange(sock, '{"cmd":"show-switch","switch":"s0"}\n{"cmd":"qemu-args","vm":"vm2"}', 0, true);
    expect(answers.map((a) => a.ok)).toEqual([true, true]);
    expect((answers[1]!.result as QemuArgsResult).vm).toBe('vm2');
  });

  test('many clients at once all get their answers', async () => {
    const raw = Array.from({ length: 100 }, (_, i) =>
      rawExchange(sock, i % 2 ? '{"cmd":"status"}\n{"cmd":"show-switch","switch":"s0"}\n' : '{"cmd":"qemu-args","vm":"vm2"}\n', i % 2 ? 2 : 1),
    );
    const procs = Array.from({ length: 4 }, () => vhostctl(['-s', sock, '--json', 'status']));
    for (const [i, r] of (await Promise.all(raw)).entries()) {
      expect(r.every((a) => a.ok === true), `client ${i}`).toBe(true);
      if (i % 2) expect((r[1]!.result as SwitchView).name).toBe('s0');
    }
    for (const r of await Promise.all(procs)) expect((JSON.parse(r.out) as StatusResult).devices).toHaveLength(3);
  });

  test('the control socket is mode 0660; a stale one is replaced, a live one refused', async () => {
    expect(fs.statSync(sock).mode & 0o777).toBe(0o660);
    const second = new VhostdProcess(CONF, { dir: vhostd.dir });
    await expect(second.start()).rejects.toThrow(/exited \(1\)/);
    const fatal = second.logs.find((l) => l.level === 60);
    expect(JSON.stringify(fatal)).toMatch(/control socket \S+vhostd\.sock is in use: another vhostd is running/);
    // The first daemon kept its sockets and still answers.
    expect(fs.existsSync(vhostd.socket('vm1'))).toBe(true);
    expect((await ctlJson<StatusResult>(sock, 'status')).devices).toHaveLength(3);
  });
});

describe.skipIf(!native.ok)('control socket after a crash', () => {
  test('a stale control socket left by a killed vhostd is replaced at the next start', async () => {
    const conf = 'switch "s" {}\nvm "v" { interface { switch "s" } }\n';
    const first = new VhostdProcess(conf);
    try {
      await first.start();
      await first.kill();
      expect(fs.lstatSync(first.controlSocket).isSocket()).toBe(true);
      const again = new VhostdProcess(conf, { dir: first.dir });
      await again.start();
      try {
        expect((await ctlJson<StatusResult>(again.controlSocket, 'status')).devices.map((d) => d.name)).toEqual(['v.net0']);
      } finally {
        await again.stop();
      }
      expect(fs.existsSync(first.controlSocket)).toBe(false); // removed at shutdown
    } finally {
      first.cleanup();
    }
  });
});

describe.skipIf(!native.ok || !isRoot)('socket owner', () => {
  const group = `vhtest${process.pid}`;
  let gid: number;
  let vhostd: VhostdProcess;

  beforeAll(async () => {
    execFileSync('groupadd', [group]);
    gid = Number(execFileSync('getent', ['group', group]).toString().split(':')[2]);
    vhostd = new VhostdProcess(`socket owner ":${group}"\nswitch "s" {}\nvm "v" { interface { switch "s" } }\n`);
    fs.chmodSync(vhostd.dir, 0o755); // others may reach the sockets; the sockets' own mode decides
    await vhostd.start();
  });

  afterAll(async () => {
    await vhostd?.stop();
    vhostd?.cleanup();
    execFileSync('groupdel', [group]);
  });

  /** Connect to a Unix socket as another user: "ok" or the error code. */
  function connectAs(sockPath: string, uid: number, g: number): Promise<string> {
    const script = "const c=require('net').createConnection(process.argv[1]);c.on('connect',()=>{console.log('ok');c.destroy()});c.on('error',(e)=>console.log(e.code))";
    return new Promise((resolve, reject) => {
      const p = spawn(process.execPath, ['-e', script, sockPath], { uid, gid: g, cwd: '/', stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.on('error', reject);
      p.on('close', () => resolve(out.trim()));
    });
  }

  test('sockets belong to the group with mode 0660: outsiders are refused, members get in', async () => {
    for (const s of [vhostd.controlSocket, vhostd.socket('v')]) {
      const st = fs.statSync(s);
      expect([st.mode & 0o777, st.gid], s).toEqual([0o660, gid]);
      expect(await connectAs(s, NOBODY, NOBODY), s).toBe('EACCES');
      expect(await connectAs(s, NOBODY, gid), s).toBe('ok');
    }
    // vhostctl's client, loaded as root and run as nobody (the project dir may be a 0700 mktemp -d clone).
    const status = [vhostd.controlSocket, { cmd: 'status' }];
    const refused = await callAsUser(CLIENT, 'controlRequest', status, NOBODY, NOBODY);
    expect(refused).toEqual({ ok: false, error: `cannot connect to ${vhostd.controlSocket}: permission denied (see socket owner in vhostd.conf)` });
    const member = await callAsUser(CLIENT, 'controlRequest', status, NOBODY, gid);
    expect(member.ok).toBe(true);
    expect((member as { value: StatusResult }).value.devices.map((d) => d.name)).toContain('v.net0');
  });
});

describe.skipIf(!native.ok)('vhostctl reload', () => {
  const base = (extra: string) => `switch "s" {}\nvm "a" { interface { switch "s"; lladdr ${MAC1} } }\n${extra}`;
  let vhostd: VhostdProcess;
  let sock: string;
  let a: FakeNetDriver;

  beforeAll(async () => {
    vhostd = new VhostdProcess(base('vm "b" { interface { switch "s" } }\n'));
    await vhostd.start();
    sock = vhostd.controlSocket;
    a = new FakeNetDriver({ socket: vhostd.socket('a') });
    await a.start();
    a.send(ethFrame('ff:ff:ff:ff:ff:ff', MAC1, 60));
    await until<StatusResult>(sock, { cmd: 'status' }, (s) => device(s, 'a.net0').counters.txFrames === 1, 'the first frame');
  });

  afterAll(async () => {
    a?.close();
    await vhostd?.stop();
    vhostd?.cleanup();
  });

  test('an added vm gets its socket, a removed one loses it; the connected guest is not disturbed', async () => {
    vhostd.writeConfig(base('vm "c" { interface { switch "s" } }\n'));
    const r = await vhostctl(['-s', sock, 'reload']);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^added: c\.net0$/m);
    expect(r.out).toMatch(/^removed: b\.net0$/m);
    expect(r.out).toMatch(/^unchanged: .*a\.net0/m);
    expect(fs.existsSync(vhostd.socket('c'))).toBe(true);
    expect(fs.existsSync(vhostd.socket('b'))).toBe(false);
    const s = await ctlJson<StatusResult>(sock, 'status');
    expect(s.devices.map((d) => d.name)).toEqual(['a.net0', 'c.net0']);
    // The guest on a.net0 stayed connected on the same connection, counters intact.
    expect(device(s, 'a.net0')).toMatchObject({ connected: true, connections: 1, counters: { txFrames: 1 } });
    expect(a.send(ethFrame('ff:ff:ff:ff:ff:ff', MAC1, 60))).toBe(true);
    await until<StatusResult>(sock, { cmd: 'status' }, (x) => device(x, 'a.net0').counters.txFrames === 2, 'a frame after the reload');
  });

  test('an invalid configuration is refused with file:line:col and the old one keeps serving', async () => {
    vhostd.writeConfig(base('vm "d" { interface { switch "nope" } }\n'));
    const r = await vhostctl(['-s', sock, 'reload']);
    expect(r.code).toBe(1);
    const lines = fs.readFileSync(vhostd.confPath, 'utf8').split('\n');
    const line = lines.findIndex((l) => l.includes('"nope"'));
    expect(r.err).toBe(`vhostctl: ${vhostd.confPath}:${line + 1}:${lines[line]!.indexOf('"nope"') + 1}: unknown switch "nope", expected one of: "s"\n`);
    const s = await ctlJson<StatusResult>(sock, 'status');
    expect(s.devices.map((d) => d.name)).toEqual(['a.net0', 'c.net0']);
    expect(device(s, 'a.net0').connected).toBe(true);
    expect(fs.existsSync(vhostd.socket('d'))).toBe(false);
    // The daemon's log says why too (whoever watches it may not be the one who ran vhostctl).
    const warn = await vhostd.waitLog((l) => l.msg === 'reload refused: the configuration has errors, the running one stays', 5000, 'the refusal in the log');
    expect(String(warn.reason)).toMatch(/unknown switch "nope"/);
  });
});
