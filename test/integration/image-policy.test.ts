/**
 * The image policy against hostile images (docs/security.md, "Images: backing files and format probing"):
 * qemu-img builds overlays that name host files, `..` paths, symlinks, device nodes and FIFOs as backing files;
 * each is refused before anything of it is read (or opened), naming the image, the backing file and the reason.
 * Allowed chains still read through (symlinks inside the tree, `backing dir`). Through the daemon, a refused disk
 * does not start and the others do. A guest that writes a qcow2 header into sector 0 of a probed raw disk, through
 * the real virtio-blk data path, gets IOERR and the disk still opens as raw afterwards.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, test } from 'vitest';
import { openDisk } from '../../src/blk/open-disk.js';
import { ImageError } from '../../src/blk/qcow2/errors.js';
import type { ImagePolicy } from '../../src/blk/qcow2/backing.js';
import type { Disk } from '../../src/blk/disk.js';
import { BlkDevice } from '../../src/blk/blk-device.js';
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import { parseConfig } from '../../src/config/parser.js';
import { planReload } from '../../src/config/diff.js';
import { Daemon } from '../../src/daemon.js';
import { createLogger, type Logger } from '../../src/util/log.js';
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK } from '../../src/blk/virtio-blk-defs.js';
import { FakeBlkDriver } from '../helpers/fake-blk-driver.js';
import type { LogLine } from '../helpers/backend-fixture.js';
import { hasQemuImg, qemuImg } from '../helpers/qcow2-tools.js';
import { tempDirsPerTest } from '../helpers/temp-dirs.js';

const native = nativeAvailable();
const MiB = 1024 * 1024;
const tmp = tempDirsPerTest('vhostd-policy-');

function capture(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write: (chunk: Buffer, _e, cb) => {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  return { log: createLogger({ level: 'debug', destination: sink }), lines };
}

/** An overlay made by qemu-img naming `backing` (as written) with format `fmt`; -u: qemu-img does not open it. */
function overlay(file: string, backing: string, fmt = 'raw', size = '1M'): string {
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', fmt, file, size);
  return file;
}

/** A layout: `img/` (the top image's directory) and `out/` next to it with a secret the guest must never read. */
function layout(): { img: string; out: string; secret: string } {
  const root = tmp();
  const img = path.join(root, 'img');
  const out = path.join(root, 'out');
  fs.mkdirSync(img);
  fs.mkdirSync(out);
  const secret = path.join(out, 'secret.raw');
  fs.writeFileSync(secret, Buffer.alloc(MiB, 0x53));
  return { img, out, secret };
}

async function openErr(file: string, policy?: ImagePolicy): Promise<ImageError> {
  const { log } = capture();
  const r = await openDisk(file, 'qcow2', true, log, { policy }).then(
    async (d) => {
      await d.close();
      return null;
    },
    (e: unknown) => e,
  );
  expect(r).toBeInstanceOf(ImageError);
  return r as ImageError;
}

async function firstSector(file: string, policy?: ImagePolicy): Promise<Buffer> {
  const { log } = capture();
  const d = await openDisk(file, undefined, true, log, { policy });
  try {
    const b = Buffer.alloc(512);
    await d.read(0, [b]);
    return b;
  } finally {
    await d.close();
  }
}

