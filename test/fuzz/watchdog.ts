/**
 * Hang detector for engine.ts, in a worker thread: when the same input has been running for longer than hangMs,
 * save it as a hang finding and end the process (the fuzzing thread is stuck in a synchronous loop and cannot).
 */
import { mkdirSync, writeFileSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { workerData } from 'node:worker_threads';

const { sab, hangMs, findingsDir, target } = workerData as { sab: SharedArrayBuffer; hangMs: number; findingsDir?: string; target: string };
const state = new Int32Array(sab, 0, 4);
const bytes = new Uint8Array(sab, 16);
const tick = Math.max(10, Math.floor(hangMs / 4));
const sleeper = new Int32Array(new SharedArrayBuffer(4));
let lastSeq = -1;
let since = 0;
for (;;) {
  Atomics.wait(sleeper, 0, 0, tick);
  const seq = Atomics.load(state, 0);
  if ((seq & 1) === 0 || seq !== lastSeq) {
    lastSeq = seq;
    since = 0;
    continue;
  }
  since += tick;
  if (since < hangMs) continue;
  const input = bytes.slice(0, Math.min(Atomics.load(state, 1), bytes.length));
  let where = '';
  if (findingsDir) {
    mkdirSync(findingsDir, { recursive: true });
    where = join(findingsDir, `hang-${target}-${createHash('sha1').update(input).digest('hex')}`);
    writeFileSync(where, input);
  }
  writeSync(2, `fuzz: FINDING hang: ${target} ran one input for more than ${hangMs} ms${where ? ` (saved as ${where})` : ''}\n`);
  process.kill(process.pid, 'SIGKILL');
}
