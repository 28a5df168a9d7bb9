/** `disk "PATH" [format qcow2|raw] [readonly]`: grammar, file checks with file:line:col, sockets, QEMU args. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { parseConfig } from '../../../src/config/parser.js';
import { qemuArgsForVm } from '../../../src/config/qemu-args.js';
import { packageRootFrom } from '../../../src/util/package-root.js';
import { callAsUser } from '../../helpers/as-user.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-disk-conf-'));
const raw = path.join(dir, 'data.img');
const qcow = path.join(dir, 'vm.qcow2');
fs.writeFileSync(raw, Buffer.alloc(1 << 20));
const q = Buffer.alloc(512);
q.set([0x51, 0x46, 0x49, 0xfb]);
fs.writeFileSync(qcow, q);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const parse = (text: string) => parseConfig(text, path.join(dir, 'vhostd.conf'));
const errorOf = (text: string): string => {
  try {
    parse(text);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected a configuration error');
};

describe('disk keyword', () => {
  test('disks with format and readonly, in any order; sockets <vm>.disk<N>.sock', () => {
    fs.writeFileSync(path.join(dir, 'third.img'), Buffer.alloc(512));
    const cfg = parse(`socket dir "/run/v"\nvm "vm13" {\n  disk "vm.qcow2" format qcow2\n  disk "${raw}" readonly format raw\n  disk "third.img"\n}\n`);
    expect(cfg.vms[0].disks).toBeDefined();
    const [d0, d1] = cfg.vms[0].disks!;
    expect(d0).toMatchObject({ index: 0, path: qcow, format: 'qcow2', readOnly: false, socketPath: '/run/v/vm13.disk0.sock', pos: { line: 3, col: 3 } });
    expect(d1).toMatchObject({ index: 1, path: raw, format: 'raw', readOnly: true, socketPath: '/run/v/vm13.disk1.sock' });
  });

  test('format is optional; a vm without disks has no disks field', () => {
    fs.writeFileSync(path.join(dir, 'plain.img'), Buffer.alloc(4096));
    const cfg = parse(`vm "a" {\n  disk "plain.img"\n}\nvm "b" {\n}\n`);
    expect(cfg.vms[0].disks![0].format).toBeUndefined();
    expect(cfg.vms[1].disks).toBeUndefined();
  });

  test('a missing image is an error at the path', () => {
    expect(errorOf(`vm "a" {\n  disk "nope.img"\n}\n`)).toMatch(/vhostd\.conf:2:8: cannot use image .*nope\.img: no such file/);
  });

  test('a directory is not an image', () => {
    expect(errorOf(`vm "a" {\n  disk "${dir}"\n}\n`)).toMatch(/2:8: expected a disk image .* is a directory/);
  });

  test('an unreadable image is an error', async () => {
    const f = path.join(dir, 'secret.img');
    fs.writeFileSync(f, Buffer.alloc(512));
    fs.chmodSync(f, 0);
    const conf = `vm "a" {\n  disk "secret.img" readonly\n}\n`;
    if (process.getuid?.() !== 0) {
      expect(errorOf(conf)).toMatch(/2:8: cannot use image .*: not readable/);
      return;
    }
    // Root reads anything: check as an unprivileged user. The loader is loaded as root and run as nobody (the
    // project dir may be a 0700 mktemp -d clone nobody cannot enter).
    const loader = path.join(packageRootFrom(import.meta.url), 'build/src/config/load.js');
    expect(fs.existsSync(loader), `${loader} (run npm run build)`).toBe(true);
    fs.chmodSync(dir, 0o755);
    const confPath = path.join(dir, 'secret.conf');
    fs.writeFileSync(confPath, conf, { mode: 0o644 });
    const r = await callAsUser(loader, 'loadConfigFile', [confPath], 65534, 65534);
    expect(r.ok).toBe(false);
    expect((r as { error: string }).error).toMatch(/secret\.conf:2:8: cannot use image .*: not readable/);
  });

  test('the same image twice (also through another name) is an error at the second disk', () => {
    const link = path.join(dir, 'alias.img');
    fs.symlinkSync(raw, link);
    expect(errorOf(`vm "a" {\n  disk "data.img"\n}\nvm "b" {\n  disk "alias.img" readonly\n}\n`)).toMatch(/5:8: image .*alias\.img is already served by vm "a" disk 0 at 2:3/);
  });

  test('format qcow2 on a file without the qcow2 magic is an error at the format', () => {
    fs.writeFileSync(path.join(dir, 'r2.img'), Buffer.alloc(512));
    expect(errorOf(`vm "a" {\n  disk "r2.img" format qcow2\n}\n`)).toMatch(/2:24: format qcow2, but .* has no qcow2 header/);
  });

  test('cache SIZE sets the qcow2 metadata cache; malformed or out-of-range sizes are errors at the size', () => {
    const cfg = parseConfig(`vm "a" {\n  disk "data.img" cache 64M\n}\n`, 'c.conf', { baseDir: dir });
    expect(cfg.vms[0].disks![0].cacheBytes).toBe(64 * 2 ** 20);
    expect(parseConfig(`vm "a" {\n  disk "data.img"\n}\n`, 'c.conf', { baseDir: dir }).vms[0].disks![0].cacheBytes).toBeUndefined();
    expect(errorOf(`vm "a" {\n  disk "data.img" cache none\n}\n`)).toMatch(/2:25: expected a qcow2 metadata cache size from 1M to 1G like 32M after cache, got "none"/);
    expect(errorOf(`vm "a" {\n  disk "data.img" cache 2G\n}\n`)).toMatch(/2:25: expected a qcow2 metadata cache size/);
  });

  test('syntax: unknown format, unknown option, unquoted path', () => {
    expect(errorOf(`vm "a" {\n  disk "data.img" format vmdk\n}\n`)).toMatch(/2:26: expected qcow2 or raw after format/);
    expect(errorOf(`vm "a" {\n  disk "data.img" aio native\n}\n`)).toMatch(/2:19: expected format, readonly, cache or the end of the disk statement/);
    expect(errorOf(`vm "a" {\n  disk data.img\n}\n`)).toMatch(/2:8: expected an image path in double quotes/);
  });

  test('QEMU arguments: a reconnecting chardev and vhost-user-blk-pci per disk', () => {
    fs.writeFileSync(path.join(dir, 'q1.img'), Buffer.alloc(512));
    const cfg = parse(`socket dir "/run/v"\nvm "vm13" {\n  disk "q1.img"\n}\n`);
    const args = qemuArgsForVm(cfg, cfg.vms[0], { tcg: true });
    expect(args).toContain('socket,id=vm13-disk0,path=/run/v/vm13.disk0.sock,reconnect=1');
    expect(args).toContain('vhost-user-blk-pci,chardev=vm13-disk0,vectors=0');
  });
});