describe.skipIf(!hasQemuImg)('backing files under the image policy', () => {
  test('an absolute host file (/etc/shadow) is refused, naming the image, the backing file and the reason', async () => {
    const { img } = layout();
    const evil = overlay(path.join(img, 'evil.qcow2'), '/etc/shadow');
    const err = await openErr(evil);
    expect(err.kind).toBe('Refused');
    expect(err.message).toContain(evil);
    expect(err.message).toContain('backing file "/etc/shadow" refused');
    expect(err.message).toMatch(/outside the allowed directories/);
    expect(err.context.backing).toBe('/etc/shadow');
  });

  test('a ../ path out of the image directory is refused', async () => {
    const { img, secret } = layout();
    const evil = overlay(path.join(img, 'evil.qcow2'), '../out/secret.raw');
    const err = await openErr(evil);
    expect(err.kind).toBe('Refused');
    expect(err.message).toContain(`resolves to ${secret}, outside the allowed directories`);
  });

  test('a symlink inside the tree is followed; a symlink pointing outside is refused', async () => {
    const { img, secret } = layout();
    fs.mkdirSync(path.join(img, 'base'));
    fs.writeFileSync(path.join(img, 'base', 'b.raw'), Buffer.alloc(MiB, 0x42));
    fs.symlinkSync('base/b.raw', path.join(img, 'inside.raw'));
    fs.symlinkSync('../out/secret.raw', path.join(img, 'outside.raw'));
    const good = overlay(path.join(img, 'good.qcow2'), 'inside.raw');
    expect((await firstSector(good)).every((b) => b === 0x42)).toBe(true);
    const evil = overlay(path.join(img, 'evil.qcow2'), 'outside.raw');
    const err = await openErr(evil);
    expect(err.kind).toBe('Refused');
    expect(err.message).toContain(`resolves to ${secret}`);
    // A symlinked directory on the way out is resolved the same way.
    fs.symlinkSync('../out', path.join(img, 'outdir'));
    expect((await openErr(overlay(path.join(img, 'evil2.qcow2'), 'outdir/secret.raw'))).kind).toBe('Refused');
  });

  test('device nodes are refused by type, even where the directory is allowed', async () => {
    const { img } = layout();
    for (const dev of ['/dev/zero', '/dev/null', '/dev/tty']) {
      const evil = overlay(path.join(img, `dev${path.basename(dev)}.qcow2`), dev);
      expect((await openErr(evil)).kind).toBe('Refused');
      const err = await openErr(evil, { backingDirs: ['/dev'] });
      expect(err.kind).toBe('Refused');
      // /dev/tty would fail to open (ENXIO without a controlling terminal): refused by fstat before any open.
      expect(err.message).toMatch(/is a character device, not a regular file/);
    }
  });

  test('a FIFO backing file is refused at once (never opened, so nothing blocks)', async () => {
    const { img } = layout();
    execFileSync('mkfifo', [path.join(img, 'pipe')]);
    for (const fmt of ['raw', 'qcow2']) {
      const err = await openErr(overlay(path.join(img, `fifo-${fmt}.qcow2`), 'pipe', fmt));
      expect(err.kind).toBe('Refused');
      expect(err.message).toMatch(/is a FIFO, not a regular file/);
    }
  });

  test('a raw backing file without a stated format is refused (never probed as raw)', async () => {
    const { img } = layout();
    fs.writeFileSync(path.join(img, 'base.raw'), Buffer.alloc(MiB, 0x11));
    const top = overlay(path.join(img, 'top.qcow2'), 'base.raw');
    // Turn the backing format extension (0xe2792aca) into an unknown one: the format is no longer stated.
    const buf = fs.readFileSync(top);
    const at = buf.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]));
    expect(at).toBeGreaterThan(0);
    buf.writeUInt32BE(0x7e57_0000, at);
    fs.writeFileSync(top, buf);
    const err = await openErr(top);
    expect(err.kind).toBe('Refused');
    expect(err.message).toMatch(/no stated format and is not qcow2 \(probing raw is refused/);
    // A qcow2 backing file of unstated format is detected by its magic and used.
    qemuImg('convert', '-q', '-O', 'qcow2', path.join(img, 'base.raw'), path.join(img, 'base.qcow2'));
    const top2 = overlay(path.join(img, 'top2.qcow2'), 'base.qcow2', 'qcow2');
    const b2 = fs.readFileSync(top2);
    b2.writeUInt32BE(0x7e57_0000, b2.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca])));
    fs.writeFileSync(top2, b2);
    expect((await firstSector(top2)).every((b) => b === 0x11)).toBe(true);
  });

  test('backing dir widens the allowed directories, for every level of the chain', async () => {
    const { img, out, secret } = layout();
    const mid = overlay(path.join(out, 'mid.qcow2'), 'secret.raw');
    const top = overlay(path.join(img, 'top.qcow2'), mid, 'qcow2');
    expect((await openErr(top)).kind).toBe('Refused');
    expect((await firstSector(top, { backingDirs: [out] })).every((b) => b === 0x53)).toBe(true);
    // The second level is checked too: an allowed mid image naming a host file is refused, naming the mid image.
    const mid2 = overlay(path.join(img, 'mid2.qcow2'), '/etc/passwd');
    const err = await openErr(overlay(path.join(img, 'top2.qcow2'), 'mid2.qcow2', 'qcow2'), { backingDirs: [out] });
    expect(err.kind).toBe('Refused');
    expect(err.message).toContain(`${mid2}: backing file "/etc/passwd" refused`);
    void secret;
  });

  test("another configured disk's image is never a backing file, even in the same directory", async () => {
    const { img } = layout();
    const other = path.join(img, 'vm2.img');
    fs.writeFileSync(other, Buffer.alloc(MiB, 0x22));
    const evil = overlay(path.join(img, 'evil.qcow2'), 'vm2.img');
    const err = await openErr(evil, { denyImages: [other] });
    expect(err.kind).toBe('Refused');
    expect(err.message).toContain(`${other} is the image of another configured disk`);
  });
});

