// Live migration between two local QEMU processes, for e2e tests.
//
// The source guest is started with a QMP monitor (qmpArgs()); the destination is the same guest
// (same kernel, initrd, RAM size, MACs, device order) with its own QMP monitor and `-incoming
// unix:PATH`, so it waits for the migration stream on a unix socket. migrate() drives the source
// through QMP and polls `query-migrate` until the migration completes or fails.
//
// After a completed migration the guest runs in the destination QEMU: its serial console (and so
// every marker line the guest prints) continues on the destination's stdout, while the source
// QEMU sits in the `postmigrate` run state until it is told to quit.
//
// Everything else is passed through startGuest()'s `extraArgs`.
//
// Guest RAM of a migrated guest: MIGRATION_MEM_KIB, deliberately not a multiple of 256 KiB. QEMU 7.2 under TCG
// loses guest stores during a migration that needs more than one pass over RAM: when a RAM block's length is a
// multiple of 64 pages, the dirty-bitmap sync takes a word-at-a-time fast path that clears the migration dirty bits
// without resetting the vCPU's TLB, so later stores through the still-writable TLB entries are never marked dirty and
// never sent (fixed upstream in QEMU 9.0, "physmem: Fix migration dirty bitmap coherency with TCG memory access").
// The destination then runs on stale kernel memory: hrtimer trees (a NULL dereference in rb_erase from the timer
// interrupt), preempt counts, stacks. It showed when a loaded machine made the migration take an extra pass
// (dirty-sync-count 4 instead of 3), with any CPU model and either back-end. With a length that is not a multiple of
// 64 pages QEMU syncs page by page, and that path resets the TLB.
import net from 'node:net';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGuest, type Guest, type GuestOptions } from './guest.js';

// ---------------------------------------------------------------------------------------------
// QMP client (one command at a time; events are recorded, not dispatched)

