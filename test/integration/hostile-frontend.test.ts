/**
 * A hostile front-end against the real daemon in a child process (docs/security.md, "Front-end: fds, messages and
 * memory regions"). For every fd-carrying request it sends the wrong kinds of fds (short and empty memfds, FIFOs
 * with a byte in them, read-only fds, full blocking FIFOs, sockets), then does what makes the daemon use the fd
 * (starts a ring, sends a frame, breaks the ring). It also attaches fds to every byte of a message, floods
 * GET_FEATURES without reading the replies, claims TiB regions and fills the daemon's fd table. After each attack:
 * the daemon lives, another vm's device answers within 100 ms, and once the hostile connection is closed the
 * daemon's fd count and RSS are back at their baseline.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadNative, nativeAvailable } from '../../src/native/binding.js';
import {
  FrontendRequest as R,
  encodeMemTable,
  encodeRequest,
  encodeSingleRegion,
  encodeVringFile,
  type RegionDescriptor,
} from '../../src/vhost-user/message.js';
import { FakeFrontend } from '../helpers/fake-frontend.js';
import { GuestRam } from '../helpers/guest-ram.js';
import { HOSTILE_FD_KINDS, HostileFds } from '../helpers/hostile-fds.js';
import { waitFor } from '../helpers/backend-fixture.js';
import { TX_QUEUE as QUEUE, negotiate, startRing, type RingFds } from '../helpers/frontend-rings.js';
import { VhostdProcess, type VhostdLogLine } from '../e2e/support/vhostd-process.js';

const native = nativeAvailable();
if (!native.ok && process.env.CI === 'true') throw new Error(`native addon missing in CI: ${native.reason}`);
if (!native.ok) console.warn(`skipping hostile front-end tests: ${native.reason}`);

const MiB = 2 ** 20;
const TiB = 2 ** 40;
const ANSWER_MS = 100;
const RSS_SLACK_KIB = 48 * 1024;

const CONF = `
switch "s" { }
vm "victim" { interface { switch "s" } }
vm "evil" {
  interface { switch "s" }
  disk "evil.img" format raw
}
`;

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The daemon, its victim front-end and what "healthy" and "baseline" mean for it. */
class Harness {
  vp!: VhostdProcess;
  victim!: FakeFrontend;
  fdBase = 0;
  rssBase = 0;

  constructor(private readonly conf: string) {}

  async start(): Promise<void> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-hostile-'));
    fs.writeFileSync(path.join(dir, 'evil.img'), Buffer.alloc(MiB));
    this.vp = new VhostdProcess(this.conf, { dir });
    await this.vp.start();
    this.victim = FakeFrontend.connect(this.vp.socket('victim'));
    await this.victim.getFeatures();
    await sleep(200);
    this.fdBase = fdCount(this.pid);
    this.rssBase = rssKiB(this.pid);
  }

  get pid(): number {
    return this.vp.proc!.pid!;
  }

  get alive(): boolean {
    return this.vp.proc!.exitCode === null && this.vp.proc!.signalCode === null;
  }

  /** One GET_FEATURES round trip to the victim's device, in ms (Infinity when it does not come). */
  async probe(timeoutMs = 2000): Promise<number> {
    const t = performance.now();
    try {
      this.victim.send(R.GET_FEATURES);
      await this.victim.nextReply(timeoutMs);
    } catch {
      return Infinity;
    }
    return performance.now() - t;
  }

  async expectHealthy(what: string): Promise<void> {
    expect(this.alive, `${what}: daemon died: ${this.vp.stderr.slice(-2000)}`).toBe(true);
    expect(await this.probe(), `${what}: the victim's device answers in time`).toBeLessThan(ANSWER_MS);
  }

  /** Connections seen on a device minus those that ended: 0 once the daemon has released it. */
  openOn(dev: string): number {
    let n = 0;
    for (const l of this.vp.logs) {
      if (l.dev !== dev) continue;
      if (l.msg === 'front-end connected') n++;
      else if (l.msg === 'front-end disconnected' || l.msg === 'front-end connection dropped') n--;
    }
    return n;
  }

  async connect(dev: 'evil.net0' | 'evil.disk0'): Promise<FakeFrontend> {
    await this.waitReleased(dev);
    return FakeFrontend.connect(dev === 'evil.net0' ? this.vp.socket('evil') : this.vp.diskSocket('evil'));
  }

  async waitReleased(dev: string): Promise<void> {
    const end = Date.now() + 5000;
    while (this.openOn(dev) > 0 && Date.now() < end) await sleep(10);
    expect(this.openOn(dev), `${dev} released its connection`).toBe(0);
  }

  /** fds and RSS back at the baseline after the hostile connection closed. */
  async expectBaseline(what: string): Promise<void> {
    const end = Date.now() + 5000;
    while (fdCount(this.pid) > this.fdBase && Date.now() < end) await sleep(20);
    expect(fdCount(this.pid), `${what}: fd count back at baseline`).toBeLessThanOrEqual(this.fdBase);
    expect(rssKiB(this.pid), `${what}: RSS back near baseline`).toBeLessThan(this.rssBase + RSS_SLACK_KIB);
  }

  /** Log lines of `dev` whose reason mentions `text`. */
  reasons(dev: string, text: string): unknown[] {
    return this.vp.logs.filter((l) => l.dev === dev && typeof l.reason === 'string' && l.reason.includes(text));
  }

  async stop(): Promise<void> {
    this.victim?.close();
    await this.vp?.stop();
    this.vp?.cleanup();
  }
}

