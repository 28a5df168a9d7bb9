/**
 * Switch.forward + endBatch (src/net/switch.ts) with 2, 8 and 16 fake ports, unicast (every MAC learned first) and
 * flood (broadcast), 64- and 1500-byte frames, batches of 32 frames from one ingress port (as a TX queue hands
 * them over). The fake port does what a real one must: one copy (frameCopyTo into a preallocated buffer) and a count;
 * flush() counts. Unicast frames of a batch cycle over the other ports; ingress rotates per batch.
 * Asserted per sample: deliveries per port exactly as the traffic pattern says (unicast: one per frame, flood:
 * ports-1 per frame), flushes per batch, the last copied frame's bytes; per case: no switch drop counter moved.
 * Each configuration also runs with ports that count without copying (the switch's own share). Allocation of
 * the timed loops is recorded (v8.GCProfiler, outside the timed span) to check that nothing is allocated per frame.
 *
 * Measured (2-core Xeon shared with other jobs, Node 20, means of 5 alternating runs of this file before/after the
 * switch's flow cache; no-copy medians, i.e. the switch's own ns per frame; 64-byte frames):
 *   2 ports:  unicast 72.6 → 37.5, flood 55.6 → 43.4, locked 102.9 → 41.2 (16 B → 0 allocated per frame),
 *             vlan 91.8 → 63.7
 *   16 ports: unicast 69.2 → 44.8, flood 188.1 → 179.1, locked 105.0 → 52.7, vlan 103.6 → 66.3
 * With the copy, 2 ports, 1500 B: unicast 157 → 120, locked 201 → 130. The copy still allocates about 96 B per
 * frame in the sg-list code, not in the switch. CPU time of the same unicast loop outside the harness (2 ports,
 * 5 runs): 62.2 → 33.2 ns; with every frame a cache miss: 65 → 66 ns, i.e. a miss costs what a frame cost before.
 */
import { SgList } from '../../src/memory/sg-list.js';
import { Frame, frameCopyTo } from '../../src/net/frame.js';
import { BROADCAST, macKeyAt } from '../../src/net/mac.js';
import { NO_PORT, type Port } from '../../src/net/port.js';
import { PORT_COUNTER_NAMES, Switch } from '../../src/net/switch.js';
import { measure, round, table, type Allocation, type Stats } from '../support/harness.js';
import { report, type BenchRow } from '../support/report.js';

const PORT_COUNTS = [2, 8, 16];
const FRAME_LENS = [64, 1500];
/**
 * unicast: known unicast between learned MACs; flood: broadcast; locked: known unicast between locked ports (the daemon's
 * `locked lladdr`: a static entry, learn left on); vlan: known unicast of 802.1Q-tagged frames (VID 10) on a VLAN-aware switch.
 */
const MODES = ['unicast', 'flood', 'locked', 'vlan'] as const;
type Mode = (typeof MODES)[number];
const BATCH = 32;
const BATCHES_PER_SAMPLE = 256;
const MTU = 1500;
/** virtio-net header in front of the Ethernet frame in the sender's buffer (frame.offset). */
const HDR = 12;

class BenchPort implements Port {
  id = NO_PORT;
  /** false: count only, no copy (control: the switch's own cost). */
  copy = true;
  delivered = 0;
  bytes = 0;
  shortCopies = 0;
  flushes = 0;
  readonly buf = new Uint8Array(2048);
  private readonly bufSg = new SgList(1);
  constructor(
    readonly name: string,
    readonly mtu: number,
    readonly mac: number,
  ) {
    this.bufSg.push(this.buf, 0, this.buf.length);
  }
  deliver(frame: Frame): boolean {
    if (this.copy && frameCopyTo(frame, 0, this.bufSg, 0, frame.length) !== frame.length) this.shortCopies++;
    this.delivered++;
    this.bytes += frame.length;
    return true;
  }
  flush(): void {
    this.flushes++;
  }
  reset(): void {
    this.delivered = this.bytes = this.shortCopies = this.flushes = 0;
    this.buf.fill(0, 0, 16);
  }
}

function macOf(k: number): number {
  return 0x0200_0000_0000 + k + 1;
}

/** VID of the vlan mode's tagged frames. */
const VID = 10;

/** Sender buffer: 12-byte virtio-net header, then dst, src, [802.1Q tag VID 10,] ethertype IPv4, payload. */
function frameSg(dst: number, src: number, len: number, tagged = false): SgList {
  const b = new Uint8Array(HDR + len);
  for (let i = 0; i < 6; i++) {
    b[HDR + i] = Math.floor(dst / 2 ** (40 - 8 * i)) & 0xff;
    b[HDR + 6 + i] = Math.floor(src / 2 ** (40 - 8 * i)) & 0xff;
  }
  const et = tagged ? HDR + 16 : HDR + 12;
  if (tagged) {
    b[HDR + 12] = 0x81;
    b[HDR + 15] = VID;
  }
  b[et] = 0x08;
  for (let i = et + 2; i < b.length; i++) b[i] = i & 0xff;
  const sg = new SgList(4);
  sg.push(b, 0, b.length);
  return sg;
}