describe('a disk configured as raw', () => {
  test('a FIFO or a character device is refused by type before it is opened (a read-only FIFO open would block)', async () => {
    const { img } = layout();
    const fifo = path.join(img, 'disk.fifo');
    execFileSync('mkfifo', [fifo]);
    const { log } = capture();
    const opened = (p: string): Promise<unknown> =>
      Promise.race([
        openDisk(p, 'raw', true, log).then(async (d) => {
          await d.close();
          return 'opened';
        }),
        new Promise((_, reject) => setTimeout(() => reject(new Error(`opening ${p} blocked`)), 10_000).unref()),
      ]);
    await expect(opened(fifo)).rejects.toThrow(/is a FIFO, not a regular file or block device/);
    await expect(opened('/dev/zero')).rejects.toThrow(/is a character device, not a regular file or block device/);
  });
});

describe('the backing dir keyword', () => {
  test('repeats, resolves relative to the configuration, and must name an existing directory', () => {
    const root = tmp();
    fs.mkdirSync(path.join(root, 'base'));
    const cfg = parseConfig('backing dir "base"\nbacking dir "/tmp"\nbacking dir "base"\n', path.join(root, 'vhostd.conf'));
    expect(cfg.backingDirs).toEqual([path.join(root, 'base'), '/tmp']);
    expect(() => parseConfig('backing dir "missing"\n', path.join(root, 'vhostd.conf'))).toThrow(
      `expected an existing directory for backing dir, but ${path.join(root, 'missing')} is not one`,
    );
    expect(parseConfig('', path.join(root, 'vhostd.conf')).backingDirs).toBeUndefined();
  });

  test('a changed list re-opens on reload every disk not configured raw', () => {
    const root = tmp();
    fs.mkdirSync(path.join(root, 'base'));
    for (const f of ['a.qcow2', 'b.img', 'c.img']) fs.writeFileSync(path.join(root, f), Buffer.alloc(MiB));
    const vms = 'vm "v" { disk "a.qcow2"; disk "b.img" format raw; disk "c.img" }\n';
    const prev = parseConfig(vms, path.join(root, 'vhostd.conf'));
    const next = parseConfig(`backing dir "base"\n${vms}`, path.join(root, 'vhostd.conf'));
    const plan = planReload(prev, next);
    expect(plan.disks.reopened.map((c) => [c.name, c.reasons])).toEqual([
      ['v.disk0', [`backing dir none → ${path.join(root, 'base')}`]],
      ['v.disk2', [`backing dir none → ${path.join(root, 'base')}`]],
    ]);
    expect(plan.disks.unchanged).toEqual(['v.disk1']);
    expect(planReload(next, next).disks.reopened).toEqual([]);
  });
});