/** Put one 76-byte TX frame (virtio-net header + broadcast Ethernet frame) on the ring and kick; or break the ring. */
function txFrame(ram: GuestRam, kickFd: number, opts: { breakRing?: boolean } = {}): void {
  const u8 = ram.mem.regions[0].u8;
  const dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const gpa = ram.regions[0].gpa;
  const buf = 0x10000;
  u8.fill(0, buf, buf + 76);
  u8.fill(0xff, buf + 12, buf + 18);
  u8.set([0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00], buf + 18);
  dv.setBigUint64(0, BigInt(gpa + buf), true);
  dv.setUint32(8, 76, true);
  dv.setUint16(12, 0, true);
  dv.setUint16(0x1000 + 4, 0, true); // avail.ring[0] = head 0
  dv.setUint16(0x1000 + 2, opts.breakRing ? 1000 : 1, true); // avail.idx (1000: more than the ring holds)
  loadNative().eventfdWrite(kickFd, 1);
}

/**
 * Run `attack` on a fresh connection and wait until the daemon drops it; returns the front-end and the reason the
 * daemon logged for the drop. An attack that fails while the connection is still up is a test failure.
 */
async function hostile(h: Harness, dev: 'evil.net0' | 'evil.disk0', what: string, attack: (fe: FakeFrontend) => Promise<void>): Promise<{ fe: FakeFrontend; reason: string }> {
  const fe = await h.connect(dev);
  const from = h.vp.logs.length;
  try {
    await attack(fe);
  } catch (err) {
    // Requests sent after the drop fail (closed connection, EPIPE); anything else is a fault of the test.
    if (!fe.closed && !/EPIPE|ECONNRESET|closed the connection/.test((err as Error).message)) throw err;
  }
  await fe.waitClosed().catch((err: Error) => {
    throw new Error(`${what}: ${err.message}`);
  });
  let ended: VhostdLogLine | undefined;
  const endOf = (): VhostdLogLine | undefined =>
    h.vp.logs.slice(from).find((l) => l.dev === dev && (l.msg === 'front-end connection dropped' || l.msg === 'front-end disconnected'));
  await waitFor(() => (ended = endOf()) !== undefined, `${what}: the end of the ${dev} connection in the log`);
  return { fe, reason: typeof ended!.reason === 'string' ? ended!.reason : `(${ended!.msg}, no reason)` };
}