export interface QmpEvent {
  event: string;
  data?: unknown;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${qmpClass}: ${desc}`);
  }
}

export class QmpClient {
  readonly events: QmpEvent[] = [];
  private buf = '';
  private pending: { resolve: (v: unknown) => void; reject: (e: Error) => void; cmd: string } | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private greeting: ((v: unknown) => void) | null = null;

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (s: string) => this.onData(s));
    const fail = (why: string) => {
      this.closed = true;
      const p = this.pending;
      this.pending = null;
      p?.reject(new Error(`QMP connection ${why} during ${p.cmd}`));
    };
    sock.on('close', () => fail('closed'));
    sock.on('error', (e) => fail(`error (${e.message})`));
  }

  /** Connect to a QMP unix socket (retrying until QEMU has created it) and leave capabilities negotiation mode. */
  static async connect(sockPath: string, timeoutMs = 15_000): Promise<QmpClient> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const s = await new Promise<net.Socket>((resolve, reject) => {
          const c = net.createConnection(sockPath);
          c.once('connect', () => {
            c.removeAllListeners('error');
            resolve(c);
          });
          c.once('error', reject);
        });
        const q = new QmpClient(s);
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`no QMP greeting on ${sockPath}`)), 10_000);
          q.greeting = () => {
            clearTimeout(t);
            resolve();
          };
          s.once('close', () => {
            clearTimeout(t);
            reject(new Error(`QMP ${sockPath} closed before its greeting`));
          });
        });
        await q.execute('qmp_capabilities');
        return q;
      } catch (e) {
        if (Date.now() > end) throw new Error(`QMP connect ${sockPath}: ${(e as Error).message}`);
        await sleep(100);
      }
    }
  }

  private onData(s: string): void {
    this.buf += s;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greeting?.(msg);
        this.greeting = null;
      } else if ('event' in msg) {
        this.events.push(msg as unknown as QmpEvent);
      } else if ('return' in msg || 'error' in msg) {
        const p = this.pending;
        this.pending = null;
        if (!p) continue;
        if ('error' in msg) {
          const err = msg.error as { class: string; desc: string };
          p.reject(new QmpError(p.cmd, err.class, err.desc));
        } else p.resolve(msg.return);
      }
    }
  }

  /** Run one QMP command; rejects with QmpError on an `error` reply. Commands are serialized. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    const run = () =>
      new Promise<T>((resolve, reject) => {
        if (this.closed) return reject(new Error(`QMP connection closed (${command})`));
        this.pending = { resolve: resolve as (v: unknown) => void, reject, cmd: command };
        this.sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
      });
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  close(): void {
    this.closed = true;
    this.sock.destroy();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Source / destination guests

/** A tmp dir for the QMP and migration sockets of one test. */
export function migrationDir(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'vhostd-mig-'));
}

/** RAM of a migrated guest: 256 MiB + 8 KiB (QEMU rounds -m to 8 KiB), so never a multiple of 256 KiB (see above). */
export const MIGRATION_MEM_KIB = 256 * 1024 + 8;

/** QEMU args for a QMP server on a unix socket that never blocks QEMU's start. */
export function qmpArgs(sockPath: string): string[] {
  return ['-qmp', `unix:${sockPath},server=on,wait=off`];
}

export interface MigratableGuest {
  guest: Guest;
  qmp: QmpClient;
  qmpPath: string;
}

/** Start a guest with a QMP monitor and connect to it. */
export async function startGuestWithQmp(o: GuestOptions, qmpPath: string): Promise<MigratableGuest> {
  const kib = o.memKiB ?? (o.memMiB ?? 256) * 1024;
  if (kib % 256 === 0) throw new Error(`a migrated TCG guest needs RAM that is not a multiple of 256 KiB (got ${kib} KiB): use MIGRATION_MEM_KIB`);
  const guest = startGuest({ ...o, extraArgs: [...(o.extraArgs ?? []), ...qmpArgs(qmpPath)] });
  try {
    const qmp = await Promise.race([
      QmpClient.connect(qmpPath),
      guest.exited.then((x) => {
        throw new Error(`QEMU ${o.name} exited (${JSON.stringify(x)}) before QMP was up:\n${guest.output().slice(-2000)}`);
      }),
    ]);
    return { guest, qmp, qmpPath };
  } catch (e) {
    await guest.kill();
    throw e;
  }
}

/**
 * Start the destination of a migration: `o` must describe the same machine as the source (same
 * initrd, memMiB, netdev MACs/options, device order), usually with netdev sockets of its own.
 * QEMU listens for the migration stream on `incomingPath` and stays paused (`inmigrate`) until it
 * arrives.
 */
export async function startDestination(o: GuestOptions, qmpPath: string, incomingPath: string): Promise<MigratableGuest> {
  const d = await startGuestWithQmp({ ...o, extraArgs: [...(o.extraArgs ?? []), '-incoming', `unix:${incomingPath}`] }, qmpPath);
  // -incoming unix: binds before the monitor is served, but be safe.
  const end = Date.now() + 10_000;
  while (!existsSync(incomingPath)) {
    if (Date.now() > end) throw new Error(`destination ${o.name} never listened on ${incomingPath}`);
    await sleep(50);
  }
  return d;
}

export interface MigrationInfo {
  status: string;
  'error-desc'?: string;
  'total-time'?: number;
  downtime?: number;
  ram?: { transferred: number; total: number; 'dirty-sync-count': number; 'dirty-pages-rate'?: number; remaining: number };
  [k: string]: unknown;
}

export interface MigrateResult {
  /** 'completed', 'failed', 'cancelled', or 'rejected' when the migrate command itself failed (e.g. a blocker). */
  status: string;
  /** The QMP error of the migrate command, or query-migrate's error-desc. */
  error?: string;
  info?: MigrationInfo;
  ms: number;
}

export interface MigrateOptions {
  timeoutMs?: number;
  /** Bytes/s; QEMU 7.2 defaults to 32 MiB/s, far below what a local unix socket can carry. */
  maxBandwidth?: number;
  /** Allowed downtime, ms (QEMU default 300). */
  downtimeLimitMs?: number;
}

/**
 * Migrate `src` to the destination listening on `incomingPath`. Never throws for a migration that
 * QEMU refuses or fails: the result says so, with QEMU's error text.
 */
export async function migrate(src: QmpClient, incomingPath: string, o: MigrateOptions = {}): Promise<MigrateResult> {
  const t0 = Date.now();
  await src.execute('migrate-set-parameters', {
    'max-bandwidth': o.maxBandwidth ?? 4 * 1024 * 1024 * 1024,
    'downtime-limit': o.downtimeLimitMs ?? 300,
  });
  try {
    await src.execute('migrate', { uri: `unix:${incomingPath}` });
  } catch (e) {
    if (e instanceof QmpError) return { status: 'rejected', error: e.desc, ms: Date.now() - t0 };
    throw e;
  }
  const end = t0 + (o.timeoutMs ?? 120_000);
  for (;;) {
    const info = await src.execute<MigrationInfo>('query-migrate');
    if (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled') {
      return { status: info.status, error: info['error-desc'], info, ms: Date.now() - t0 };
    }
    if (Date.now() > end) {
      await src.execute('migrate_cancel').catch(() => undefined);
      return { status: 'timeout', error: `still ${info.status} after ${Date.now() - t0} ms`, info, ms: Date.now() - t0 };
    }
    await sleep(100);
  }
}

export interface RunState {
  running: boolean;
  status: string;
}

export const queryStatus = (q: QmpClient) => q.execute<RunState>('query-status');

/** Wait until the QMP run state satisfies pred (e.g. the destination reaching `running`). */
export async function waitStatus(q: QmpClient, pred: (s: RunState) => boolean, timeoutMs: number, what: string): Promise<RunState> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await queryStatus(q);
    if (pred(s)) return s;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last status ${JSON.stringify(s)}`);
    await sleep(100);
  }
}

/** Ask QEMU to quit over QMP (falls back to the guest's kill()). */
export async function quit(m: MigratableGuest): Promise<void> {
  const exited = m.guest.exited;
  await m.qmp.execute('quit').catch(() => undefined);
  m.qmp.close();
  const t = setTimeout(() => void m.guest.kill(), 5_000);
  await exited;
  clearTimeout(t);
}

export async function dispose(m: MigratableGuest | null | undefined): Promise<void> {
  if (!m) return;
  m.qmp.close();
  await m.guest.kill();
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Guest console: the ticker's counter

/** All `VHOSTD-TICK ok|fail N` lines in an output, in order. */
export function ticks(output: string): { ok: boolean; n: number }[] {
  const res: { ok: boolean; n: number }[] = [];
  for (const m of output.matchAll(/^.*VHOSTD-TICK (ok|fail) (\d+)$/gm)) res.push({ ok: m[1] === 'ok', n: Number(m[2]) });
  return res;
}
