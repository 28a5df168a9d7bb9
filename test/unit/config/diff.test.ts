/** planReload (docs/control.md): what a reload adds, removes, changes live, re-creates, and what needs a restart. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { planReload } from '../../../src/config/diff.js';
import type { Config } from '../../../src/config/model.js';
import { parseConfig } from '../../../src/config/parser.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-diff-'));
for (const f of ['a.img', 'b.img']) fs.writeFileSync(path.join(dir, f), Buffer.alloc(1 << 16));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const parse = (text: string, socketDir = '/run/v'): Config => parseConfig(`socket dir "${socketDir}"\n${text}`, path.join(dir, 'vhostd.conf'));

const BASE = `switch "s0" {}
vm "vm1" { interface { switch "s0"; lladdr fe:e1:bb:00:00:01 } }
vm "vm2" { interface { switch "s0"; lladdr fe:e1:bb:00:00:02 }
  disk "a.img" }
`;

/** A plan in a few words: which names landed in which list. */
function summary(prev: Config, next: Config) {
  const p = planReload(prev, next);
  return {
    netAdded: p.net.added.map((e) => e.name),
    netRemoved: p.net.removed.map((e) => e.name),
    recreated: p.net.recreated.map((c) => c.name),
    live: p.net.live.map((c) => c.name),
    diskAdded: p.disks.added.map((e) => e.name),
    diskRemoved: p.disks.removed.map((e) => e.name),
    reopened: p.disks.reopened.map((c) => c.name),
    swAdded: p.switches.added.map((s) => s.name),
    swRemoved: p.switches.removed.map((s) => s.name),
    swChanged: p.switches.changed.map((s) => s.name),
  };
}

const NOTHING = { netAdded: [], netRemoved: [], recreated: [], live: [], diskAdded: [], diskRemoved: [], reopened: [], swAdded: [], swRemoved: [], swChanged: [] };

