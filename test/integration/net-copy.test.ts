/**
 * The frame copy through the copy batch (src/memory/copy-batch.ts, native copyBurst) on the real device path:
 * two NetDevices on a Switch over mmapShared() guest memory (test/helpers/net-copy-rig.ts). Frames arrive intact
 * whatever the chain shapes (64 and 1500 B, TX and RX chains in several pieces, a header split across RX pieces,
 * MRG_RXBUF frames spanning RX chains), through a VLAN insert and strip, with the dirty log on; and no used-ring
 * publish ever exposes a buffer whose copy is still queued.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { copyBatch, CopyBatch } from '../../src/memory/copy-batch.js';
import { DirtyLog, VHOST_LOG_PAGE } from '../../src/memory/dirty-log.js';
import { SgList } from '../../src/memory/sg-list.js';
import { loadNative } from '../../src/native/binding.js';
import { Frame } from '../../src/net/frame.js';
import { ethFrame } from '../helpers/fake-net-driver.js';
import { MRG, NetCopyRig, type GuestOptions } from '../helpers/net-copy-rig.js';

const HDR = 12;

interface Received {
  numBuffers: number;
  hdr: number[];
  bytes: Uint8Array;
}

/** A sends TX chains 0..n-1; B's frames, reassembled from its used RX entries (MRG_RXBUF: num_buffers chains each). */
function burst(rig: NetCopyRig, n: number, mrg: boolean): Received[] {
  const pieces: Uint8Array[] = [];
  rig.sendBurst(n, (head, len) => pieces.push(rig.b.rxBytes(head, len)));
  return assemble(pieces, mrg);
}

/** B's used RX entries not seen yet, as frames. */
function received(rig: NetCopyRig, mrg: boolean): Received[] {
  const pieces: Uint8Array[] = [];
  rig.b.recycleRx((head, len) => pieces.push(rig.b.rxBytes(head, len)));
  return assemble(pieces, mrg);
}

function assemble(pieces: Uint8Array[], mrg: boolean): Received[] {
  const out: Received[] = [];
  for (let i = 0; i < pieces.length; ) {
    const first = pieces[i];
    const numBuffers = first[10] | (first[11] << 8);
    const k = mrg ? numBuffers : 1;
    const parts = [first.subarray(HDR), ...pieces.slice(i + 1, i + k)];
    const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    out.push({ numBuffers, hdr: [...first.subarray(0, 10)], bytes });
    i += k;
  }
  return out;
}

/** Each TX chain c gets its own frame (a different fill), so a copy from the wrong chain shows. */
function frames(rig: NetCopyRig, n: number, len: number): Uint8Array[] {
  const fs = Array.from({ length: n }, (_, c) => ethFrame(rig.b.mac, rig.a.mac, len, c * 13));
  fs.forEach((f, c) => rig.a.writeTxFrame(c, f));
  return fs;
}

let rig: NetCopyRig | null = null;
afterEach(() => {
  rig?.close();
  rig = null;
});

function makeRig(opts: { a?: GuestOptions; b?: GuestOptions }): NetCopyRig {
  rig = new NetCopyRig(opts);
  // No publish may expose a queued copy (RX written to, or TX read from): the batch is empty at every publish.
  for (const q of [rig.a.txq, rig.a.rxq, rig.b.txq, rig.b.rxq]) {
    q.onPublish = () => {
      if (copyBatch.count !== 0) throw new Error(`publish of queue ${q.index} with ${copyBatch.count} copies queued`);
    };
  }
  return rig;
}

