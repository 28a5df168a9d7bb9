/**
 * Where the virtio-blk request path allocates: the BlkSlotRig (raw disk, io_uring, driver-side rings) under the
 * inspector's sampling heap profiler, allocations by function (self bytes per request), plus CPU µs per request.
 * Usage: npx vite-node bench/blk/alloc-profile.ts [depth] [read|write] [requests]; ALLOC_PROFILE=0 measures the CPU
 * time alone (the sampling profiler's own cost grows with what is allocated).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Session } from 'node:inspector/promises';
import { RawDisk } from '../../src/blk/raw-disk.js';
import { BlkSlotRig } from '../../test/helpers/blk-slot-rig.js';

interface Node {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: Node[];
}

const depth = Number(process.argv[2] ?? 1);
const write = (process.argv[3] ?? 'read') === 'write';
const n = Number(process.argv[4] ?? 100000);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blk-alloc-'));
const file = path.join(dir, 'disk.raw');
fs.writeFileSync(file, Buffer.alloc(64 << 20, 0x5a));
const disk = await RawDisk.open(file, { readOnly: false });
const rig = new BlkSlotRig(disk, depth);
await rig.run(20000, write);
const s = new Session();
s.connect();
const sample = process.env.ALLOC_PROFILE !== '0';
if (sample) await s.post('HeapProfiler.startSampling', { samplingInterval: 256, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
const cpu0 = process.cpuUsage();
await rig.run(n, write);
const cpu = process.cpuUsage(cpu0);
const { profile } = sample ? await s.post('HeapProfiler.stopSampling') : { profile: { head: { callFrame: { functionName: '', url: '', lineNumber: 0 }, selfSize: 0, children: [] } } };
const by = new Map<string, number>();
const walk = (node: Node): void => {
  const f = node.callFrame;
  const k = `${f.functionName || '(anon)'} ${path.basename(f.url)}:${f.lineNumber + 1}`;
  by.set(k, (by.get(k) ?? 0) + node.selfSize);
  for (const c of node.children) walk(c);
};
walk(profile.head as unknown as Node);
let total = 0;
for (const v of by.values()) total += v;
console.log(`QD${depth} ${write ? 'write' : 'read'}: ${(total / n).toFixed(1)} B/request sampled, ${((cpu.user + cpu.system) / n).toFixed(2)} µs CPU/request`);
for (const [k, v] of [...by].sort((a, b) => b[1] - a[1]).slice(0, 15)) if (v > 0) console.log(`  ${(v / n).toFixed(1).padStart(8)} B  ${k}`);

rig.close();
await disk.close();
fs.rmSync(dir, { recursive: true, force: true });
