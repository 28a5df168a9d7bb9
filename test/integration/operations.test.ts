/**
 * What docs/operations.md tells an operator to do, done for real: the 40-vm host from examples/fleet (images made
 * with `vhostctl create`, a generated vhostd.conf checked with `vhostd -n`, the daemon serving every socket,
 * `vhostctl qemu-args vm07` and `vhostctl status` against it), and the example systemd unit accepted by
 * `systemd-analyze verify` without a warning.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';
import { nativeAvailable } from '../../src/native/binding.js';
import { packageRootFrom } from '../../src/util/package-root.js';
import { VhostdProcess, VHOSTD_BIN } from '../e2e/support/vhostd-process.js';
import { tempDirsPerTest } from '../helpers/temp-dirs.js';
import type { QemuArgsResult, StatusResult } from '../../src/control/protocol.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);

const root = packageRootFrom(import.meta.url);
const GEN = path.join(root, 'examples/fleet/gen-vhostd-conf.sh');
const VHOSTCTL = path.join(root, 'build/src/bin/vhostctl.js');
const UNIT = path.join(root, 'contrib/systemd/vhostd.service');
const VMS = 40;
const tmp = tempDirsPerTest('vhostd-ops-');
const run = promisify(execFile);

/** The real vhostctl binary; rejects (with its stderr) on a non-zero exit. */
async function vhostctl(...args: string[]): Promise<string> {
  const { stdout, stderr } = await run(process.execPath, [VHOSTCTL, ...args]);
  expect(stderr).toBe('');
  return stdout;
}

describe.skipIf(!native.ok)('deploying a 40-vm host as docs/operations.md describes', () => {
  test('vhostctl create makes the images, the generated configuration checks clean and vhostd serves all 80 sockets', async () => {
    const dir = tmp();
    const images = path.join(dir, 'vmm');
    const sockets = path.join(dir, 'run');
    fs.mkdirSync(images);
    for (let i = 1; i <= VMS; i++) {
      const name = `vm${String(i).padStart(2, '0')}`;
      execFileSync(process.execPath, [VHOSTCTL, 'create', '-s', '50G', path.join(images, `${name}.qcow2`)]);
    }
    const conf = execFileSync('sh', [GEN, '-n', String(VMS), '-d', images, '-s', sockets], { encoding: 'utf8' });
    expect(conf.match(/^vm "/gm)).toHaveLength(VMS);
    const macs = conf.match(/lladdr (\S+)/g)!;
    expect(new Set(macs).size).toBe(VMS);
    const confPath = path.join(dir, 'vhostd.conf');
    fs.writeFileSync(confPath, conf);

    const check = spawnSync(process.execPath, [VHOSTD_BIN, '-n', '-f', confPath], { encoding: 'utf8' });
    expect(check.stderr).toBe('');
    expect(check.status).toBe(0);

    const vhostd = new VhostdProcess(conf, { dir });
    try {
      await vhostd.start(60_000);
      const started = vhostd.logs.find((l) => l.msg === 'vhostd started')!;
      expect(started).toMatchObject({ vms: VMS, ports: VMS, disks: VMS });
      const socks = fs.readdirSync(sockets).filter((f) => /^vm\d+\.(net|disk)0\.sock$/.test(f));
      expect(socks).toHaveLength(2 * VMS);
      for (const s of socks) expect(fs.statSync(path.join(sockets, s)).isSocket()).toBe(true);

      // The operator's next steps: the QEMU arguments for one vm, then the status of all 80 devices.
      const control = path.join(sockets, 'vhostd.sock');
      const human = await vhostctl('-s', control, 'qemu-args', 'vm07');
      expect(human).toBe(
        [
          '-object memory-backend-memfd,id=mem,size=512M,share=on',
          '-machine memory-backend=mem',
          `-chardev socket,id=vm07-net0,path=${sockets}/vm07.net0.sock,reconnect=1`,
          '-netdev vhost-user,id=vm07-net0,chardev=vm07-net0',
          '-device virtio-net-pci,netdev=vm07-net0,mac=fe:e1:bb:00:00:07,host_mtu=1500',
          `-chardev socket,id=vm07-disk0,path=${sockets}/vm07.disk0.sock,reconnect=1`,
          '-device vhost-user-blk-pci,chardev=vm07-disk0',
        ].join(' \\\n  ') + '\n',
      );
      const { args } = JSON.parse(await vhostctl('-s', control, '--json', 'qemu-args', 'vm07')) as QemuArgsResult;
      expect(args.join(' ')).toBe(human.replace(/ \\\n {2}/g, ' ').trim());

      const st = JSON.parse(await vhostctl('-s', control, '--json', 'status')) as StatusResult;
      expect(st.devices).toHaveLength(2 * VMS);
      expect(st.devices.filter((d) => d.kind === 'disk' && d.disk?.sizeBytes === 50 * 2 ** 30)).toHaveLength(VMS);
      expect(st.devices.every((d) => !d.connected)).toBe(true);
      const lines = (await vhostctl('-s', control, 'status')).split('\n');
      expect(lines.filter((l) => /^ {2}vm\d\d\.(net|disk)0 +(net|disk) +not connected +\//.test(l))).toHaveLength(2 * VMS);
      expect(lines[1]).toBe(`switch uplink: mtu 1500, ${VMS} ports, 0 addresses`);
    } finally {
      await vhostd.stop();
    }
    // Clean shutdown removes every vhost-user socket.
    expect(fs.readdirSync(sockets).filter((f) => f.endsWith('.sock') && f !== 'vhostd.sock')).toEqual([]);
  }, 180_000);

  test('the generator refuses a bad count', () => {
    const r = spawnSync('sh', [GEN, '-n', 'forty'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/-n wants a number/);
  });
});

describe.skipIf(spawnSync('systemd-analyze', ['--version']).status !== 0 && process.env.CI !== 'true')('example systemd unit', () => {
  test('systemd-analyze verify accepts contrib/systemd/vhostd.service without a warning', () => {
    const r = spawnSync('systemd-analyze', ['verify', UNIT], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    // verify reports unknown keys and bad values on stderr but still exits 0: any line about our file is a failure.
    expect(r.stderr.split('\n').filter((l) => l.includes('vhostd.service'))).toEqual([]);
    const unit = fs.readFileSync(UNIT, 'utf8');
    expect(unit).toMatch(/^ExecStart=\/usr\/bin\/node \/opt\/vhostd\/build\/src\/bin\/vhostd\.js -f \/etc\/vhostd\.conf$/m);
    expect(unit).toMatch(/^ExecReload=.*vhostctl\.js -s \/run\/vhostd\/vhostd\.sock reload$/m);
  });
});