interface Env {
  sw: Switch;
  ports: BenchPort[];
  /** One Frame per ingress port, reused for every frame (as NetDevice does). */
  frames: Frame[];
  /** Per ingress port, the sender buffers its frames cycle over (unicast: one per other port; flood: one). */
  sgs: SgList[][];
  /** Expected egress port of sgs[k][j] (unicast), for the per-port assertion. */
  dstOf: number[][];
}

function makeEnv(nPorts: number, mode: Mode, len: number, copy: boolean): Env {
  const sw = new Switch('bench', { mtu: MTU });
  const ports = Array.from({ length: nPorts }, (_, k) => new BenchPort(`p${k}`, MTU, macOf(k)));
  for (const p of ports) {
    p.copy = copy;
    sw.addPort(p);
    if (mode === 'locked') {
      sw.configurePort(p, { locked: true });
      sw.addStatic(p.mac, p);
    } else if (mode === 'vlan') {
      sw.configurePort(p, { untagged: 1, tagged: [VID] });
    }
  }
  const sgs: SgList[][] = [];
  const dstOf: number[][] = [];
  for (let k = 0; k < nPorts; k++) {
    const others = ports.map((_, d) => d).filter((d) => d !== k);
    dstOf.push(mode === 'flood' ? [-1] : others);
    sgs.push(mode === 'flood' ? [frameSg(BROADCAST, macOf(k), len)] : others.map((d) => frameSg(macOf(d), macOf(k), len, mode === 'vlan')));
  }
  const frames = ports.map((_, k) => new Frame(sgs[k][0]));
  for (const f of frames) {
    f.offset = HDR;
    f.length = len;
  }
  // Learn every MAC first: one broadcast from each port.
  for (let k = 0; k < nPorts; k++) {
    const f = new Frame(frameSg(BROADCAST, macOf(k), 64));
    f.offset = HDR;
    f.length = 64;
    sw.forward(ports[k], f);
    sw.endBatch();
  }
  if (sw.macTable.size !== nPorts) throw new Error(`learned ${sw.macTable.size} MACs, expected ${nPorts}`);
  return { sw, ports, frames, sgs, dstOf };
}

/** The timed body: `batches` batches of 32 frames; batch b comes from port b % n. Returns frames forwarded. */
function run(env: Env, batches: number): number {
  const { sw, ports, frames, sgs } = env;
  const n = ports.length;
  for (let b = 0; b < batches; b++) {
    const k = b % n;
    const ingress = ports[k];
    const frame = frames[k];
    const mine = sgs[k];
    const m = mine.length;
    for (let j = 0; j < BATCH; j++) {
      frame.sg = mine[j % m];
      sw.forward(ingress, frame);
    }
    sw.endBatch();
  }
  return batches * BATCH;
}

/** Per-port deliveries and flushes the pattern of run(env, batches) must produce, after a reset. */
function verify(env: Env, mode: Mode, len: number, batches: number): void {
  const n = env.ports.length;
  const want = new Array<number>(n).fill(0);
  const wantFlush = new Array<number>(n).fill(0);
  for (let b = 0; b < batches; b++) {
    const k = b % n;
    const touched = new Set<number>();
    for (let j = 0; j < BATCH; j++) {
      const targets = mode !== 'flood' ? [env.dstOf[k][j % env.dstOf[k].length]] : env.dstOf.map((_, d) => d).filter((d) => d !== k);
      for (const d of targets) {
        want[d]++;
        touched.add(d);
      }
    }
    for (const d of touched) wantFlush[d]++;
  }
  const frames = batches * BATCH;
  const total = env.ports.reduce((a, p) => a + p.delivered, 0);
  const perFrame = mode !== 'flood' ? 1 : n - 1;
  const where = `ports=${n} ${mode} frame=${len}`;
  if (total !== frames * perFrame) throw new Error(`${where}: ${total} deliveries for ${frames} frames, expected ${frames * perFrame}`);
  env.ports.forEach((p, d) => {
    if (p.delivered !== want[d] || p.flushes !== wantFlush[d] || p.bytes !== want[d] * len || p.shortCopies !== 0) {
      throw new Error(`${where}: port ${d} delivered ${p.delivered}/${want[d]}, flushed ${p.flushes}/${wantFlush[d]}, short copies ${p.shortCopies}`);
    }
    // The last frame copied to this port is addressed to it (or broadcast) and has the IPv4 ethertype (behind the
    // tag, which stays: VID 10 is tagged on every port).
    const dst = macKeyAt(p.buf, 0);
    const et = mode === 'vlan' ? 16 : 12;
    const tagOk = mode !== 'vlan' || (p.buf[12] === 0x81 && p.buf[15] === VID);
    if (p.copy && want[d] > 0 && (dst !== (mode !== 'flood' ? p.mac : BROADCAST) || !tagOk || p.buf[et] !== 0x08 || p.buf[et + 1] !== 0)) {
      throw new Error(`${where}: port ${d} got a frame for ${dst.toString(16)}`);
    }
  });
}

