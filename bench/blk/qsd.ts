/**
 * qemu-storage-daemon as the reference disk backend: one process with a vhost-user-blk export per
 * image, optionally on one core (started under taskset, so the pid is qsd's own after exec). Ready when every
 * export's socket exists; stop() fails if it died early or exits non-zero.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';

export interface QsdExport {
  image: string;
  format: string;
  socket: string;
}

export interface Qsd {
  readonly pid: number;
  /** SIGTERM and wait; throws if it had died or exits non-zero. */
  stop(): Promise<void>;
}

/** qsd's file driver I/O: `threads` (its default, a thread pool) or `io_uring` (Linux io_uring). */
export type QsdAio = 'threads' | 'io_uring';

export async function startQsd(exports: QsdExport[], opts: { core?: number; aio?: QsdAio } = {}): Promise<Qsd> {
  const args: string[] = [];
  exports.forEach((e, i) => {
    fs.rmSync(e.socket, { force: true });
    args.push('--blockdev', `driver=file,node-name=file${i},filename=${e.image},aio=${opts.aio ?? 'threads'}`);
    args.push('--blockdev', `driver=${e.format},node-name=fmt${i},file=file${i}`);
    args.push('--export', `type=vhost-user-blk,id=exp${i},addr.type=unix,addr.path=${e.socket},node-name=fmt${i},writable=on`);
  });
  const proc: ChildProcess =
    opts.core === undefined
      ? spawn('qemu-storage-daemon', args, { stdio: ['ignore', 'ignore', 'pipe'] })
      : spawn('taskset', ['-c', String(opts.core), 'qemu-storage-daemon', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const end = Date.now() + 20_000;
  while (!exports.every((e) => fs.existsSync(e.socket))) {
    if (proc.exitCode !== null) throw new Error(`qemu-storage-daemon exited (${proc.exitCode}): ${stderr}`);
    if (Date.now() > end) {
      proc.kill('SIGKILL');
      throw new Error(`qemu-storage-daemon did not listen: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    pid: proc.pid!,
    async stop() {
      if (proc.exitCode !== null) throw new Error(`qemu-storage-daemon died (${proc.exitCode}): ${stderr}`);
      const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      if (code !== 0) throw new Error(`qemu-storage-daemon exited with ${code}: ${stderr}`);
    },
  };
}