describe.skipIf(!hasQemuImg || !native.ok)('the daemon under the image policy', () => {
  let daemon: Daemon | null = null;
  afterEach(async () => {
    await daemon?.stop();
    daemon = null;
  });

  test('a refused disk does not start (logged with vm and disk); the other vms start; backing dir lets it start', async () => {
    const { img, out } = layout();
    overlay(path.join(img, 'evil.qcow2'), '../out/secret.raw');
    fs.writeFileSync(path.join(img, 'good.img'), Buffer.alloc(MiB));
    const text = `socket dir "${img}"\nvm "vm1" { disk "evil.qcow2" }\nvm "vm2" { disk "good.img" format raw }\n`;
    const c = capture();
    daemon = new Daemon(parseConfig(text, path.join(img, 'vhostd.conf')), loadNative(), c.log);
    await daemon.openDisks();
    daemon.start();
    expect(daemon.blkPorts.map((b) => b.device.name)).toEqual(['vm2.disk0']);
    const line = c.lines.find((l) => l.msg === 'disk not started: image refused by the image policy');
    expect(line).toMatchObject({ vm: 'vm1', dev: 'vm1.disk0', image: path.join(img, 'evil.qcow2') });
    expect(String(line?.reason)).toContain('backing file "../out/secret.raw" refused');
    await daemon.stop();

    const widened = parseConfig(`backing dir "${out}"\n${text}`, path.join(img, 'vhostd.conf'));
    expect(widened.backingDirs).toEqual([out]);
    daemon = new Daemon(widened, loadNative(), capture().log);
    await daemon.openDisks();
    daemon.start();
    expect(daemon.blkPorts.map((b) => b.device.name)).toEqual(['vm1.disk0', 'vm2.disk0']);
  });

  test('a reload that adds a refused image is refused and changes nothing', async () => {
    const { img } = layout();
    overlay(path.join(img, 'evil.qcow2'), '/etc/shadow');
    fs.writeFileSync(path.join(img, 'good.img'), Buffer.alloc(MiB));
    const base = `socket dir "${img}"\nvm "vm2" { disk "good.img" format raw }\n`;
    daemon = new Daemon(parseConfig(base, path.join(img, 'vhostd.conf')), loadNative(), capture().log);
    await daemon.openDisks();
    daemon.start();
    await expect(daemon.reload(parseConfig(base + 'vm "vm1" { disk "evil.qcow2" format qcow2 }\n', path.join(img, 'vhostd.conf')))).rejects.toThrow(
      /vm1\.disk0: cannot open image .*evil\.qcow2: .*backing file "\/etc\/shadow" refused/,
    );
    expect(daemon.blkPorts.map((b) => b.device.name)).toEqual(['vm2.disk0']);
  });

  /** A flat directory: vmA's overlay names vmB.img (raw, format stated) as its backing file. */
  function sharedBacking(): { img: string; a: string; b: string } {
    const { img } = layout();
    const b = path.join(img, 'vmB.img');
    fs.writeFileSync(b, Buffer.alloc(MiB, 0x42));
    const a = overlay(path.join(img, 'vmA.qcow2'), 'vmB.img');
    return { img, a, b };
  }

  test("a reload that adds a disk whose image is a backing file of a running disk is refused (naming both) and changes nothing", async () => {
    const { img, a, b } = sharedBacking();
    const vmA = 'vm "vmA" { disk "vmA.qcow2" format qcow2 }\n';
    const vmB = 'vm "vmB" { disk "vmB.img" format raw }\n';
    const conf = path.join(img, 'vhostd.conf');
    const c = capture();
    // vmB is not configured: vmB.img is a plain file in vmA's directory, so vmA opens.
    daemon = new Daemon(parseConfig(`socket dir "${img}"\n${vmA}`, conf), loadNative(), c.log);
    await daemon.openDisks();
    daemon.start();
    expect(daemon.blkPorts.map((p) => p.device.name)).toEqual(['vmA.disk0']);
    const before = structuredClone(daemon.config);
    for (const text of [vmA + vmB, vmB + vmA]) {
      await expect(daemon.reload(parseConfig(`socket dir "${img}"\n${text}`, conf))).rejects.toThrow(
        `vmB.disk0: the image ${b} of vmB.disk0 (vm vmB) is a backing file of vmA.disk0 (vm vmA, image ${a})`,
      );
      expect(daemon.blkPorts.map((p) => p.device.name)).toEqual(['vmA.disk0']);
      expect(daemon.config).toEqual(before);
      expect(fs.existsSync(path.join(img, 'vmB.disk0.sock'))).toBe(false);
    }
    const line = c.lines.find((l) => l.msg === 'reload refused: nothing was changed');
    expect(line).toMatchObject({ vm: 'vmB', dev: 'vmB.disk0', image: b, conflictsWith: 'vmA.disk0' });
    // vmA still reads its backing file, which nobody else serves.
    const sector = Buffer.alloc(512);
    await daemon.blkPorts[0]!.disk.read(0, [sector]);
    expect(sector.every((x) => x === 0x42)).toBe(true);
  });

  test('a start with both disks refuses the one whose chain holds the other\'s image, in either order', async () => {
    const { img, a } = sharedBacking();
    const vmA = 'vm "vmA" { disk "vmA.qcow2" format qcow2 }\n';
    const vmB = 'vm "vmB" { disk "vmB.img" format raw }\n';
    for (const text of [vmA + vmB, vmB + vmA]) {
      const c = capture();
      daemon = new Daemon(parseConfig(`socket dir "${img}"\n${text}`, path.join(img, 'vhostd.conf')), loadNative(), c.log);
      await daemon.openDisks();
      daemon.start();
      expect(daemon.blkPorts.map((p) => p.device.name)).toEqual(['vmB.disk0']);
      expect(daemon.config.vms.find((v) => v.name === 'vmA')?.disks).toBeUndefined();
      const line = c.lines.find((l) => l.msg === 'disk not started: image refused by the image policy');
      expect(line).toMatchObject({ vm: 'vmA', dev: 'vmA.disk0', image: a });
      expect(String(line?.reason)).toContain(`${path.join(img, 'vmB.img')} is the image of another configured disk (vmB.disk0)`);
      await daemon.stop();
      daemon = null;
    }
  });
});

