/**
 * TCP/IP test frames for the offload tests and a reference Internet checksum written independently of
 * src/net/offload.ts (a plain sum of 16-bit words over an array).
 */
/** Reference: complement of the ones'-complement sum of the bytes (zero-padded to even length). */
export function refSum(bytes: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) s += (bytes[i] << 8) + (i + 1 < bytes.length ? bytes[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
export const refCsum = (bytes: ArrayLike<number>): number => ~refSum(bytes) & 0xffff;
export const u16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
export const u32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

export interface Built {
  frame: Uint8Array;
  l3: number;
  l4: number;
  hdrs: number;
  csumStart: number;
}

/** Ethernet (+ optional 802.1Q) + IPv4/IPv6 + TCP with 12 bytes of options + payload; TCP checksum field = pseudo sum. */
export function tcpFrame(v6: boolean, payloadLen: number, o: { seq?: number; flags?: number; id?: number; vlan?: boolean; l4proto?: number } = {}): Built {
  const l3 = o.vlan ? 18 : 14;
  const ipLen = v6 ? 40 : 20;
  const l4 = l3 + ipLen;
  const hdrs = l4 + 32;
  const f = new Uint8Array(hdrs + payloadLen);
  f.set([0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1], 0);
  if (o.vlan) f.set([0x81, 0x00, 0x00, 0x0a], 12);
  f.set(v6 ? [0x86, 0xdd] : [0x08, 0x00], l3 - 2);
  const proto = o.l4proto ?? 6;
  if (!v6) {
    f.set([0x45, 0, (f.length - l3) >> 8, (f.length - l3) & 0xff, (o.id ?? 0x1234) >> 8, (o.id ?? 0x1234) & 0xff, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2], l3);
    const c = refCsum(f.subarray(l3, l3 + 20));
    f[l3 + 10] = c >> 8;
    f[l3 + 11] = c & 0xff;
  } else {
    const pl = f.length - l4;
    f.set([0x60, 0, 0, 0, pl >> 8, pl & 0xff, proto, 64], l3);
    for (let i = 0; i < 16; i++) {
      f[l3 + 8 + i] = i === 0 ? 0xfd : i === 15 ? 1 : 0;
      f[l3 + 24 + i] = i === 0 ? 0xfd : i === 15 ? 2 : 0;
    }
  }
  const seq = o.seq ?? 1000;
  f.set([0x9c, 0x40, 0x00, 0x50, seq >>> 24, (seq >>> 16) & 0xff, (seq >>> 8) & 0xff, seq & 0xff, 0, 0, 0, 1, 0x80, o.flags ?? 0x10, 0xff, 0xff, 0, 0, 0, 0], l4);
  f.set([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], l4 + 20); // NOP NOP timestamps
  for (let i = hdrs; i < f.length; i++) f[i] = (i * 7 + (i >> 8)) & 0xff;
  // Partial checksum as Linux leaves it: the folded pseudo-header sum, not complemented.
  const ps = refSum(pseudo(f, v6, l3, f.length - l4));
  f[l4 + 16] = ps >> 8;
  f[l4 + 17] = ps & 0xff;
  return { frame: f, l3, l4, hdrs, csumStart: l4 };
}

export function pseudo(f: Uint8Array, v6: boolean, l3: number, l4Len: number): number[] {
  if (!v6) return [...f.subarray(l3 + 12, l3 + 20), 0, 6, l4Len >> 8, l4Len & 0xff];
  return [...f.subarray(l3 + 8, l3 + 40), 0, 0, l4Len >> 8, l4Len & 0xff, 0, 0, 0, 6];
}

/** The segment's TCP checksum verifies over pseudo-header + TCP segment (sum = 0xffff). */
export function tcpVerifies(seg: Uint8Array, v6: boolean, l3: number, l4: number): boolean {
  return refSum([...pseudo(seg, v6, l3, seg.length - l4), ...seg.subarray(l4)]) === 0xffff;
}