describe('frames arrive intact through the copy batch', () => {
  const shapes: [string, { a?: GuestOptions; b?: GuestOptions }, boolean][] = [
    ['one descriptor each way', {}, false],
    ['TX in pieces cut inside and after the snapshot, RX in pieces', { a: { txPieces: [12, 5, 20, 30, 2000] }, b: { rxPieces: [100, 33, 2000] } }, false],
    ['RX header split over two pieces', { a: { txPieces: [40, 3000] }, b: { rxPieces: [8, 30, 2000] } }, false],
    ['MRG_RXBUF: 512 B RX chains, a frame spans several', { a: { txPieces: [12, 700, 900] }, b: { features: MRG, rxPieces: [512] } }, true],
  ];
  for (const [name, opts, mrg] of shapes) {
    for (const len of [64, 1500]) {
      test(`${len} B, ${name}`, () => {
        const r = makeRig(opts);
        const n = Math.min(32, r.a.txChains);
        const want = frames(r, n, len);
        const runs0 = copyBatch.runs;
        const got = burst(r, n, mrg);
        expect(copyBatch.runs).toBeGreaterThan(runs0); // the copies went through copyBurst
        expect(got.length).toBe(n);
        got.forEach((g, i) => {
          expect(g.hdr).toEqual(new Array(10).fill(0));
          expect(g.numBuffers).toBe(mrg ? Math.ceil((HDR + len) / 512) : 1);
          expect(g.bytes.subarray(0, len)).toEqual(want[i]);
        });
        expect(r.b.dev.counters.rxFrames).toBe(n);
        expect(copyBatch.refused).toBe(0);
      });
    }
  }

  test('VLAN insert (untagged in, tagged out) and strip (tagged in, untagged out) through the copy', () => {
    const r = makeRig({ a: { txPieces: [12, 10, 2000] } });
    r.sw.configurePort(r.a.dev, { untagged: 10 });
    r.sw.configurePort(r.b.dev, { untagged: 'none', tagged: [10] });
    const plain = frames(r, 4, 300);
    const tagged = burst(r, 4, false);
    expect(tagged.length).toBe(4);
    tagged.forEach((g, i) => {
      const w = plain[i];
      expect(g.bytes.subarray(0, 304)).toEqual(new Uint8Array([...w.subarray(0, 12), 0x81, 0x00, 0x00, 10, ...w.subarray(12)]));
    });
    // The other way: A sends tagged frames, B takes VLAN 10 untagged.
    r.sw.configurePort(r.a.dev, { untagged: 'none', tagged: [10] });
    r.sw.configurePort(r.b.dev, { untagged: 10, tagged: [] });
    const inner = Array.from({ length: 4 }, (_, c) => ethFrame(r.b.mac, r.a.mac, 300, c * 5));
    inner.forEach((f, c) => r.a.writeTxFrame(c, new Uint8Array([...f.subarray(0, 12), 0x81, 0x00, 0x00, 10, ...f.subarray(12)])));
    const stripped = burst(r, 4, false);
    expect(stripped.length).toBe(4);
    stripped.forEach((g, i) => expect(g.bytes.subarray(0, 300)).toEqual(inner[i]));
  });

  test('dirty log on: the copies land before the pages are marked, and every RX page written is marked', () => {
    const r = makeRig({ b: { rxPieces: [100, 2000] } });
    const bitmap = new Uint8Array(4 * 1024 * 1024 / VHOST_LOG_PAGE / 8);
    const log = new DirtyLog(bitmap);
    r.b.mem.dirtyLog = log;
    const orig = log.logSg.bind(log);
    let checked = 0;
    log.logSg = (sg, len) => {
      expect(copyBatch.count).toBe(0); // the write is done when its page is marked
      checked++;
      orig(sg, len);
    };
    const want = frames(r, 8, 1500);
    const got = burst(r, 8, false);
    got.forEach((g, i) => expect(g.bytes.subarray(0, 1500)).toEqual(want[i]));
    expect(checked).toBe(8);
    // Chain c's pieces: 0x200000 + 2c * 4 KiB (100 B) and the next slot + 64 (1412 B): both pages marked.
    for (let c = 0; c < 8; c++) {
      for (const gpa of [0x20_0000 + 2 * c * 0x1000, 0x20_0000 + (2 * c + 1) * 0x1000 + 64]) {
        const page = gpa / VHOST_LOG_PAGE;
        expect(bitmap[page >> 3] & (1 << (page & 7))).not.toBe(0);
      }
    }
  });

  test('a frame delivered outside a switch burst is copied before queueStop publishes the RX ring', () => {
    const r = makeRig({});
    const want = frames(r, 1, 800)[0];
    // A Frame over A's TX chain 0 in guest memory (as processTx makes it), delivered straight to B.
    const sg = new SgList(4);
    expect(r.a.mem.mapGpa(0x10_0000, HDR + 800, sg)).toBe(true);
    const f = new Frame(sg);
    f.offset = HDR;
    f.length = 800;
    expect(r.b.dev.deliver(f)).toBe(true);
    expect(copyBatch.count).toBeGreaterThan(0); // queued, not copied yet
    r.b.dev.queueStop(0); // publishes (onPublish checks the batch ran first)
    expect(r.b.rxq.publishes).toBe(1);
    expect(received(r, false)[0].bytes.subarray(0, 800)).toEqual(want);
  });
});

describe('CopyBatch', () => {
  test('a full batch runs at once; run() runs what is queued, once', () => {
    const native = loadNative();
    const fd = native.memfdCreate('batch', 8192);
    const ab = native.mmapShared(fd, 8192, 0, true);
    const u8 = new Uint8Array(ab);
    const h = native.mappingHandle(ab);
    for (let i = 0; i < 16; i++) u8[i] = i + 1;
    const b = new CopyBatch(2, native);
    b.add(h, 4096, h, 0, 4);
    b.add(h, 4100, h, 4, 4);
    expect(b.runs).toBe(0);
    b.add(h, 4104, h, 8, 4); // full: the first two run now
    expect(b.runs).toBe(1);
    expect(b.count).toBe(1);
    expect([...u8.subarray(4096, 4104)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(u8[4104]).toBe(0);
    b.run();
    b.run();
    expect(b.runs).toBe(2);
    expect([...u8.subarray(4104, 4108)]).toEqual([9, 10, 11, 12]);
    b.add(h, 8190, h, 0, 4); // past the end: refused by the addon, counted
    b.run();
    expect(b.refused).toBe(1);
    native.munmap(ab);
    native.close(fd);
  });
});
