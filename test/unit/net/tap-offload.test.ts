/**
 * The host port never gets a partial checksum or a GSO frame (docs/vport.md): TapPort (over a fake native binding
 * that records write()s) completes the checksum of a NEEDS_CSUM frame and segments a TSO frame into MTU-sized frames
 * with complete checksums, one write() each.
 */
import { Writable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { SgList } from '../../../src/memory/sg-list.js';
import { Frame } from '../../../src/net/frame.js';
import { NO_PORT, type Port } from '../../../src/net/port.js';
import { Switch } from '../../../src/net/switch.js';
import { TapPort } from '../../../src/net/tap-port.js';
import type { NativeBinding } from '../../../src/native/types.js';
import { createLogger } from '../../../src/util/log.js';
import { refSum, tcpFrame, tcpVerifies, u32 } from '../../helpers/tcp-frame.js';

class Sender implements Port {
  id = NO_PORT;
  name = 'guest';
  mtu = 1500;
  deliver(): boolean {
    return true;
  }
  flush(): void {}
}

function setup(): { sw: Switch; tap: TapPort; written: Uint8Array[]; sender: Sender } {
  const sw = new Switch('s');
  const written: Uint8Array[] = [];
  const native = {
    watch: () => ({ close() {} }),
    read: () => -1,
    write: (_fd: number, buf: Uint8Array, off: number, len: number) => {
      written.push(buf.slice(off, off + len));
      return len;
    },
    close() {},
    memfdCreate: () => 98,
    mmapShared: (_fd: number, size: number) => new ArrayBuffer(size),
    mappingHandle: () => -1, // plain buffers: copies stay immediate
    munmap() {},
  } as unknown as NativeBinding;
  const log = createLogger({ level: 'error', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
  const sender = new Sender();
  sw.addPort(sender);
  const tap = new TapPort({ fd: 99, name: 'vport0', sw, log, native });
  return { sw, tap, written, sender };
}

function frameOf(bytes: Uint8Array, hdr: Partial<Pick<Frame, 'vnetFlags' | 'gsoType' | 'gsoSize' | 'csumStart' | 'csumOffset' | 'gsoHdrEnd'>>): Frame {
  const sg = new SgList(1);
  sg.push(bytes, 0, bytes.length);
  const f = new Frame(sg);
  f.length = bytes.length;
  Object.assign(f, hdr);
  return f;
}

describe('TapPort software offloads', () => {
  test('NEEDS_CSUM: written with the checksum completed', () => {
    const { sw, tap, written, sender } = setup();
    const t = tcpFrame(false, 500);
    t.frame.fill(0xff, 0, 6);
    expect(tcpVerifies(t.frame, false, t.l3, t.l4)).toBe(false);
    sw.forward(sender, frameOf(t.frame, { vnetFlags: 1, csumStart: t.csumStart, csumOffset: 16 }));
    expect(written).toHaveLength(1);
    expect(tcpVerifies(written[0], false, t.l3, t.l4)).toBe(true);
    expect(tap.counters.rxSoftOffload).toBe(1);
  });

  test('TSO: segmented into MTU-sized frames with complete checksums; plain frames unchanged', () => {
    const { sw, tap, written, sender } = setup();
    const t = tcpFrame(false, 20_000, { seq: 5 });
    t.frame.fill(0xff, 0, 6);
    const mss = 1448;
    sw.forward(sender, frameOf(t.frame, { vnetFlags: 1, gsoType: 1, gsoSize: mss, csumStart: t.csumStart, csumOffset: 16, gsoHdrEnd: t.hdrs }));
    expect(written).toHaveLength(Math.ceil(20_000 / mss));
    written.forEach((s, i) => {
      expect(s.length).toBeLessThanOrEqual(1514);
      expect(tcpVerifies(s, false, t.l3, t.l4)).toBe(true);
      expect(refSum(s.subarray(t.l3, t.l3 + 20))).toBe(0xffff);
      expect(u32(s, t.l4 + 4)).toBe(5 + i * mss);
    });
    expect(sw.counters(tap.id)!.dropMtu).toBe(0);
    const plain = tcpFrame(false, 100).frame;
    plain.fill(0xff, 0, 6);
    sw.forward(sender, frameOf(plain, {}));
    expect(written.at(-1)).toEqual(plain);
  });
});
