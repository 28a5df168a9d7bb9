/**
 * The switch adds no allocation per frame. Measured, not assumed: a million unicast and flood frames
 * through Switch.forward (ports that only count) must not grow the heap or trigger collections in proportion.
 * Guards two regressions found by bench/net/switch-forward.bench.ts: 48-bit MAC keys boxed on every Map call, and
 * per-port counters left in V8's dictionary mode.
 */
import v8 from 'node:v8';
import { describe, expect, test } from 'vitest';
import { SgList } from '../../../src/memory/sg-list.js';
import { Frame } from '../../../src/net/frame.js';
import { NO_PORT, type Port } from '../../../src/net/port.js';
import { Switch } from '../../../src/net/switch.js';

class CountingPort implements Port {
  id = NO_PORT;
  mtu = 1500;
  delivered = 0;
  constructor(readonly name: string) {}
  deliver(): boolean {
    this.delivered++;
    return true;
  }
  flush(): void {}
}

function frameOf(dst: number[], src: number[]): Frame {
  const bytes = new Uint8Array(128);
  bytes.set([...dst, ...src, 0x08, 0x00]);
  const sg = new SgList(1);
  sg.push(bytes, 0, 128);
  const f = new Frame(sg);
  f.length = 100;
  return f;
}

/** Bytes allocated per call of `fn` over n calls (heap growth plus what collections freed). */
function bytesPerOp(n: number, fn: () => void): number {
  for (let i = 0; i < 200_000; i++) fn(); // warm up: optimized code, settled hidden classes
  const prof = new v8.GCProfiler();
  const before = process.memoryUsage().heapUsed;
  prof.start();
  for (let i = 0; i < n; i++) fn();
  const stats = prof.stop();
  const after = process.memoryUsage().heapUsed;
  let freed = 0;
  for (const s of stats.statistics) freed += s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize;
  return (after - before + freed) / n;
}

describe('switch hot path allocation', () => {
  const A = [0xfe, 0xe1, 0xba, 0x00, 0x00, 0x01];
  const B = [0xfe, 0xe1, 0xba, 0x00, 0x00, 0x02];
  const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

  test('a million known-unicast and flood frames allocate less than one byte per frame', () => {
    const sw = new Switch('alloc');
    const pa = new CountingPort('a');
    const pb = new CountingPort('b');
    const pc = new CountingPort('c');
    sw.addPort(pa);
    sw.addPort(pb);
    sw.addPort(pc);
    sw.forward(pb, frameOf(BCAST, B)); // learn B on b
    sw.endBatch();
    const unicast = frameOf(B, A);
    const flood = frameOf(BCAST, A);
    const perUnicast = bytesPerOp(1_000_000, () => {
      sw.forward(pa, unicast);
      sw.endBatch();
    });
    const perFlood = bytesPerOp(1_000_000, () => {
      sw.forward(pa, flood);
      sw.endBatch();
    });
    expect(pb.delivered).toBeGreaterThan(2_000_000); // the frames really went through
    expect(perUnicast).toBeLessThan(1);
    expect(perFlood).toBeLessThan(1);
  });

  test('locked ports (static entries, learn left on) and a VLAN-aware switch allocate less than one byte per frame', () => {
    // Locked with learn on (the daemon's `locked lladdr`): before the flow cache every frame took the table's slow
    // learn path with the 48-bit key boxed (LEARN_STATIC).
    const sw = new Switch('alloc-locked');
    const pa = new CountingPort('a');
    const pb = new CountingPort('b');
    sw.addPort(pa);
    sw.addPort(pb);
    sw.addStatic(0xfee1ba000001, pa);
    sw.addStatic(0xfee1ba000002, pb);
    sw.configurePort(pa, { locked: true });
    sw.configurePort(pb, { locked: true });
    const unicast = frameOf(B, A);
    const perLocked = bytesPerOp(1_000_000, () => {
      sw.forward(pa, unicast);
      sw.endBatch();
    });
    // The same with the flow cache defeated (every frame a miss): the table's own path boxes no key either.
    const perLockedMiss = bytesPerOp(1_000_000, () => {
      sw.macTable.bump();
      sw.forward(pa, unicast);
      sw.endBatch();
    });
    expect(pb.delivered).toBeGreaterThan(2_000_000);
    expect(sw.counters(pa.id)?.dropLocked).toBe(0);
    expect(perLocked).toBeLessThan(1);
    expect(perLockedMiss).toBeLessThan(1);

    const vw = new Switch('alloc-vlan');
    const va = new CountingPort('a');
    const vb = new CountingPort('b');
    vw.addPort(va);
    vw.addPort(vb);
    for (const p of [va, vb]) vw.configurePort(p, { untagged: 1, tagged: [10] });
    vw.forward(vb, frameOf(BCAST, B));
    vw.endBatch();
    const tagged = frameOf(B, A);
    tagged.sg.bufs[0].set([0x81, 0x00, 0x00, 0x0a, 0x08, 0x00], 12);
    const perVlan = bytesPerOp(1_000_000, () => {
      vw.forward(va, tagged);
      vw.endBatch();
    });
    expect(vb.delivered).toBeGreaterThan(1_000_000);
    expect(perVlan).toBeLessThan(1);
  });
});
