/**
 * Run one exported function of a built module as another user (root only). The module is loaded while still root,
 * then the child drops to uid/gid and calls the function: the project directory need not be readable by that user
 * (a clone in a `mktemp -d` directory is mode 0700), only what the function itself touches is checked as that user.
 */
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';

export type AsUserResult = { ok: true; value: unknown } | { ok: false; error: string };

const SCRIPT = `
const [url, fn, uid, gid, args] = process.argv.slice(1);
const m = await import(url);
process.setgroups([Number(gid)]);
process.setgid(Number(gid));
process.setuid(Number(uid));
try {
  const value = await m[fn](...JSON.parse(args));
  process.stdout.write(JSON.stringify({ ok: true, value }));
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, error: e instanceof Error ? e.message : String(e) }));
}
`;

export function callAsUser(modulePath: string, fn: string, args: unknown[], uid: number, gid: number): Promise<AsUserResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', SCRIPT, pathToFileURL(modulePath).href, fn, String(uid), String(gid), JSON.stringify(args)], {
      cwd: '/',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      try {
        resolve(JSON.parse(out) as AsUserResult);
      } catch {
        reject(new Error(`callAsUser ${fn}: exit ${code}, no result: ${err || out}`));
      }
    });
  });
}
