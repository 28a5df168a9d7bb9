/**
 * qemu-img as the oracle for qcow2 tests (docs/qcow2.md): availability check (skip with a printed reason, or fail
 * under CI=true), thin wrappers, a seeded PRNG and temp dirs.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function probe(): boolean {
  const r = spawnSync('qemu-img', ['--version'], { encoding: 'utf8' });
  return r.status === 0;
}

export const hasQemuImg = probe();
if (!hasQemuImg) {
  if (process.env.CI === 'true') throw new Error('qemu-img is required in CI (install qemu-utils)');
  console.warn('qcow2 tests skipped: qemu-img not found (install qemu-utils)');
}

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function qemuIo(file: string, fmt: string, ...cmds: string[]): void {
  const args = ['-f', fmt];
  for (const c of cmds) args.push('-c', c);
  execFileSync('qemu-io', [...args, file], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** qemu-img check: exit status and JSON report. 0 clean, 2 corrupt, 3 leaks. */
export function qemuCheck(file: string): { status: number; report: { corruptions?: number; leaks?: number }; text: string } {
  const r = spawnSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8' });
  let report = {};
  try {
    report = JSON.parse(r.stdout);
  } catch {
    /* keep empty */
  }
  return { status: r.status ?? -1, report, text: r.stdout + r.stderr };
}

export function qemuCompare(a: string, b: string, fmtA = 'qcow2', fmtB = 'raw'): { status: number; text: string } {
  const r = spawnSync('qemu-img', ['compare', '-f', fmtA, '-F', fmtB, a, b], { encoding: 'utf8' });
  return { status: r.status ?? -1, text: r.stdout + r.stderr };
}

export function qemuInfo(file: string): Record<string, unknown> {
  return JSON.parse(qemuImg('info', '--output=json', file)) as Record<string, unknown>;
}

export function tempDir(prefix = 'vhostd-qcow2-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** mulberry32: small seeded PRNG, so a failing run can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
