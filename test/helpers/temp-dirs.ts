/**
 * Per-test temporary directories for vitest files (kept apart from qcow2-tools.ts, which child processes
 * import outside vitest): call once at the top of a test file; the returned function makes a directory that is
 * removed after the current test.
 */
import { afterEach } from 'vitest';
import { tempDir } from './qcow2-tools.js';

export function tempDirsPerTest(prefix?: string): () => string {
  let cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanups) c();
    cleanups = [];
  });
  return () => {
    const t = tempDir(prefix);
    cleanups.push(t.cleanup);
    return t.dir;
  };
}