/** No drop counter of any port moved, and the switch's tx count matches the ports'. */
function verifyCounters(env: Env, where: string): void {
  const t = env.sw.totals();
  for (const c of PORT_COUNTER_NAMES) if (c.startsWith('drop') && t[c] !== 0) throw new Error(`${where}: switch counted ${c}=${t[c]}`);
  if (t.learnTableFull !== 0 || t.macMoves !== 0 || t.dropNotMember !== 0) throw new Error(`${where}: unexpected learning/membership counts`);
}

const rows: BenchRow[] = [];
const printed: (string | number)[][] = [];
const allocRows: (string | number)[][] = [];
const perMillion = (a: Allocation) => round((a.gcs * 1e6) / a.ops, 1);
const perFrame = (a: Allocation) => round(a.bytes / a.ops, 1);

/** Time one configuration; allocation is recorded over the measured samples' timed bodies only. */
function runCase(nPorts: number, mode: Mode, len: number, copy: boolean): Stats & { alloc: Allocation } {
  const env = makeEnv(nPorts, mode, len, copy);
  const s = measure({
    setup: () => {
      for (const p of env.ports) p.reset();
      return env;
    },
    run: (e) => run(e, BATCHES_PER_SAMPLE),
    check: (e) => verify(e, mode, len, BATCHES_PER_SAMPLE),
    warmup: 10,
    samples: 30,
    trackAllocation: true,
  });
  verifyCounters(env, `ports=${nPorts} ${mode} frame=${len}`);
  return s as Stats & { alloc: Allocation };
}

for (const nPorts of PORT_COUNTS) {
  for (const mode of MODES) {
    for (const len of FRAME_LENS) {
      const s = runCase(nPorts, mode, len, true);
      // Control: ports that count but do not copy, i.e. the switch's own cost and allocation.
      const bare = runCase(nPorts, mode, len, false);
      const deliveries = mode !== 'flood' ? 1 : nPorts - 1;
      rows.push({
        bench: 'net/switch-forward',
        case: `ports=${nPorts} ${mode} frame=${len} batch=${BATCH}`,
        unit: 'ns/frame',
        value: round(s.median),
        median: round(s.median),
        p99: round(s.p99),
        mpps: round(1e3 / s.median, 3),
        deliveriesPerFrame: deliveries,
        nsPerDelivery: round(s.median / deliveries),
        gcPer1e6Frames: perMillion(s.alloc),
        bytesPerFrame: perFrame(s.alloc),
        noCopyMedian: round(bare.median),
        noCopyGcPer1e6Frames: perMillion(bare.alloc),
        noCopyBytesPerFrame: perFrame(bare.alloc),
        samples: s.samples,
      });
      printed.push([nPorts, mode, len, round(s.median, 1), round(s.p99, 1), round(1e3 / s.median, 2), round(s.median / deliveries, 1), round(bare.median, 1)]);
      allocRows.push([nPorts, mode, len, s.alloc.ops, perMillion(s.alloc), perFrame(s.alloc), perMillion(bare.alloc), perFrame(bare.alloc), s.alloc.majorGcs + bare.alloc.majorGcs]);
    }
  }
}

report(rows);
process.stderr.write(
  table(
    `net/switch-forward: Switch.forward + endBatch, batches of ${BATCH}, ${BATCHES_PER_SAMPLE * BATCH} frames per sample, ns per ingress frame (no copy: ports only count)`,
    ['ports', 'mode', 'frame', 'median ns', 'p99 ns', 'Mpps', 'ns/delivery', 'no-copy median ns'],
    printed,
  ) +
    table(
      'net/switch-forward allocation in the timed loops (v8.GCProfiler; B = heap growth + bytes freed by GCs)',
      ['ports', 'mode', 'frame', 'frames', 'GCs/1e6 frames', 'B/frame', 'no-copy GCs/1e6', 'no-copy B/frame', 'major GCs'],
      allocRows,
    ),
);