describe.skipIf(!native.ok)('hostile front-end against the daemon', () => {
  const h = new Harness(CONF);
  let fds: HostileFds;
  let ram: GuestRam;
  const good = (): RingFds => {
    const n = loadNative();
    return { kick: n.eventfd(0), call: n.eventfd(0), err: n.eventfd(0) };
  };
  const closeRing = (r: RingFds): void => {
    for (const fd of [r.kick, r.call, r.err]) loadNative().close(fd);
  };

  beforeAll(async () => {
    await h.start();
    fds = new HostileFds(h.vp.dir);
    ram = new GuestRam({ regions: 1 });
  }, 30_000);

  afterAll(async () => {
    ram?.close();
    fds?.close();
    await h.stop();
  });

  /** Every kind of bad fd. */
  const eventfdKinds = (): { kind: string; fd: () => number }[] => HOSTILE_FD_KINDS.map((k) => ({ kind: k, fd: () => fds.make(k) }));
  /** Every kind of bad fd, plus a read-only memfd where a memory fd is expected. */
  const kinds = (): { kind: string; fd: () => number }[] => [...eventfdKinds(), { kind: 'read-only memfd', fd: () => fds.readOnlyMemfd(4 * MiB) }];

  /** An fd-carrying request, the attack that sends a bad fd in it and what the daemon logs when it drops us. */
  interface DropCase {
    req: string;
    /** How the bad fd is described in the test's name, and when it is refused. */
    fds: string;
    before: string;
    kinds: () => { kind: string; fd: () => number }[];
    send: (fe: FakeFrontend, badFd: number, ring: RingFds) => Promise<void>;
    reason: string;
  }

  const memRegion: RegionDescriptor = { gpa: 0x100000, size: MiB, uva: 0x7f00_0000_0000, mmapOffset: 0 };
  // The rings sit 64 KiB into the region: past the end of a 4 KiB memfd.
  const ringInRegion = { ...memRegion, gpa: memRegion.gpa + 0x10000, uva: memRegion.uva + 0x10000 };
  const vringFd = (req: 'SET_VRING_KICK' | 'SET_VRING_CALL' | 'SET_VRING_ERR', which: keyof RingFds): DropCase => ({
    req,
    fds: 'a FIFO, pipe, read-only, blocking or socket fd',
    before: 'the daemon reads or writes it',
    kinds: eventfdKinds,
    send: async (fe, badFd, ring) => {
      await negotiate(fe);
      await fe.setMemTable(ram.regions, ram.fds());
      await startRing(fe, ram.regions[0], { ...ring, [which]: badFd });
      // call: a used buffer is signalled; err: a broken ring is signalled; kick: the FIFO's byte is read.
      txFrame(ram, ring.kick, { breakRing: which === 'err' });
    },
    reason: `${req}: vring ${QUEUE} refused`,
  });

  const dropCases: DropCase[] = [
    {
      req: 'SET_MEM_TABLE',
      fds: 'a short, empty, read-only or non-memory fd',
      before: 'any ring reads it',
      kinds,
      send: async (fe, badFd, ring) => {
        await negotiate(fe);
        await fe.setMemTable([memRegion], [badFd]);
        await startRing(fe, ringInRegion, ring);
      },
      reason: 'SET_MEM_TABLE: region 0',
    },
    {
      req: 'ADD_MEM_REG',
      fds: 'a short, empty, read-only or non-memory fd',
      before: 'any ring reads it',
      kinds,
      send: async (fe, badFd, ring) => {
        await negotiate(fe);
        await fe.ack(R.ADD_MEM_REG, encodeSingleRegion(memRegion), [badFd]);
        await startRing(fe, ringInRegion, ring);
      },
      reason: 'ADD_MEM_REG: region 0',
    },
    {
      req: 'SET_LOG_BASE',
      fds: 'a short, empty, read-only or non-memory fd',
      before: 'the dirty log is written',
      kinds,
      send: async (fe, badFd, ring) => {
        await negotiate(fe, true);
        await fe.setMemTable(ram.regions, ram.fds());
        const log = new Uint8Array(16);
        new DataView(log.buffer).setBigUint64(0, BigInt(MiB), true);
        await fe.call(R.SET_LOG_BASE, log, [badFd]);
        await startRing(fe, ram.regions[0], ring, true);
        txFrame(ram, ring.kick); // the used-ring write is logged: the daemon writes the log area
      },
      reason: 'SET_LOG_BASE: area',
    },
    vringFd('SET_VRING_KICK', 'kick'),
    vringFd('SET_VRING_CALL', 'call'),
    vringFd('SET_VRING_ERR', 'err'),
  ];

  const named = dropCases.map((c) => [`${c.req} with ${c.fds} is refused before ${c.before}`, c] as const);
  test.each(named)('%s', async (_name, { req, kinds: kindsOf, send, reason }) => {
    for (const { kind, fd } of kindsOf()) {
      const ring = good();
      const { fe, reason: logged } = await hostile(h, 'evil.net0', `${req} with a ${kind}`, (fe) => send(fe, fd(), ring));
      await h.expectHealthy(`${req} with a ${kind}`);
      expect(logged, `${req} with a ${kind}: the reason the connection was dropped`).toContain(reason);
      fe.close();
      closeRing(ring);
      await h.expectBaseline(`${req} with a ${kind}`);
    }
  }, 60_000);

  test('SET_INFLIGHT_FD with a short, empty or non-memory fd gets a failure reply; the session goes on', async () => {
    for (const { kind, fd } of kinds()) {
      const fe = await h.connect('evil.disk0');
      await negotiate(fe);
      const p = new Uint8Array(24);
      const dv = new DataView(p.buffer);
      dv.setBigUint64(0, 8192n, true); // more than a 4 KiB memfd holds; one queue of 128 needs 2112 bytes
      dv.setUint16(16, 1, true);
      dv.setUint16(18, 128, true);
      const from = h.vp.logs.length;
      const ack = await fe.ack(R.SET_INFLIGHT_FD, p, [fd()]);
      await h.expectHealthy(`SET_INFLIGHT_FD with a ${kind}`);
      expect(ack, `SET_INFLIGHT_FD with a ${kind} is refused`).toBe(1n);
      expect(await fe.getFeatures()).toBeGreaterThan(0n); // still connected
      await waitFor(() => h.vp.logs.slice(from).some((l) => l.dev === 'evil.disk0' && l.msg === 'request refused'), `the refusal of SET_INFLIGHT_FD with a ${kind} in the log`);
      const refused = h.vp.logs.slice(from).filter((l) => l.dev === 'evil.disk0' && l.msg === 'request refused');
      expect(refused.map((l) => [l.req, l.reason]), `SET_INFLIGHT_FD with a ${kind}: the logged refusal`).toEqual([
        ['SET_INFLIGHT_FD', expect.stringContaining('SET_INFLIGHT_FD: area')],
      ]);
      fe.close();
      await h.expectBaseline(`SET_INFLIGHT_FD with a ${kind}`);
    }
  }, 60_000);

  test('fds attached to every byte of a message: the daemon holds at most 8 and drops the connection', async () => {
    const fe = await h.connect('evil.net0');
    const n = loadNative();
    const efd = n.eventfd(0);
    const msg = encodeRequest(R.SET_MEM_TABLE, new Uint8Array(0x1000));
    let peak = 0;
    try {
      for (let i = 0; i < 600 && !fe.closed; i++) {
        if (n.sendMsg(fe.fd, msg, i, 1, [efd, efd, efd, efd, efd, efd, efd, efd]) < 0) await sleep(5);
        if (i % 50 === 0) peak = Math.max(peak, fdCount(h.pid));
      }
    } catch {
      /* EPIPE / ECONNRESET: dropped */
    }
    await sleep(100);
    peak = Math.max(peak, fdCount(h.pid));
    n.close(efd);
    await h.expectHealthy('fds on every byte');
    expect(peak - h.fdBase, 'fds held by the daemon').toBeLessThanOrEqual(16);
    await fe.waitClosed();
    fe.close();
    expect(h.reasons('evil.net0', 'more than 8 fds attached to one message').length).toBeGreaterThan(0);
    await h.expectBaseline('fds on every byte');
  }, 30_000);

  test('a front-end that never reads its replies stops being read; the daemon does not grow', async () => {
    await h.waitReleased('evil.net0');
    const n = loadNative();
    const fd = n.connectUnix(h.vp.socket('evil'));
    const one = encodeRequest(R.GET_FEATURES, new Uint8Array(0));
    const chunk = new Uint8Array(one.length * 5000);
    for (let i = 0; i < 5000; i++) chunk.set(one, i * one.length);
    let sent = 0;
    let stalls = 0;
    let off = 0;
    while (sent < 16 * MiB && stalls < 10) {
      const k = n.sendMsg(fd, chunk, off, chunk.length - off, []);
      if (k < 0) {
        stalls++;
        await sleep(20);
        continue;
      }
      stalls = 0;
      sent += k;
      off = (off + k) % chunk.length;
    }
    await h.expectHealthy('reply flood');
    expect(rssKiB(h.pid), 'RSS during the flood').toBeLessThan(h.rssBase + RSS_SLACK_KIB);
    expect(sent, 'request bytes the daemon took before it stopped reading').toBeLessThan(4 * MiB);
    expect(h.vp.logs.some((l) => l.dev === 'evil.net0' && l.msg.includes('does not read its replies'))).toBe(true);
    n.close(fd);
    await h.waitReleased('evil.net0');
    await h.expectBaseline('reply flood');
  }, 120_000);

  test('a 1 TiB region on a 4 KiB memfd and a 2 TiB region over the memory limit are refused at once', async () => {
    const n = loadNative();
    const tiny = n.memfdCreate('tiny', 4096);
    const sparse = n.memfdCreate('sparse-2t', 2 * TiB); // size only: no memory behind it
    for (const [what, fd, size] of [['1 TiB on a 4 KiB memfd', tiny, TiB], ['2 TiB over max guest memory', sparse, 2 * TiB]] as const) {
      const fe = await h.connect('evil.net0');
      await negotiate(fe);
      fe.send(R.SET_MEM_TABLE, encodeMemTable([{ gpa: 0, size, uva: 0x7f00_0000_0000, mmapOffset: 0 }]), { fds: [fd], needReply: true });
      const ms = await h.probe(); // sent right behind the hostile request
      expect(ms, `${what}: the victim's device answers while the region is handled`).toBeLessThan(ANSWER_MS);
      await fe.waitClosed();
      fe.close();
      await h.expectHealthy(what);
      await h.expectBaseline(what);
    }
    n.close(tiny);
    n.close(sparse);
    // The daemon logs the drop after closing the socket: its line may arrive after the close was seen.
    await waitFor(() => h.reasons('evil.net0', 'but the fd has 0x1000 bytes').length > 0, 'the size refusal logged');
    await waitFor(() => h.reasons('evil.net0', 'exceeds the limit').length > 0, 'the memory limit refusal logged');
  }, 60_000);
});

