/**
 * Writes the seed corpora of the TypeScript fuzz targets (test/fuzz/corpus/<target>/): small valid inputs
 * built with the project's encoders, and for qcow2 small images made by qemu-img and qemu-io (512-byte clusters:
 * a whole image fits in a few KiB). Run once after a format change: `node build/test/fuzz/make-seeds.js`;
 * the output is committed. Regression inputs of fixed findings live beside the seeds (named regress-*).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  encodeConfig,
  encodeMemTable,
  encodeRequest,
  encodeSingleRegion,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  FrontendRequest as R,
  u64Payload,
} from '../../src/vhost-user/message.js';
import { REGIONS } from './chain-input.js';

const corpus = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fuzz', 'corpus');
function put(target: string, name: string, data: Uint8Array): void {
  mkdirSync(join(corpus, target), { recursive: true });
  writeFileSync(join(corpus, target, name), data);
}

// --- vhost-user messages
const region = { gpa: 0x100000, size: 0x40000, uva: 0x7f0000000000, mmapOffset: 0 };
const inflight = new Uint8Array(24);
new DataView(inflight.buffer).setBigUint64(0, 4096n, true);
new DataView(inflight.buffer).setUint16(16, 2, true);
new DataView(inflight.buffer).setUint16(18, 256, true);
const logBase = new Uint8Array(16);
new DataView(logBase.buffer).setBigUint64(0, 4096n, true);
const messages: [string, number, Uint8Array][] = [
  ['get-features', R.GET_FEATURES, new Uint8Array(0)],
  ['set-features', R.SET_FEATURES, u64Payload(0x1_4000_0000n)],
  ['set-mem-table-1', R.SET_MEM_TABLE, encodeMemTable([region])],
  ['set-mem-table-2', R.SET_MEM_TABLE, encodeMemTable([region, { gpa: 0x200000, size: 0x1000, uva: 0x7f0000100000, mmapOffset: 0x1000 }])],
  ['add-mem-reg', R.ADD_MEM_REG, encodeSingleRegion(region)],
  ['rem-mem-reg', R.REM_MEM_REG, encodeSingleRegion(region)],
  ['set-vring-num', R.SET_VRING_NUM, encodeVringState({ index: 0, num: 256 })],
  ['set-vring-base', R.SET_VRING_BASE, encodeVringState({ index: 1, num: 0 })],
  ['set-vring-addr', R.SET_VRING_ADDR, encodeVringAddr({ index: 0, flags: 0, descUva: 0x7f0000000000, usedUva: 0x7f0000002000, availUva: 0x7f0000001000, logGuestAddr: 0 })],
  ['set-vring-kick', R.SET_VRING_KICK, encodeVringFile(0, false)],
  ['set-vring-call-nofd', R.SET_VRING_CALL, encodeVringFile(1, true)],
  ['get-config', R.GET_CONFIG, encodeConfig(0, 0, new Uint8Array(12))],
  ['set-config', R.SET_CONFIG, encodeConfig(8, 0, new Uint8Array([1, 2, 3, 4]))],
  ['get-inflight-fd', R.GET_INFLIGHT_FD, inflight],
  ['set-log-base', R.SET_LOG_BASE, logBase],
];
for (const [name, req, p] of messages) put('vhost-message', name, encodeRequest(req, p, name.startsWith('set-mem')));

// --- inflight regions (layout: inflight.fuzz.ts and src/virtqueue/inflight.ts)
function inflightSeed(log2: number, usedIdx: number, usedIds: number[], version: number, heads: [head: number, counter: number, next: number][], lastBatch = 0, regionUsedIdx = usedIdx): Uint8Array {
  const size = 1 << log2;
  const bytes = Math.ceil((16 * size + 16) / 64) * 64;
  const out = new Uint8Array(3 + 2 * size + bytes);
  const dv = new DataView(out.buffer);
  out[0] = log2;
  dv.setUint16(1, usedIdx, true);
  usedIds.forEach((id, i) => dv.setUint16(3 + 2 * i, id, true));
  const r = 3 + 2 * size;
  dv.setUint16(r + 8, version, true);
  dv.setUint16(r + 10, size, true);
  dv.setUint16(r + 12, lastBatch, true);
  dv.setUint16(r + 14, regionUsedIdx, true);
  for (const [h, c, n] of heads) {
    out[r + 16 + 16 * h] = 1;
    dv.setUint16(r + 16 + 16 * h + 6, n, true);
    dv.setBigUint64(r + 16 + 16 * h + 8, BigInt(c), true);
  }
  return out;
}
put('inflight', 'fresh', inflightSeed(3, 0, [], 0, []));
put('inflight', 'two-in-flight', inflightSeed(3, 5, [], 1, [[2, 7, 0], [6, 3, 0]]));
put('inflight', 'uncleared-batch', inflightSeed(3, 6, [0, 0, 0, 0, 0, 4, 0, 0], 1, [[4, 9, 0], [1, 8, 0]], 4, 5));
put('inflight', 'bad-batch', inflightSeed(2, 3, [1, 1, 1, 1], 1, [[0, 1, 0]], 0, 0));

// --- descriptor chains (layout: chain-input.ts)
type Desc = [addr: number, len: number, flags: number, next: number];
const NEXT = 1;
const WRITE = 2;
const INDIRECT = 4;
function chainInput(log2: number, head: number, flags: number, descs: Desc[], mem: [gpa: number, bytes: Uint8Array][] = []): Uint8Array {
  const size = 1 << log2;
  const memBase = 3 + 16 * size;
  let end = memBase;
  const at = (gpa: number): number => {
    let off = memBase;
    for (const r of REGIONS) {
      if (gpa >= r.gpa && gpa < r.gpa + r.size) return off + gpa - r.gpa;
      off += r.size;
    }
    throw new Error(`seed GPA 0x${gpa.toString(16)} outside the fuzz regions`);
  };
  for (const [g, b] of mem) end = Math.max(end, at(g) + b.length);
  const out = new Uint8Array(end);
  const dv = new DataView(out.buffer);
  out[0] = log2;
  out[1] = head;
  out[2] = flags;
  descs.forEach(([a, l, f, n], i) => {
    dv.setBigUint64(3 + 16 * i, BigInt(a), true);
    dv.setUint32(3 + 16 * i + 8, l, true);
    dv.setUint16(3 + 16 * i + 12, f, true);
    dv.setUint16(3 + 16 * i + 14, n, true);
  });
  for (const [g, b] of mem) out.set(b, at(g));
  return out;
}
function table(descs: Desc[]): Uint8Array {
  const b = new Uint8Array(16 * descs.length);
  const dv = new DataView(b.buffer);
  descs.forEach(([a, l, f, n], i) => {
    dv.setBigUint64(16 * i, BigInt(a), true);
    dv.setUint32(16 * i + 8, l, true);
    dv.setUint16(16 * i + 12, f, true);
    dv.setUint16(16 * i + 14, n, true);
  });
  return b;
}
function blkHeader(type: number, sector: number): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, type, true);
  dv.setBigUint64(8, BigInt(sector), true);
  return b;
}
function segments(list: [sector: number, count: number, flags: number][]): Uint8Array {
  const b = new Uint8Array(16 * list.length);
  const dv = new DataView(b.buffer);
  list.forEach(([s, c, f], i) => {
    dv.setBigUint64(16 * i, BigInt(s), true);
    dv.setUint32(16 * i + 8, c, true);
    dv.setUint32(16 * i + 12, f, true);
  });
  return b;
}
put('descriptor-chain', 'direct-3', chainInput(3, 0, 0, [[0x1000, 64, NEXT, 1], [0x1100, 32, NEXT, 2], [0x8000, 256, WRITE, 0]]));
put('descriptor-chain', 'straddling', chainInput(3, 1, 0, [[0, 0, 0, 0], [0x1f00, 0x200, NEXT | WRITE, 2], [0x2400, 16, WRITE, 0]]));
put('descriptor-chain', 'indirect', chainInput(3, 0, 1, [[0x1800, 48, INDIRECT, 0]], [[0x1800, table([[0x1000, 16, NEXT, 1], [0x1100, 16, NEXT | WRITE, 2], [0x8000, 8, WRITE, 0]])]]));
put('descriptor-chain', 'indirect-straddling', chainInput(2, 0, 1, [[0x1ff0, 32, INDIRECT, 0]], [[0x1ff0, table([[0x1000, 16, NEXT, 1], [0x8000, 8, WRITE, 0]])]]));
put('descriptor-chain', 'loop', chainInput(1, 0, 0, [[0x1000, 8, NEXT, 1], [0x1000, 8, NEXT, 0]]));

const hdr = 0x1000;
const status: Desc = [0x8ff0, 1, WRITE, 0];
put('blk-request', 'read', chainInput(3, 0, 0, [[hdr, 16, NEXT, 1], [0x8000, 1024, WRITE | NEXT, 2], status], [[hdr, blkHeader(0, 4)]]));
put('blk-request', 'write', chainInput(3, 0, 0, [[hdr, 16, NEXT, 1], [0x1200, 512, NEXT, 2], status], [[hdr, blkHeader(1, 2047)]]));
put('blk-request', 'write-one-buffer', chainInput(3, 0, 0, [[hdr, 16 + 512, NEXT, 1], [0x8ff0, 1, WRITE, 0]], [[hdr, blkHeader(1, 0)]]));
put('blk-request', 'flush', chainInput(3, 0, 0, [[hdr, 16, NEXT, 1], [0x8ff0, 1, WRITE, 0]], [[hdr, blkHeader(4, 0)]]));
put('blk-request', 'get-id', chainInput(3, 0, 0, [[hdr, 16, NEXT, 1], [0x8000, 20, WRITE | NEXT, 2], status], [[hdr, blkHeader(8, 0)]]));
put('blk-request', 'discard', chainInput(3, 0, 0, [[hdr, 16, NEXT, 1], [0x1100, 32, NEXT, 2], status], [[hdr, blkHeader(11, 0)], [0x1100, segments([[0, 8, 0], [100, 16, 0]])]]));
put('blk-request', 'write-zeroes-unmap', chainInput(3, 0, 0, [[hdr, 16, NEXT, 1], [0x1100, 16, NEXT, 2], status], [[hdr, blkHeader(13, 0)], [0x1100, segments([[8, 8, 1]])]]));
put('blk-request', 'read-indirect', chainInput(3, 0, 1, [[0x2800, 48, INDIRECT, 0]], [[hdr, blkHeader(0, 0)], [0x2800, table([[hdr, 16, NEXT, 1], [0x1e00, 1024, NEXT | WRITE, 2], status])]]));
put('blk-request', 'read-only-write', chainInput(3, 0, 2, [[hdr, 16, NEXT, 1], [0x1200, 512, NEXT, 2], status], [[hdr, blkHeader(1, 0)]]));

// --- virtio-net frames behind a 12-byte virtio-net header (+ the target's two control bytes: 10 VLAN, 11 split)
function netHdr(flags: number, gsoType: number, hdrLen: number, gsoSize: number, csumStart: number, csumOffset: number, vlan = 0, split = 0): Uint8Array {
  const b = new Uint8Array(12);
  const dv = new DataView(b.buffer);
  b[0] = flags;
  b[1] = gsoType;
  dv.setUint16(2, hdrLen, true);
  dv.setUint16(4, gsoSize, true);
  dv.setUint16(6, csumStart, true);
  dv.setUint16(8, csumOffset, true);
  b[10] = vlan;
  b[11] = split;
  return b;
}
function eth(type: number, tag = false): number[] {
  const m = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
  return tag ? [...m, 0x81, 0x00, 0x00, 0x0a, type >> 8, type & 0xff] : [...m, type >> 8, type & 0xff];
}
function ipv4(proto: number, payloadLen: number): number[] {
  const len = 20 + payloadLen;
  return [0x45, 0, len >> 8, len & 0xff, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
}
function ipv6(next: number, payloadLen: number): number[] {
  const a = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
  return [0x60, 0, 0, 0, payloadLen >> 8, payloadLen & 0xff, next, 64, ...a, ...a.slice(0, 15), 2];
}
const tcp = (flags: number): number[] => [0x30, 0x39, 0x00, 0x50, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0];
const bytes = (n: number, v = 0x61): number[] => new Array<number>(n).fill(v);
const frame = (h: Uint8Array, body: number[]): Uint8Array => new Uint8Array([...h, ...body]);
put('net-offload', 'udp-csum', frame(netHdr(1, 0, 0, 0, 34, 6), [...eth(0x0800), ...ipv4(17, 108), 0x04, 0xd2, 0x16, 0x2e, 0, 108, 0, 0, ...bytes(100)]));
put('net-offload', 'tcp4-tso', frame(netHdr(1, 1, 54, 1448, 34, 16, 0, 4), [...eth(0x0800), ...ipv4(6, 20 + 3000), ...tcp(0x19), ...bytes(3000)]));
put('net-offload', 'tcp4-tso-ecn-small-mss', frame(netHdr(1, 0x81, 54, 64, 34, 16), [...eth(0x0800), ...ipv4(6, 20 + 300), ...tcp(0x98), ...bytes(300)]));
put('net-offload', 'tcp6-tso', frame(netHdr(1, 4, 74, 1000, 54, 16), [...eth(0x86dd), ...ipv6(6, 20 + 2500), ...tcp(0x18), ...bytes(2500)]));
put('net-offload', 'tcp4-tso-tagged-strip', frame(netHdr(1, 1, 58, 500, 38, 16, 1), [...eth(0x0800, true), ...ipv4(6, 20 + 1200), ...tcp(0x10), ...bytes(1200)]));
put('net-offload', 'tcp4-csum-insert-tag', frame(netHdr(1, 0, 0, 0, 34, 16, 2), [...eth(0x0800), ...ipv4(6, 20 + 40), ...tcp(0x18), ...bytes(40)]));

// --- qcow2 images (qemu-img/qemu-io; 512-byte clusters keep them small)
const tmp = mkdtempSync(join(tmpdir(), 'vhostd-seeds-'));
try {
  const img = (name: string, opts: string, size: string, io: string[] = []): Uint8Array => {
    const f = join(tmp, name);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', opts, f, size]);
    for (const c of io) execFileSync('qemu-io', ['-f', 'qcow2', '-c', c, f], { stdio: 'ignore' });
    return new Uint8Array(readFileSync(f));
  };
  const images: [string, Uint8Array][] = [
    ['empty-v3', img('a', 'cluster_size=512', '64K')],
    ['data-v3', img('b', 'cluster_size=512', '64K', ['write -P 0x11 0 2k', 'write -P 0x22 32k 1k', 'write -z 4k 1k'])],
    ['v2-compat', img('c', 'cluster_size=512,compat=0.10', '32K', ['write -P 0x33 512 1k'])],
    ['refcount-bits-1', img('d', 'cluster_size=512,refcount_bits=1', '16K', ['write -P 0x44 0 512'])],
    ['refcount-bits-64', img('e', 'cluster_size=512,refcount_bits=64', '16K', ['write -P 0x45 0 512'])],
    ['lazy-refcounts', img('f', 'cluster_size=512,lazy_refcounts=on', '16K', ['write -P 0x55 0 1k'])],
  ];
  // A snapshot, and a compressed cluster (convert -c), as qemu-img writes them.
  const snap = join(tmp, 'b');
  execFileSync('qemu-img', ['snapshot', '-c', 's1', snap]);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x66 0 512', snap], { stdio: 'ignore' });
  images.push(['snapshot', new Uint8Array(readFileSync(snap))]);
  const comp = join(tmp, 'comp');
  execFileSync('qemu-img', ['convert', '-q', '-c', '-O', 'qcow2', '-o', 'cluster_size=512', join(tmp, 'b'), comp]);
  images.push(['compressed', new Uint8Array(readFileSync(comp))]);
  // Dirty (lazy refcounts, not closed cleanly): set incompatible bit 0, the image then rebuilds its refcounts.
  const dirty = Uint8Array.from(images.find(([n]) => n === 'lazy-refcounts')![1]);
  dirty[79] |= 1;
  images.push(['dirty', dirty]);
  // Backing file + backing format extension (header target only: opening it would look for the file).
  writeFileSync(join(tmp, 'base.raw'), new Uint8Array(65536));
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', '-b', 'base.raw', '-F', 'raw', join(tmp, 'ov'), '64K']);
  const overlay = new Uint8Array(readFileSync(join(tmp, 'ov')));
  for (const [name, data] of images) {
    if (data.length > 16384) throw new Error(`seed image ${name} is ${data.length} bytes`);
    put('qcow2-open', name, data);
    put('qcow2-header', name, data.subarray(0, 512));
  }
  put('qcow2-header', 'backing-raw', overlay.subarray(0, 512));
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