describe.skipIf(!hasQemuImg || !native.ok)('a probed raw disk cannot turn itself into qcow2', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
  });

  async function serve(image: string): Promise<{ disk: Disk; device: BlkDevice; driver: FakeBlkDriver; lines: LogLine[] }> {
    const { log, lines } = capture();
    const disk = await openDisk(image, undefined, false, log);
    const device = new BlkDevice({ name: 'vm1.disk0', disk, log });
    const server = new VhostUserServer(loadNative(), path.join(path.dirname(image), 'vm1.disk0.sock'), device, log);
    server.listen();
    const driver = new FakeBlkDriver({ socket: server.socketPath });
    cleanups.push(async () => {
      driver.close();
      server.close();
      await device.drainAll();
      await disk.close();
    });
    await driver.realize();
    await driver.start();
    return { disk, device, driver, lines };
  }

  test('a guest write of a qcow2 header naming a host file to sector 0 gets IOERR; the disk still opens as raw', async () => {
    const { img } = layout();
    const image = path.join(img, 'disk.img');
    fs.writeFileSync(image, Buffer.alloc(4 * MiB, 0x5a));
    // What the guest writes: the first cluster of a real qcow2 overlay naming /etc/shadow as its raw backing file.
    const header = fs.readFileSync(overlay(path.join(tmp(), 'evil.qcow2'), '/etc/shadow')).subarray(0, 64 * 1024);
    const { device, driver, lines } = await serve(image);
    expect(lines.some((l) => l.msg === 'image format probed as raw; set format raw on the disk to fix it')).toBe(true);
    expect((await driver.write(0, header)).status).toBe(VIRTIO_BLK_S_IOERR);
    expect(device.counters).toMatchObject({ refused: 1, ioErrors: 0 });
    expect(lines.some((l) => /write refused: it would make a disk whose format was probed as raw look like qcow2/.test(l.msg))).toBe(true);
    // Other writes to sector 0, and the qcow2 header anywhere else, are ordinary data.
    const plain = Buffer.alloc(4096, 0x33);
    expect((await driver.write(0, plain)).status).toBe(VIRTIO_BLK_S_OK);
    expect((await driver.write(8, header)).status).toBe(VIRTIO_BLK_S_OK);
    expect((await driver.read(0, 4096)).data).toEqual(new Uint8Array(plain));
    await cleanups.pop()!();
    const { log } = capture();
    const again = await openDisk(image, undefined, true, log);
    expect(again.format).toBe('raw');
    await again.close();
  });

  test('with format raw in the configuration the guest may write anything to sector 0', async () => {
    const { img } = layout();
    const image = path.join(img, 'disk.img');
    fs.writeFileSync(image, Buffer.alloc(MiB));
    const { log } = capture();
    const disk = await openDisk(image, 'raw', false, log);
    const header = fs.readFileSync(overlay(path.join(tmp(), 'evil.qcow2'), '/etc/shadow')).subarray(0, 512);
    await disk.write(0, [header]);
    await disk.close();
    expect(fs.readFileSync(image).subarray(0, 4)).toEqual(header.subarray(0, 4));
  });
});
