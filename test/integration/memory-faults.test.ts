/**
 * A front-end keeps its own fd of every region it sends: it can truncate the file after vhostd checked its size.
 * The next access to that memory raised SIGBUS and killed the daemon, and every tenant with it. Now the addon maps
 * a private zero page over the faulting page (native/sigbus.c), counts the fault on the mapping, and the server
 * drops the connection that owns it (src/vhost-user/fault-watch.ts).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import type { RegionDescriptor } from '../../src/vhost-user/message.js';
import { closeAll } from '../../src/native/fd.js';
import { FakeFrontend } from '../helpers/fake-frontend.js';
import { GuestRam } from '../helpers/guest-ram.js';
import { negotiate, startRing } from '../helpers/frontend-rings.js';
import { VhostdProcess } from '../e2e/support/vhostd-process.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`the native addon is required in CI: ${native.reason}`);
/** Mounting the small full tmpfs needs root (CI runs as root). */
const root = process.getuid?.() === 0;
if (!root && process.env.CI === 'true') throw new Error('test/integration/memory-faults.test.ts mounts a tmpfs: run it as root in CI');
if (!root) console.warn('skipping the full-tmpfs SIGBUS test: not root');

describe.skipIf(!native.ok)('SIGBUS on shared guest memory', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  test('a truncated mapping reads zeros, the fault is counted on that mapping, and the process lives', () => {
    const n = loadNative();
    const fd = n.memfdCreate('shrink-me', 64 * 1024);
    cleanups.push(() => n.close(fd));
    const ab = n.mmapShared(fd, 64 * 1024, 0, true);
    const other = n.mmapShared(fd, 4096, 0, true);
    cleanups.push(() => {
      n.munmap(ab);
      n.munmap(other);
    });
    const u8 = new Uint8Array(ab);
    u8[5 * 4096] = 7;
    const before = n.guestFaults();
    fs.ftruncateSync(fd, 4096); // pages from 4096 on are gone: touching them raises SIGBUS
    expect(u8[5 * 4096]).toBe(0);
    u8[9 * 4096] = 1; // a store faults too, and then lands in the private page
    expect(u8[9 * 4096]).toBe(1);
    expect(n.mappingFaults(ab)).toBe(2);
    expect(n.mappingFaults(other)).toBe(0);
    expect(n.guestFaults() - before).toBe(2);
    expect(u8[0]).toBe(0); // the first page still shares the file
    new Uint8Array(other)[0] = 9;
    expect(u8[0]).toBe(9);
  });

  /** vhostd with a victim and an evil vm; the evil front-end maps `regions` and starts its TX ring in them. */
  async function evilWithRing(regions: RegionDescriptor[], fds: number[]): Promise<{ vp: VhostdProcess; fe: FakeFrontend; kick: number; offered: bigint }> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-sigbus-'));
    const vp = new VhostdProcess('switch "s" { }\nvm "victim" { interface { switch "s" } }\nvm "evil" { interface { switch "s" } }\n', { dir });
    cleanups.push(async () => {
      await vp.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    await vp.start();
    const n = loadNative();
    const ring = { kick: n.eventfd(0), call: n.eventfd(0), err: n.eventfd(0) };
    cleanups.push(() => closeAll(n, Object.values(ring)));
    const fe = FakeFrontend.connect(vp.socket('evil'));
    cleanups.push(() => fe.close());
    const offered = await negotiate(fe);
    await fe.setMemTable(regions, fds);
    await startRing(fe, regions[0], ring);
    return { vp, fe, kick: ring.kick, offered };
  }

  /** The evil connection was dropped for the SIGBUS on its region; the daemon lives and the victim's device answers. */
  async function expectDroppedAlone(vp: VhostdProcess, fe: FakeFrontend, offered: bigint): Promise<void> {
    const line = await vp.waitLog((l) => l.msg === 'front-end connection dropped' && /SIGBUS on the memory region/.test(String(l.reason)), 10_000, 'the evil connection dropped');
    expect(line.vm ?? line.dev).toBeTruthy();
    await fe.waitClosed();
    expect(vp.proc!.signalCode).toBe(null);
    expect(vp.proc!.exitCode).toBe(null);
    const victim = FakeFrontend.connect(vp.socket('victim'));
    cleanups.push(() => victim.close());
    expect(await victim.getFeatures()).toBe(offered);
  }

  test('a front-end that truncates its memory after SET_MEM_TABLE is dropped; the daemon and the other vm live', async () => {
    const ram = new GuestRam({ regions: 1 });
    cleanups.push(() => ram.close());
    const { vp, fe, kick, offered } = await evilWithRing(ram.regions, ram.fds());
    // Every check passed; now the front-end shrinks the memfd it still holds, and kicks.
    fs.ftruncateSync(ram.fd, 0);
    loadNative().eventfdWrite(kick, 1);
    await expectDroppedAlone(vp, fe, offered);
  });

  test.skipIf(!root)('a sparse region on a full tmpfs (a hole that cannot be filled) drops that front-end, not the daemon', async () => {
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt]);
    cleanups.push(() => {
      execFileSync('umount', ['-l', mnt]);
      fs.rmSync(mnt, { recursive: true, force: true });
    });
    const MiB = 1 << 20;
    const fd = fs.openSync(path.join(mnt, 'ram'), 'w+');
    cleanups.push(() => fs.closeSync(fd));
    fs.ftruncateSync(fd, MiB); // sparse: it passes the size check, but its pages are not allocated
    try {
      fs.writeFileSync(path.join(mnt, 'fill'), Buffer.alloc(MiB)); // then the file system is filled
    } catch {
      /* ENOSPC: full, as intended */
    }
    // Starting the ring already writes the used ring into a hole.
    const { vp, fe, kick, offered } = await evilWithRing([{ gpa: 0x100000, size: MiB, uva: 0x7f00_0000_0000, mmapOffset: 0 }], [fd]);
    loadNative().eventfdWrite(kick, 1);
    await expectDroppedAlone(vp, fe, offered);
  });
});