describe.skipIf(!native.ok)('hostile front-end fills the fd table', () => {
  const CONF_FD = `
switch "s" { }
vm "victim" { interface { switch "s" } }
vm "evil" { disk "evil.img" format raw }
`;
  let h: Harness;

  afterAll(async () => {
    await h?.stop();
  });

  test('accept4 failing with EMFILE pauses accepting; the connection is served once fds are free', async () => {
    // Once started (loading the modules opens files too), the daemon's fd table is cut to its use plus 24.
    h = new Harness(CONF_FD);
    await h.start();
    const limit = h.fdBase + 24;
    execFileSync('prlimit', ['--pid', String(h.pid), `--nofile=${limit}:${limit}`]);
    const n = loadNative();
    const evil = await h.connect('evil.disk0');
    await negotiate(evil);
    // The victim's front-end goes away (QEMU restarts); it comes back once the table is full.
    h.victim.close();
    await h.waitReleased('victim.net0');
    const held: number[] = [];
    const room = limit - fdCount(h.pid);
    expect(room).toBeGreaterThan(0);
    expect(room).toBeLessThanOrEqual(32);
    for (let i = 0; i < room; i++) {
      const fd = n.eventfd(0);
      held.push(fd);
      const q = i >> 1;
      await evil.ack(i & 1 ? R.SET_VRING_ERR : R.SET_VRING_CALL, encodeVringFile(q, false), [fd]);
    }
    expect(fdCount(h.pid), 'the daemon fd table is full').toBe(limit);
    // The second vm's front-end reconnects now: accept4 fails with EMFILE.
    const late = FakeFrontend.connect(h.vp.socket('victim'));
    late.send(R.GET_FEATURES);
    await waitFor(() => h.vp.logs.some((l) => l.msg.includes('accepting paused')) || !h.alive, "the daemon's 'accepting paused' log line");
    expect(h.alive, `daemon died: ${h.vp.stderr.slice(-2000)}`).toBe(true);
    expect(h.vp.logs.some((l) => l.msg.includes('accepting paused'))).toBe(true);
    evil.close();
    for (const fd of held) n.close(fd);
    const r = await late.nextReply(5000); // accepted on a retry once the hostile session let its fds go
    expect(r.request).toBe(R.GET_FEATURES);
    h.victim = late;
    await h.expectHealthy('EMFILE on accept');
  }, 90_000);
});
