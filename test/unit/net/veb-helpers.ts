/** Shared fakes for the veb-* switch tests: a Port that copies frames with frameCopyTo, and frame builders. */
import { SgList } from '../../../src/memory/sg-list.js';
import { Frame, frameCopyTo } from '../../../src/net/frame.js';
import { formatMac, macKeyAt, parseMac } from '../../../src/net/mac.js';
import { NO_PORT, type Port } from '../../../src/net/port.js';
import { Switch, type SwitchOptions } from '../../../src/net/switch.js';

export class CopyPort implements Port {
  id = NO_PORT;
  mtu = 1500;
  frames: Uint8Array[] = [];
  constructor(readonly name: string) {}
  deliver(frame: Frame): boolean {
    const out = new Uint8Array(frame.length);
    const sg = new SgList(1);
    sg.push(out, 0, out.length);
    if (frameCopyTo(frame, 0, sg, 0, frame.length) !== frame.length) throw new Error('short copy');
    this.frames.push(out);
    return true;
  }
  flush(): void {}
  /** "dst<src" of received frames, and clear. */
  take(): string[] {
    const r = this.frames.map((f) => `${formatMac(macKeyAt(f, 0))}<${formatMac(macKeyAt(f, 6))}`);
    this.frames = [];
    return r;
  }
}

const HDR = 12;

/** Raw Ethernet bytes: dst, src, [802.1Q tags...], ethertype, payload up to `len` total. */
export function bytesOf(dst: string, src: string, opts: { etype?: number; tags?: number[]; len?: number; payload?: number[] } = {}): Uint8Array {
  const head: number[] = [...macBytes(dst), ...macBytes(src)];
  for (const t of opts.tags ?? []) head.push(0x81, 0x00, (t >> 8) & 0xff, t & 0xff);
  const et = opts.etype ?? 0x0800;
  head.push(et >> 8, et & 0xff, ...(opts.payload ?? []));
  const len = Math.max(opts.len ?? 64, head.length);
  const b = new Uint8Array(len);
  b.set(head);
  for (let i = head.length; i < len; i++) b[i] = (i - head.length) & 0xff; // same payload whatever the tags
  return b;
}

export function macBytes(mac: string): number[] {
  return mac.split(':').map((h) => parseInt(h, 16));
}

/** A Frame over `bytes` behind a 12-byte gap, split into sg entries at `cuts` (frame offsets). */
export function frameFrom(bytes: Uint8Array, cuts: number[] = []): Frame {
  const all = new Uint8Array(HDR + bytes.length);
  all.set(bytes, HDR);
  const sg = new SgList(cuts.length + 1);
  let at = 0;
  for (const c of [...cuts.map((x) => HDR + x), all.length]) {
    sg.push(all.subarray(at, c), 0, c - at);
    at = c;
  }
  const f = new Frame(sg);
  f.offset = HDR;
  f.length = bytes.length;
  return f;
}

export function setup(n: number, opts: SwitchOptions = {}): { sw: Switch; ports: CopyPort[] } {
  const sw = new Switch('sw0', opts);
  const ports = Array.from({ length: n }, (_, i) => new CopyPort(`vm${i + 1}.net0`));
  for (const p of ports) sw.addPort(p);
  return { sw, ports };
}

/** ARP over Ethernet/IPv4: op, sha, spa, tha, tpa. */
export function arpPayload(op: number, sha: string, spa: string, tha: string, tpa: string): number[] {
  const ip = (a: string) => a.split('.').map(Number);
  return [0, 1, 0x08, 0x00, 6, 4, 0, op, ...macBytes(sha), ...ip(spa), ...macBytes(tha), ...ip(tpa)];
}

export const MA = '02:00:00:00:00:0a';
export const MB = '02:00:00:00:00:0b';
export const MC = '02:00:00:00:00:0c';
export const MD = '02:00:00:00:00:0d';
export const BCAST = 'ff:ff:ff:ff:ff:ff';
export const key = parseMac;