describe('planReload', () => {
  test('the same text is no change at all, even with lines moved and blank lines added', () => {
    const moved = `\n\n# comment\n${BASE}`;
    const plan = planReload(parse(BASE), parse(moved));
    expect(summary(parse(BASE), parse(moved))).toEqual(NOTHING);
    expect(plan.net.unchanged).toEqual(['vm1.net0', 'vm2.net0']);
    expect(plan.disks.unchanged).toEqual(['vm2.disk0']);
    expect(plan.switches.unchanged).toEqual(['s0']);
    expect(plan.restartRequired).toEqual([]);
    expect(plan.ownerChanged).toBe(false);
  });

  test('a new vm adds its interfaces and disks; a vm left out removes them', () => {
    const more = `${BASE}vm "vm3" { interface { switch "s0" }\n disk "b.img" }\n`;
    expect(summary(parse(BASE), parse(more))).toEqual({ ...NOTHING, netAdded: ['vm3.net0'], diskAdded: ['vm3.disk0'] });
    expect(summary(parse(more), parse(BASE))).toEqual({ ...NOTHING, netRemoved: ['vm3.net0'], diskRemoved: ['vm3.disk0'] });
  });

  test('port flags are live changes with old and new values; an explicit default is no change', () => {
    const flags = BASE.replace('lladdr fe:e1:bb:00:00:01 }', 'lladdr fe:e1:bb:00:00:01; -learn; protected 2; blocknonip }');
    const plan = planReload(parse(BASE), parse(flags));
    expect(summary(parse(BASE), parse(flags))).toEqual({ ...NOTHING, live: ['vm1.net0'] });
    expect(plan.net.live[0]!.reasons).toEqual(['learn true → false', 'blockNonIp false → true', 'protected none → 2']);
    const back = planReload(parse(flags), parse(BASE));
    expect(back.net.live[0]!.reasons).toEqual(['learn false → true', 'blockNonIp true → false', 'protected 2 → none']);
    const explicit = BASE.replace('lladdr fe:e1:bb:00:00:01 }', 'lladdr fe:e1:bb:00:00:01; learn; discover }');
    expect(summary(parse(BASE), parse(explicit))).toEqual(NOTHING);
  });

  test('a new lladdr or another switch re-creates the device, with the reason', () => {
    const mac = BASE.replace('fe:e1:bb:00:00:01', 'fe:e1:bb:00:00:09');
    expect(planReload(parse(BASE), parse(mac)).net.recreated.map((c) => [c.name, c.reasons])).toEqual([['vm1.net0', ['lladdr fe:e1:bb:00:00:01 → fe:e1:bb:00:00:09']]]);
    const moved = `switch "s1" {}\n${BASE.replace('{ switch "s0"; lladdr fe:e1:bb:00:00:01', '{ switch "s1"; lladdr fe:e1:bb:00:00:01')}`;
    const plan = planReload(parse(BASE), parse(moved));
    expect(summary(parse(BASE), parse(moved))).toEqual({ ...NOTHING, recreated: ['vm1.net0'], swAdded: ['s1'] });
    expect(plan.net.recreated[0]!.reasons).toEqual(['switch s0 → s1']);
  });

  test('a disk with another image, format, readonly or cache is re-opened', () => {
    const cases: [string, string][] = [
      ['disk "b.img"', `image ${path.join(dir, 'a.img')} → ${path.join(dir, 'b.img')}`],
      ['disk "a.img" format raw', 'format detected → raw'],
      ['disk "a.img" readonly', 'readonly false → true'],
      ['disk "a.img" cache 1M', 'cache default → 1048576'],
    ];
    for (const [line, reason] of cases) {
      const plan = planReload(parse(BASE), parse(BASE.replace('disk "a.img"', line)));
      expect(plan.disks.reopened.map((c) => [c.name, c.reasons])).toEqual([['vm2.disk0', [reason]]]);
      expect(plan.net.unchanged).toEqual(['vm1.net0', 'vm2.net0']);
    }
  });

  test('switch settings: maxaddr and timeout (table), statics, rules, mtu and vport each flagged', () => {
    const next = BASE.replace('switch "s0" {}', `switch "s0" {
  maxaddr 100
  timeout 60
  mtu 9000
  vport "tap9"
  static fe:e1:bb:00:00:77 on "vm1.net0"
  rule block in on "vm2.net0" src fe:e1:bb:00:00:66
}`);
    const [c] = planReload(parse(BASE), parse(next)).switches.changed;
    expect(c).toMatchObject({ name: 's0', mtu: true, table: true, statics: true, rules: true, vport: true });
    expect(c!.reasons).toEqual(['mtu 1500 → 9000', 'maxaddr 4096 → 100', 'timeout 240 → 60', 'statics 0 → 1', 'rules 0 → 1', 'vport none → tap9']);
    const poll = planReload(parse(BASE), parse(BASE.replace('switch "s0" {}', 'switch "s0" { poll }'))).switches.changed;
    expect(poll.map((s) => [s.name, s.poll, s.table, s.reasons])).toEqual([['s0', true, false, ['poll mode on']]]);
    const unpoll = planReload(parse(BASE.replace('switch "s0" {}', 'switch "s0" { poll }')), parse(BASE)).switches.changed;
    expect(unpoll.map((s) => s.reasons)).toEqual([['poll mode off']]);
    const onlyTimeout = planReload(parse(BASE), parse(BASE.replace('switch "s0" {}', 'switch "s0" { timeout 240 }')));
    expect(onlyTimeout.switches.unchanged).toEqual(['s0']); // the default spelled out
  });

  test('a switch left out is removed (its ports went with their vms)', () => {
    const two = `switch "s1" {}\n${BASE}vm "vm3" { interface { switch "s1" } }\n`;
    expect(summary(parse(two), parse(BASE))).toEqual({ ...NOTHING, netRemoved: ['vm3.net0'], swRemoved: ['s1'] });
  });

  test('a new socket dir needs a restart: every socket, old and new, stays in the running directory', () => {
    const more = `${BASE}vm "vm3" { interface { switch "s0" } }\n`;
    const plan = planReload(parse(BASE, '/run/a'), parse(more, '/run/b'));
    expect(plan.restartRequired).toEqual([
      'socket dir: /run/a → /run/b (restart vhostd; until then every socket stays in /run/a)',
      'control socket: /run/a/vhostd.sock → /run/b/vhostd.sock (restart vhostd)',
    ]);
    expect(plan.effective.socketDir).toBe('/run/a');
    expect(plan.net.unchanged).toEqual(['vm1.net0', 'vm2.net0']);
    expect(plan.disks.unchanged).toEqual(['vm2.disk0']);
    expect(plan.net.added[0]!.config.socketPath).toBe('/run/a/vm3.net0.sock');
  });

  test('control socket and metrics listener keep their running values and are reported; the log level is live', () => {
    const prev = parse(BASE);
    const next: Config = { ...parse(BASE), controlPath: '/run/ctl.sock', metricsListen: { host: '127.0.0.1', port: 9100 }, logLevel: 'debug' };
    const plan = planReload(prev, next);
    expect(plan.restartRequired).toEqual([
      'control socket: /run/v/vhostd.sock → /run/ctl.sock (restart vhostd)',
      'metrics listen: off → 127.0.0.1:9100 (restart vhostd)',
    ]);
    expect(plan.effective.controlPath).toBeUndefined();
    expect(plan.effective.metricsListen).toBeUndefined();
    expect(plan.effective.logLevel).toBe('debug');
    expect(plan.logLevel).toEqual({ from: 'info', to: 'debug' });
    expect(planReload(next, { ...parse(BASE), logLevel: 'debug' }).logLevel).toBeNull();
    expect(planReload({ ...prev, logLevel: 'info' }, prev).logLevel).toBeNull(); // absent = info
    expect(summary(prev, next)).toEqual(NOTHING);
  });

  test('an explicit control socket that stays put is not reported when only the socket dir changes', () => {
    const plan = planReload({ ...parse(BASE, '/run/a'), controlPath: '/run/ctl.sock' }, { ...parse(BASE, '/run/b'), controlPath: '/run/ctl.sock' });
    expect(plan.restartRequired).toEqual(['socket dir: /run/a → /run/b (restart vhostd; until then every socket stays in /run/a)']);
    expect(plan.effective.controlPath).toBe('/run/ctl.sock');
  });

  test('socket owner: a change of uid or gid is flagged, the same ids are not', () => {
    const prev: Config = { ...parse(BASE), socketOwner: { group: 'kvm', uid: -1, gid: 105 } };
    expect(planReload(prev, { ...parse(BASE), socketOwner: { group: 'kvm', uid: -1, gid: 105 } }).ownerChanged).toBe(false);
    expect(planReload(prev, { ...parse(BASE), socketOwner: { group: 'nogroup', uid: -1, gid: 65534 } }).ownerChanged).toBe(true);
    expect(planReload(prev, parse(BASE)).ownerChanged).toBe(true);
  });

  test("a vm's owner: a change of its sockets' ids is listed per vm, with the owner merged with socket owner", () => {
    const own = (text: string, owner?: Config['socketOwner'], vmOwner?: Config['socketOwner']): Config => {
      const cfg: Config = { ...parse(text), ...(owner ? { socketOwner: owner } : {}) };
      if (vmOwner) cfg.vms.find((v) => v.name === 'vm2')!.owner = vmOwner;
      return cfg;
    };
    const kvm = { group: 'kvm', uid: -1, gid: 105 };
    const t1 = { group: 'tenant1', uid: -1, gid: 2001 };
    expect(planReload(own(BASE, kvm), own(BASE, kvm, t1)).vmOwners).toEqual([{ vm: 'vm2', from: ':kvm', to: ':tenant1' }]);
    expect(planReload(own(BASE, kvm, t1), own(BASE, kvm)).vmOwners).toEqual([{ vm: 'vm2', from: ':tenant1', to: ':kvm' }]);
    expect(planReload(own(BASE, undefined, t1), own(BASE)).vmOwners).toEqual([{ vm: 'vm2', from: ':tenant1', to: 'none' }]);
    expect(planReload(own(BASE, kvm, t1), own(BASE, kvm, { ...t1 })).vmOwners).toEqual([]);
    // The same ids through the global owner are no change for the vm; vms without an owner follow ownerChanged.
    expect(planReload(own(BASE, t1), own(BASE, kvm, t1)).vmOwners).toEqual([]);
    const global = planReload(own(BASE, kvm), own(BASE, t1));
    expect([global.ownerChanged, global.vmOwners]).toEqual([true, []]);
    expect(planReload(own(BASE, kvm, { user: 'qemu', uid: 107, gid: -1 }), own(BASE, t1, { user: 'qemu', uid: 107, gid: -1 })).vmOwners).toEqual([
      { vm: 'vm2', from: 'qemu:kvm', to: 'qemu:tenant1' },
    ]);
  });

  test('the next configuration is not modified', () => {
    const next = parse(`${BASE}vm "vm3" { interface { switch "s0" } }\n`, '/run/b');
    const copy = structuredClone(next);
    planReload(parse(BASE, '/run/a'), next);
    expect(next).toEqual(copy);
  });
});
