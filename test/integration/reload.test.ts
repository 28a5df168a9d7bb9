/**
 * Daemon.reload (docs/control.md) through the real vhost-user path: an in-process Daemon with the native binding,
 * FakeNetDriver / FakeBlkDriver guests on its sockets. Added and removed vms and disks, port flags changed under
 * a connected guest, a re-created device, live switch settings, what needs a restart, a refused reload that
 * changes nothing, and the socket owner (mode 0660, configured uid/gid) on start and on reload.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, test } from 'vitest';
import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import { parseConfig } from '../../src/config/parser.js';
import type { Config, SocketOwner } from '../../src/config/model.js';
import { Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/util/log.js';
import { FakeNetDriver, ethFrame } from '../helpers/fake-net-driver.js';
import { FakeBlkDriver } from '../helpers/fake-blk-driver.js';
import { waitFor, type LogLine } from '../helpers/backend-fixture.js';

const native = nativeAvailable();
const M1 = 'fe:e1:bb:00:00:01';
const M2 = 'fe:e1:bb:00:00:02';
const M3 = 'fe:e1:bb:00:00:03';
const M9 = 'fe:e1:bb:00:00:09';
const BCAST = 'ff:ff:ff:ff:ff:ff';
const VIRTIO_BLK_S_OK = 0;

const SW = 'switch "s0" {}\n';
const VM1 = `vm "vm1" { interface { switch "s0"; lladdr ${M1} } }\n`;
const VM2 = `vm "vm2" { interface { switch "s0"; lladdr ${M2} } }\n`;
const VM3 = `vm "vm3" { interface { switch "s0"; lladdr ${M3} } }\n`;

describe.skipIf(!native.ok)('Daemon.reload over vhost-user', () => {
  let dir = '';
  let daemon: Daemon | null = null;
  let logs: LogLine[] = [];
  const closers: { close(): void }[] = [];
  afterEach(async () => {
    for (const d of closers.splice(0)) d.close();
    await daemon?.stop();
    daemon = null;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const conf = (text: string, socketDir = dir): Config => parseConfig(`socket dir "${socketDir}"\n${text}`, path.join(dir, 'vhostd.conf'), { baseDir: dir });
  const sock = (name: string): string => path.join(dir, `${name}.sock`);
  const port = (name: string) => daemon!.netPorts.find((p) => p.device.name === name)!;

  /** A running Daemon on `text`; `images` are created (zero-filled, in bytes) in its directory first. */
  async function start(text: string, owner?: SocketOwner, images: Record<string, number> = {}): Promise<Daemon> {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-reload-'));
    for (const [name, size] of Object.entries(images)) fs.writeFileSync(path.join(dir, name), Buffer.alloc(size));
    logs = [];
    const sink = new Writable({
      write: (chunk: Buffer, _e, cb) => {
        for (const l of chunk.toString().split('\n')) if (l) logs.push(JSON.parse(l) as LogLine);
        cb();
      },
    });
    const cfg = conf(text);
    if (owner) cfg.socketOwner = owner;
    daemon = new Daemon(cfg, loadNative(), createLogger({ level: 'info', destination: sink }));
    await daemon.openDisks();
    daemon.start();
    return daemon;
  }

  async function guest(name: string, seed = 1): Promise<FakeNetDriver> {
    const d = new FakeNetDriver({ socket: sock(name), seed });
    closers.push(d);
    await d.start();
    return d;
  }

  /** One frame each way between two guests (broadcast out, unicast back): both still forward. */
  async function exchange(a: FakeNetDriver, b: FakeNetDriver, macA: string, macB: string, fill: number): Promise<void> {
    const out = ethFrame(BCAST, macA, 80, fill);
    a.send(out);
    expect(await b.waitRx(1)).toEqual([out]);
    const back = ethFrame(macA, macB, 90, fill + 1);
    b.send(back);
    expect(await a.waitRx(1)).toEqual([back]);
  }

  test('a new vm: its socket appears and serves; the connected guests are not touched', async () => {
    await start(SW + VM1 + VM2);
    const [g1, g2] = [await guest('vm1.net0', 1), await guest('vm2.net0', 2)];
    const r = await daemon!.reload(conf(SW + VM1 + VM2 + VM3));
    expect(r).toMatchObject({ added: ['vm3.net0'], removed: [], changed: [], restartRequired: [] });
    expect(r.unchanged).toEqual(['vm1.net0', 'vm2.net0', 'switch s0']);
    expect(fs.statSync(sock('vm3.net0')).isSocket()).toBe(true);
    const g3 = await guest('vm3.net0', 3);
    const f = ethFrame(BCAST, M3, 60, 5);
    g3.send(f);
    expect(await g1.waitRx(1)).toEqual([f]);
    expect(await g2.waitRx(1)).toEqual([f]);
    expect(daemon!.netPorts.map((p) => p.device.name)).toEqual(['vm1.net0', 'vm2.net0', 'vm3.net0']);
    expect(logs.filter((l) => l.msg === 'reload: added').map((l) => l.dev)).toEqual(['vm3.net0']);
  });

  test('a removed vm: its guest is disconnected, its port leaves the switch, its socket is gone', async () => {
    await start(SW + VM1 + VM2);
    const [g1, g2] = [await guest('vm1.net0', 1), await guest('vm2.net0', 2)];
    await exchange(g1, g2, M1, M2, 1);
    const r = await daemon!.reload(conf(SW + VM1));
    expect(r).toMatchObject({ added: [], removed: ['vm2.net0'], changed: [] });
    await g2.fe.waitClosed();
    expect(fs.existsSync(sock('vm2.net0'))).toBe(false);
    const sw = daemon!.switches.get('s0')!;
    expect(sw.ports().map((p) => p.name)).toEqual(['vm1.net0']);
    expect(sw.entries().some((e) => e.mac === M2)).toBe(false);
    expect(daemon!.config.vms.map((v) => v.name)).toEqual(['vm1']);
  });

  test('-learn applied live: the guest stays connected and new sources are no longer learned', async () => {
    await start(SW + VM1 + VM2);
    const [g1, g2] = [await guest('vm1.net0', 1), await guest('vm2.net0', 2)];
    await exchange(g1, g2, M1, M2, 1);
    const sw = daemon!.switches.get('s0')!;
    const session = port('vm1.net0').server.currentSession;
    const r = await daemon!.reload(conf(SW + VM1.replace(`lladdr ${M1}`, `lladdr ${M1}; -learn`) + VM2));
    expect(r).toMatchObject({ added: [], removed: [], changed: ['vm1.net0'] });
    expect(r.details).toEqual([{ name: 'vm1.net0', change: 'learn true → false; applied live, the guest stays connected' }]);
    const f = ethFrame(BCAST, M9, 60, 7); // a source vm1 never used
    g1.send(f);
    expect(await g2.waitRx(1)).toEqual([f]);
    expect(sw.entries().some((e) => e.mac === M9)).toBe(false);
    expect(port('vm1.net0').server.currentSession).toBe(session);
    expect(port('vm1.net0').server.connections).toBe(1);
    // And back: learning again for a source seen after the next reload.
    await daemon!.reload(conf(SW + VM1 + VM2));
    g1.send(ethFrame(BCAST, M9, 60, 8));
    await g2.waitRx(1);
    expect(sw.entries().find((e) => e.mac === M9)?.port).toBe('vm1.net0');
  });

  test('a new lladdr re-creates the device: the guest is disconnected and a new connection gets the new MAC', async () => {
    await start(SW + VM1 + VM2);
    const [g1] = [await guest('vm1.net0', 1), await guest('vm2.net0', 2)];
    const r = await daemon!.reload(conf(SW + VM1.replace(M1, M9) + VM2));
    expect(r.changed).toEqual(['vm1.net0']);
    expect(r.details![0]!.change).toBe(`lladdr ${M1} → ${M9}; device re-created, the guest reconnects`);
    await g1.fe.waitClosed();
    expect(port('vm1.net0').device.mac).toBe(M9);
    const again = await guest('vm1.net0', 4);
    expect(port('vm1.net0').server.connected).toBe(true);
    const g2 = closers[1] as FakeNetDriver;
    await exchange(again, g2, M9, M2, 3);
  });

  test('a disk added to a running vm serves I/O; removed, its guest is disconnected and the image closed', async () => {
    await start(SW + VM1);
    const image = path.join(dir, 'd.img');
    fs.writeFileSync(image, Buffer.alloc(1 << 20));
    const withDisk = SW + `vm "vm1" { interface { switch "s0"; lladdr ${M1} }\n disk "d.img" format raw }\n`;
    const r = await daemon!.reload(conf(withDisk));
    expect(r).toMatchObject({ added: ['vm1.disk0'], changed: [], unchanged: ['vm1.net0', 'switch s0'] });
    const d = new FakeBlkDriver({ socket: sock('vm1.disk0') });
    closers.push(d);
    await d.realize();
    await d.start();
    const data = new Uint8Array(4096).map((_, i) => (i * 7) & 0xff);
    expect((await d.write(8, data)).status).toBe(VIRTIO_BLK_S_OK);
    expect((await d.flush()).status).toBe(VIRTIO_BLK_S_OK);
    const r2 = await daemon!.reload(conf(SW + VM1));
    expect(r2.removed).toEqual(['vm1.disk0']);
    await d.fe.waitClosed();
    expect(fs.existsSync(sock('vm1.disk0'))).toBe(false);
    expect(daemon!.blkPorts).toEqual([]);
    expect(fs.readFileSync(image).subarray(8 * 512, 8 * 512 + 4096)).toEqual(Buffer.from(data));
  });

  test('a disk made readonly is re-opened on the same image: the guest reconnects and reads what it wrote', async () => {
    const text = (opts: string) => SW + `vm "vm1" { disk "d.img" format raw${opts} }\n`;
    await start(text(''), undefined, { 'd.img': 1 << 20 });
    const d = new FakeBlkDriver({ socket: sock('vm1.disk0') });
    closers.push(d);
    await d.realize();
    await d.start();
    const data = new Uint8Array(512).fill(0x5a);
    expect((await d.write(1, data)).status).toBe(VIRTIO_BLK_S_OK);
    const r = await daemon!.reload(conf(text(' readonly')));
    expect(r.details).toEqual([{ name: 'vm1.disk0', change: 'readonly false → true; re-opened, the guest reconnects' }]);
    await d.fe.waitClosed();
    expect(daemon!.blkPorts.map((b) => [b.device.name, b.disk.readOnly])).toEqual([['vm1.disk0', true]]);
    const again = new FakeBlkDriver({ socket: sock('vm1.disk0'), seed: 5 });
    closers.push(again);
    await again.realize();
    await again.start();
    expect((await again.read(1, 512)).data).toEqual(data);
  });

  test('switch maxaddr and statics change live; a new mtu reaches new negotiations and names the connected guests', async () => {
    await start(SW + VM1 + VM2);
    const [g1, g2] = [await guest('vm1.net0', 1), await guest('vm2.net0', 2)];
    const sw = daemon!.switches.get('s0')!;
    const next = `switch "s0" { maxaddr 50; mtu 9000; static ${M9} on "vm2.net0" }\n` + VM1 + VM2;
    const r = await daemon!.reload(conf(next));
    expect(r.changed).toEqual(['switch s0']);
    expect(r.restartRequired).toEqual([
      'vm1.net0: switch s0 mtu 1500 → 9000; the connected guest keeps MTU 1500 until its QEMU restarts (host_mtu=9000)',
      'vm2.net0: switch s0 mtu 1500 → 9000; the connected guest keeps MTU 1500 until its QEMU restarts (host_mtu=9000)',
    ]);
    expect(sw.macTable.maxAddr).toBe(50);
    expect(sw.mtu).toBe(9000);
    expect(sw.entries()).toContainEqual(expect.objectContaining({ mac: M9, port: 'vm2.net0', static: true }));
    const f = ethFrame(M9, M1, 60, 9); // to the static entry: unicast to vm2 only
    g1.send(f);
    expect(await g2.waitRx(1)).toEqual([f]);
    await daemon!.reload(conf(`switch "s0" { maxaddr 50; mtu 9000; timeout 60 }\n` + VM1 + VM2));
    expect(sw.entries().some((e) => e.mac === M9)).toBe(false);
    expect(sw.macTable.timeoutSec).toBe(60);
  });

  test('switch poll mode changes live: the poller spins and traffic flows, and back to event-driven', async () => {
    await start(SW + VM1 + VM2);
    const [g1, g2] = [await guest('vm1.net0', 1), await guest('vm2.net0', 2)];
    const sw = daemon!.switches.get('s0')!;
    expect(sw.poller.spin).toBe(false);
    const r = await daemon!.reload(conf(`switch "s0" { poll }\n` + VM1 + VM2));
    expect(r.details).toEqual([{ name: 'switch s0', change: 'poll mode on; applied live' }]);
    expect(sw.poller.spin).toBe(true);
    const f = ethFrame(BCAST, M1, 60, 4);
    g1.send(f);
    expect(await g2.waitRx(1)).toEqual([f]);
    await daemon!.reload(conf(SW + VM1 + VM2));
    expect(sw.poller.spin).toBe(false);
    const again = ethFrame(BCAST, M1, 60, 5);
    g1.send(again);
    expect(await g2.waitRx(1)).toEqual([again]);
  });

  test('switch rules change live: a new block rule drops and counts, removing it lets frames pass again', async () => {
    await start(SW + VM1 + VM2);
    const [g1, g2] = [await guest('vm1.net0', 1), await guest('vm2.net0', 2)];
    const sw = daemon!.switches.get('s0')!;
    const r = await daemon!.reload(conf(`switch "s0" { rule block in on "vm1.net0" dst ${M9} }\n` + VM1 + VM2));
    expect(r.details).toEqual([{ name: 'switch s0', change: 'rules 0 → 1; applied live' }]);
    g1.send(ethFrame(M9, M1, 60, 1));
    await waitFor(() => sw.counters(port('vm1.net0').device.id)!.dropRulesIn === 1, 'rule drop counted');
    const ok = ethFrame(BCAST, M1, 60, 2);
    g1.send(ok);
    expect(await g2.waitRx(1)).toEqual([ok]); // the blocked frame never arrived first
    await daemon!.reload(conf(SW + VM1 + VM2));
    const again = ethFrame(M9, M1, 60, 3);
    g1.send(again);
    expect(await g2.waitRx(1)).toEqual([again]);
    expect(sw.counters(port('vm1.net0').device.id)!.dropRulesIn).toBe(1);
  });

  test('a new socket dir needs a restart: the sockets stay where they are and the guests stay connected', async () => {
    await start(SW + VM1);
    const g1 = await guest('vm1.net0', 1);
    const other = path.join(dir, 'elsewhere');
    const r = await daemon!.reload(conf(SW + VM1, other));
    expect(r.restartRequired).toContain(`socket dir: ${dir} → ${other} (restart vhostd; until then every socket stays in ${dir})`);
    expect(r.unchanged).toEqual(['vm1.net0', 'switch s0']);
    expect(daemon!.config.socketDir).toBe(dir);
    expect(fs.statSync(sock('vm1.net0')).isSocket()).toBe(true);
    expect(fs.existsSync(other)).toBe(false);
    expect(port('vm1.net0').server.connected).toBe(true);
    g1.send(ethFrame(BCAST, M1, 60, 1));
    await waitFor(() => port('vm1.net0').device.counters.txFrames === 1, 'the guest still sends');
  });

  test('a new log level applies live to the device loggers', async () => {
    await start(SW + VM1 + VM2);
    await guest('vm1.net0', 1);
    expect(logs.some((l) => l.msg === 'front-end connected' && l.dev === 'vm1.net0')).toBe(true);
    const quiet = conf(SW + VM1 + VM2);
    quiet.logLevel = 'warn';
    const r = await daemon!.reload(quiet);
    expect(r.changed).toEqual(['log level']);
    await guest('vm2.net0', 2);
    await waitFor(() => port('vm2.net0').server.connected, 'vm2 connected');
    expect(logs.some((l) => l.msg === 'front-end connected' && l.dev === 'vm2.net0')).toBe(false);
    expect(daemon!.config.logLevel).toBe('warn');
  });

  test('an unchanged connected guest keeps exchanging frames across several reloads (same connection, no ring reset)', async () => {
    await start(SW + VM1 + VM2);
    const [g1, g2] = [await guest('vm1.net0', 1), await guest('vm2.net0', 2)];
    const sessions = [port('vm1.net0').server.currentSession, port('vm2.net0').server.currentSession];
    const steps = [
      SW + VM1 + VM2 + VM3, // add
      SW + VM1 + VM2 + VM3.replace(`lladdr ${M3}`, `lladdr ${M3}; blocknonip`), // live flag on another port
      'switch "s0" { timeout 60; maxaddr 100 }\n' + VM1 + VM2 + VM3.replace(M3, M9), // switch settings, re-create
      'switch "s0" { timeout 60; maxaddr 100 }\nswitch "s1" {}\n' + VM1 + VM2, // remove, new switch
      SW + VM1 + VM2, // back
    ];
    for (let i = 0; i < steps.length; i++) {
      const r = await daemon!.reload(conf(steps[i]!));
      expect(r.unchanged).toEqual(expect.arrayContaining(['vm1.net0', 'vm2.net0']));
      await exchange(g1, g2, M1, M2, 10 * i);
    }
    expect([port('vm1.net0').server.currentSession, port('vm2.net0').server.currentSession]).toEqual(sessions);
    expect([port('vm1.net0').server.connections, port('vm2.net0').server.connections]).toEqual([1, 1]);
    expect(port('vm1.net0').device.counters).toMatchObject({ txFrames: steps.length, rxFrames: steps.length });
    expect(port('vm2.net0').device.counters).toMatchObject({ txFrames: steps.length, rxFrames: steps.length });
    expect(daemon!.switches.size).toBe(1);
  });

  test('a reload whose new disk cannot be opened is refused and changes nothing', async () => {
    await start(SW + VM1 + VM2);
    const [g1, g2] = [await guest('vm1.net0', 1), await guest('vm2.net0', 2)];
    const before = daemon!.config;
    const bad = Buffer.alloc(4096);
    bad.set([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 99]); // qcow2 magic, version 99: passes the parser, refused on open
    fs.writeFileSync(path.join(dir, 'bad.qcow2'), bad);
    const next = `switch "s0" { maxaddr 10 }\n` + VM1.replace(`lladdr ${M1}`, `lladdr ${M1}; -learn`) + VM3 + 'vm "vm4" { disk "bad.qcow2" format qcow2 }\n';
    await expect(daemon!.reload(conf(next))).rejects.toThrow(/vm4\.disk0: cannot open image .*bad\.qcow2/);
    expect(daemon!.config).toBe(before);
    expect(daemon!.netPorts.map((p) => p.device.name)).toEqual(['vm1.net0', 'vm2.net0']);
    expect(fs.existsSync(sock('vm3.net0'))).toBe(false);
    expect(fs.existsSync(sock('vm4.disk0'))).toBe(false);
    expect(daemon!.switches.get('s0')!.macTable.maxAddr).toBe(4096);
    await exchange(g1, g2, M1, M2, 1);
    expect(daemon!.switches.get('s0')!.entries().some((e) => e.mac === M1)).toBe(true); // still learning
    expect(logs.some((l) => l.msg === 'reload refused: nothing was changed')).toBe(true);
  });

  test('socket owner: every socket is mode 0660 with the configured ids, on start, on reload, and when it changes', async () => {
    // Root can give sockets away; anyone else can still chown to itself and one of its own groups.
    const root = process.getuid!() === 0;
    const gidA = root ? 65534 : process.getgid!();
    const other = root ? 65533 : (process.getgroups!().find((g) => g !== gidA) ?? gidA);
    await start(SW + VM1, { group: String(gidA), uid: -1, gid: gidA });
    const st = fs.statSync(sock('vm1.net0'));
    expect([st.mode & 0o777, st.uid, st.gid]).toEqual([0o660, process.getuid!(), gidA]);
    const added = conf(SW + VM1 + VM2);
    added.socketOwner = { group: String(gidA), uid: -1, gid: gidA };
    await daemon!.reload(added);
    const st2 = fs.statSync(sock('vm2.net0'));
    expect([st2.mode & 0o777, st2.gid]).toEqual([0o660, gidA]);
    const changed = conf(SW + VM1 + VM2);
    changed.socketOwner = { group: String(other), uid: -1, gid: other };
    const r = await daemon!.reload(changed);
    expect(r.unchanged).toEqual(['vm1.net0', 'vm2.net0', 'switch s0']);
    for (const name of ['vm1.net0', 'vm2.net0']) {
      const s = fs.statSync(sock(name));
      expect([name, s.mode & 0o777, s.gid]).toEqual([name, 0o660, other]);
    }
  });

  /** Connect to a Unix socket as another user: "ok" or the error code. */
  function connectAs(sockPath: string, uid: number, gid: number): Promise<string> {
    const script = "const c=require('net').createConnection(process.argv[1]);c.on('connect',()=>{console.log('ok');c.destroy()});c.on('error',(e)=>console.log(e.code))";
    return new Promise((resolve, reject) => {
      const p = spawn(process.execPath, ['-e', script, sockPath], { uid, gid, cwd: '/', stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.on('error', reject);
      p.on('close', () => resolve(out.trim()));
    });
  }

  test.skipIf(process.getuid?.() !== 0)("a vm's owner: a user outside its group gets EACCES on its sockets, another vm's owner lets them in; a reload applies a change", async () => {
    const [NOBODY, TENANT1, TENANT2] = [65534, 60001, 60002];
    const vm1 = (owner: string) => `vm "vm1" { ${owner}\n interface { switch "s0"; lladdr ${M1} }\n disk "vm1.img" format raw }\n`;
    const vm2 = (owner: string) => `vm "vm2" { ${owner}\n interface { switch "s0"; lladdr ${M2} } }\n`;
    const global = `socket owner ":${TENANT2}"\n`;
    await start(global + SW + vm1(`owner ":${TENANT1}"`) + vm2(''), undefined, { 'vm1.img': 1 << 20 });
    fs.chmodSync(dir, 0o755); // others may reach the sockets; the sockets' own mode decides
    const vm1Sockets = [sock('vm1.net0'), sock('vm1.disk0')];
    const modeGid = (s: string): number[] => [fs.statSync(s).mode & 0o777, fs.statSync(s).gid];
    for (const s of vm1Sockets) {
      expect(modeGid(s), s).toEqual([0o660, TENANT1]);
      expect(await connectAs(s, NOBODY, TENANT2), s).toBe('EACCES');
      expect(await connectAs(s, NOBODY, TENANT1), s).toBe('ok');
    }
    expect(modeGid(sock('vm2.net0'))).toEqual([0o660, TENANT2]); // no owner of its own: socket owner
    expect(await connectAs(sock('vm2.net0'), NOBODY, TENANT2)).toBe('ok');
    expect(await connectAs(sock('vm2.net0'), NOBODY, TENANT1)).toBe('EACCES');

    // vm1 loses its owner, vm2 gets tenant1's: chown in place, no device re-created.
    const r = await daemon!.reload(conf(global + SW + vm1('') + vm2(`owner ":${TENANT1}"`)));
    expect(r.changed).toEqual(['vm vm1', 'vm vm2']);
    expect(r.details).toEqual([
      { name: 'vm vm1', change: `owner of its sockets :${TENANT1} → :${TENANT2}; applied live, connected guests stay connected` },
      { name: 'vm vm2', change: `owner of its sockets :${TENANT2} → :${TENANT1}; applied live, connected guests stay connected` },
    ]);
    expect(r.unchanged).toEqual(['vm1.net0', 'vm2.net0', 'vm1.disk0', 'switch s0']);
    for (const s of vm1Sockets) {
      expect(modeGid(s), s).toEqual([0o660, TENANT2]);
      expect(await connectAs(s, NOBODY, TENANT2), s).toBe('ok');
    }
    expect(modeGid(sock('vm2.net0'))).toEqual([0o660, TENANT1]);
    expect(await connectAs(sock('vm2.net0'), NOBODY, TENANT2)).toBe('EACCES');
  });
});
