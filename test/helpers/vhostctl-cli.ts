/**
 * The vhostctl binary as an operator runs it (build/src/bin/vhostctl.js, built by `npm test`), asynchronously so
 * fake drivers served by the test process keep running while it waits.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { packageRootFrom } from '../../src/util/package-root.js';

export const VHOSTCTL_BIN = path.join(packageRootFrom(import.meta.url), 'build/src/bin/vhostctl.js');

export interface VhostctlRun {
  code: number | null;
  out: string;
  err: string;
}

export function runVhostctl(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<VhostctlRun> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [VHOSTCTL_BIN, ...args], { cwd: '/', env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, out, err }));
  });
}
