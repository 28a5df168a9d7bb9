/**
 * `npm run bench`: runs each benchmark in a fresh node process (house style §3.9) and lets it print its table;
 * results are appended to bench/results/results.jsonl. `--full` is reserved for the long suite (issue 5).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateDoc } from './doc.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const benches = ['virtqueue/fence.bench.js', 'net/mac-table.bench.js', 'net/switch-forward.bench.js', 'net/testpmd-loop.bench.js', 'net/guest-tcp.bench.js', 'blk/blk-io.bench.js'];
const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));
let failed = 0;
for (const b of benches) {
  if (only.length && !only.some((o) => b.includes(o))) continue;
  process.stderr.write(`\n== ${b}\n`);
  const r = spawnSync(process.execPath, [path.join(here, b)], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    process.stderr.write(`${b} failed (exit ${r.status})\n`);
  }
}
if (!failed) {
  try {
    for (const f of generateDoc()) process.stderr.write(`wrote ${path.relative(process.cwd(), f)}\n`);
  } catch (e) {
    process.stderr.write(`docs/benchmarks.md not regenerated: ${(e as Error).message}\n`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
